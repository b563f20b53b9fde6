"""Orthogonal-complement projection of one pytree against another.

For a vector ``x`` and a direction ``g`` the orthogonal complement of ``x`` against ``g`` is

    P⊥_g(x) = x - (<x, g> / ||g||²) g,

so ``<P⊥_g(x), g> = 0`` and ``x - P⊥_g(x)`` is parallel to ``g``. RedReg (Yang et al., 2025)
applies it to the parameter drift of the dominant modality against its gradient;
the reference code does so per parameter tensor, and :func:`orthogonal_complement` also offers
the projection of a whole group of tensors treated as one flattened vector.

Where ``g`` is zero the direction is undefined and ``x`` is returned unchanged (the reference
code does the same). Inner products accumulate in ``float32`` (or wider) whatever the leaves'
dtype, and each result leaf has the dtype of its ``x`` leaf.

References:
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def _acc_dtype(*arrays: jax.Array) -> jnp.dtype:
    return jnp.result_type(jnp.float32, *(a.dtype for a in arrays))


def leaf_vdot(x: jax.Array, g: jax.Array) -> jax.Array:
    """``<x, g>`` of two arrays of one shape, accumulated in at least ``float32``."""
    dtype = _acc_dtype(x, g)
    return jnp.sum(jnp.asarray(x, dtype) * jnp.asarray(g, dtype))


def tree_vdot(x: PyTree, g: PyTree) -> jax.Array:
    """``<x, g>`` summed over every leaf of two pytrees of one structure."""
    xs, gs = jax.tree.leaves(x), jax.tree.leaves(g)
    if len(xs) != len(gs):
        raise ValueError(
            f"x and g must have the same tree structure; got {len(xs)} and {len(gs)} leaves."
        )
    if not xs:
        return jnp.zeros((), jnp.float32)
    return sum((leaf_vdot(a, b) for a, b in zip(xs, gs, strict=True)), start=jnp.zeros(()))


def _project(x: jax.Array, g: jax.Array, coef: jax.Array) -> jax.Array:
    dtype = _acc_dtype(x, g)
    out = jnp.asarray(x, dtype) - coef.astype(dtype) * jnp.asarray(g, dtype)
    return out.astype(x.dtype)


def _coefficient(dot: jax.Array, sq: jax.Array) -> jax.Array:
    """``dot / sq`` where ``sq > 0``, else 0 (the direction is undefined; nothing is removed)."""
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, dot / safe, 0.0)


def projection_coefficients(x: PyTree, g: PyTree, *, per_leaf: bool = True) -> PyTree | jax.Array:
    """The coefficients ``<x, g> / ||g||²`` of the component of ``x`` along ``g``.

    Args:
      x: the pytree to project.
      g: the direction, a pytree of the same structure and leaf shapes as ``x``.
      per_leaf: one coefficient per leaf (a pytree of scalars shaped like ``x``) if True; one
        scalar for the whole tree treated as a single flattened vector if False.

    Returns:
      The coefficients; 0 wherever ``||g||² = 0``.
    """
    _check_same_structure(x, g)
    if per_leaf:
        return jax.tree.map(lambda a, b: _coefficient(leaf_vdot(a, b), leaf_vdot(b, b)), x, g)
    return _coefficient(tree_vdot(x, g), tree_vdot(g, g))


def orthogonal_complement(x: PyTree, g: PyTree, *, per_leaf: bool = True) -> PyTree:
    """``x - (<x, g> / ||g||²) g``: the part of ``x`` orthogonal to ``g``.

    Args:
      x: the pytree to project (for RedReg, the drift ``theta - theta_anchor``).
      g: the direction (for RedReg, the gradient), same structure and leaf shapes as ``x``.
      per_leaf: project every leaf against its own ``g`` leaf (orthogonal leaf by leaf) if
        True; project the whole tree, flattened into one vector, against the flattened ``g``
        (orthogonal only in total) if False.

    Returns:
      A pytree like ``x``. Leaves (per_leaf) or trees (not per_leaf) with ``g = 0`` come back
      unchanged.
    """
    coef = projection_coefficients(x, g, per_leaf=per_leaf)
    if per_leaf:
        return jax.tree.map(_project, x, g, coef)
    return jax.tree.map(lambda a, b: _project(a, b, coef), x, g)


def _check_same_structure(x: PyTree, g: PyTree) -> None:
    sx, sg = jax.tree.structure(x), jax.tree.structure(g)
    if sx != sg:
        raise ValueError(f"x and g must have the same tree structure; got {sx} and {sg}.")
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(g), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"x and g must have leaves of equal shapes; got {jnp.shape(a)} and {jnp.shape(b)}."
            )
