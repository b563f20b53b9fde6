"""Masked training: pruned weights stay exactly zero after every update.

Put `keep_pruned_zero(mask)` last in an optax chain (after the optimizer and its weight decay).
Wherever `mask` is 0 the update is `-params`, so `optax.apply_updates` lands on an exact 0.0 (x + (-x)
is exactly zero in IEEE arithmetic) whatever momentum, Adam moments or decoupled weight decay
proposed; elsewhere the update passes through unchanged. A recovery fine-tune of a pruned network
then runs through the ordinary step factory and loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class KeepPrunedZeroState(NamedTuple):
    """No state: the mask is a constant of the transform."""


def _check_mask(mask: Any, updates: Any) -> None:
    mask_leaves = jax.tree.leaves(mask, is_leaf=lambda x: x is None)
    update_leaves = jax.tree.leaves(updates)
    if len(mask_leaves) != len(update_leaves):
        raise ValueError(
            f"keep_pruned_zero: mask has {len(mask_leaves)} leaves but the parameters have "
            f"{len(update_leaves)}; build the mask with the parameters' tree structure (None "
            "leaves for unpruned tensors)"
        )
    for m, u in zip(mask_leaves, update_leaves, strict=True):
        if m is not None and jnp.shape(m) != jnp.shape(u):
            raise ValueError(
                f"keep_pruned_zero: a mask leaf has shape {jnp.shape(m)} but its parameter has shape "
                f"{jnp.shape(u)}; the mask must match each parameter's shape"
            )


def keep_pruned_zero(mask: Any) -> optax.GradientTransformation:
    """An optax transform that keeps the weights where `mask == 0` at exactly zero.

    Args:
      mask: a pytree with the parameters' structure whose leaves are 0/1 (or boolean) arrays of the
        parameter's shape, or None for tensors that are not pruned.
    """

    def init_fn(params: Any) -> KeepPrunedZeroState:
        _check_mask(mask, params)
        return KeepPrunedZeroState()

    def update_fn(updates: Any, state: KeepPrunedZeroState, params: Any = None):
        if params is None:
            raise ValueError(
                "keep_pruned_zero needs params: call tx.update(updates, state, params)"
            )

        def one(m, u, p):
            if m is None:
                return u
            return jnp.where(jnp.asarray(m).astype(bool), u, -p).astype(u.dtype)

        masked = jax.tree.map(one, mask, updates, params, is_leaf=lambda x: x is None)
        return masked, state

    return optax.GradientTransformation(init_fn, update_fn)
