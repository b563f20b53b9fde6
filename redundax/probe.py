"""Linear probe: frozen features -> standardised -> linear softmax classifier trained with optax.

The standard evaluation of self-supervised features (He et al., 2022, Sec. 4 "linear probing";
Bi, Zhu & Calhoun, 2025, Sec. 4 use its CIFAR-100 top-1 as the generalisation measure). Features are
standardised with the training split's per-unit mean and standard deviation (units with zero variance
are centred only), then a linear map ``W x + b`` is trained to minimise

    mean cross-entropy + (weight_decay / 2) ||W||_F^2

with Adam and a cosine-decayed learning rate, on the full training split per step (``batch_size``
None) or on minibatches drawn without replacement each epoch. Reported: top-1 accuracy on the test
split, a fraction in [0, 1].

Everything is a pure function of arrays, so :func:`linear_probe` runs under ``jax.jit`` and
``jax.vmap`` over a leading member axis of the features (labels and minibatch order shared), which
is how a sweep probes all its members at once.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class ProbeResult(NamedTuple):
    top1: jax.Array  # test top-1 accuracy in [0, 1]
    train_top1: jax.Array  # training top-1 accuracy in [0, 1]
    train_loss: jax.Array  # final training objective (cross-entropy + L2)


def standardise(train: jax.Array, *others: jax.Array) -> tuple[jax.Array, ...]:
    """``(x - mean) / std`` with the training split's per-unit statistics (population std).

    Units whose training standard deviation is zero (or below 1e-12 relative to the largest) are
    only centred, so constant pixels or dead units stay finite.
    """
    mean = jnp.mean(train, axis=-2, keepdims=True)
    std = jnp.std(train, axis=-2, keepdims=True)
    floor = 1e-12 * jnp.maximum(jnp.max(std, axis=-1, keepdims=True), 1e-30)
    std = jnp.where(std > floor, std, 1.0)
    return tuple((x - mean) / std for x in (train, *others))


def _loss(params, x, y, weight_decay):
    w, b = params
    ce = optax.softmax_cross_entropy_with_integer_labels(x @ w + b, y).mean()
    return ce + 0.5 * weight_decay * jnp.sum(w * w)


def _top1(params, x, y):
    w, b = params
    return jnp.mean(jnp.argmax(x @ w + b, axis=-1) == y)


def linear_probe(
    train_x: jax.Array,
    train_y: jax.Array,
    test_x: jax.Array,
    test_y: jax.Array,
    *,
    num_classes: int,
    steps: int = 1000,
    learning_rate: float = 1e-2,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    key: jax.Array | None = None,
    standardize: bool = True,
) -> ProbeResult:
    """Train a linear classifier on frozen features; return test and train top-1.

    Args:
      train_x: ``(n, d)`` training features.
      train_y: ``(n,)`` integer labels in ``[0, num_classes)``.
      test_x: ``(m, d)`` test features.
      test_y: ``(m,)`` test labels.
      num_classes: number of classes.
      steps: optimiser steps.
      learning_rate: Adam peak learning rate, cosine-decayed to 0 over ``steps``.
      weight_decay: L2 coefficient on the weights (not the bias).
      batch_size: minibatch size; None trains on the full split every step.
      key: PRNG key for the minibatch order (needed with ``batch_size``).
      standardize: standardise features with the training statistics first.

    Returns:
      :class:`ProbeResult` of scalars. Under ``jax.vmap`` over the features, one per member.
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train_x and test_x must be (n, d) with the same d; got {train_x.shape} and "
            f"{test_x.shape}."
        )
    if train_y.shape != train_x.shape[:1] or test_y.shape != test_x.shape[:1]:
        raise ValueError("train_y/test_y must hold one label per row of train_x/test_x.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    n, d = train_x.shape
    if batch_size is not None and not 0 < batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}] or be None; got {batch_size}.")
    if batch_size is not None and key is None:
        raise ValueError("linear_probe needs `key` when batch_size is set (minibatch order).")
    train_x = train_x.astype(jnp.float32)
    test_x = test_x.astype(jnp.float32)
    if standardize:
        train_x, test_x = standardise(train_x, test_x)
    tx = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    params = (jnp.zeros((d, num_classes), jnp.float32), jnp.zeros((num_classes,), jnp.float32))
    opt_state = tx.init(params)
    grad_fn = jax.grad(_loss)

    if batch_size is None:

        def step(carry, _):
            p, s = carry
            g = grad_fn(p, train_x, train_y, weight_decay)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt_state), None, length=steps)
    else:
        per_epoch = n // batch_size
        epochs = -(-steps // per_epoch)
        keys = jax.random.split(key, epochs)
        order = jax.vmap(lambda k: jax.random.permutation(k, n)[: per_epoch * batch_size])(keys)
        order = order.reshape(-1, batch_size)[:steps]

        def step(carry, idx):
            p, s = carry
            g = grad_fn(p, train_x[idx], train_y[idx], weight_decay)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        (params, _), _ = jax.lax.scan(step, (params, opt_state), order)

    return ProbeResult(
        top1=_top1(params, test_x, test_y),
        train_top1=_top1(params, train_x, train_y),
        train_loss=_loss(params, train_x, train_y, weight_decay),
    )


__all__ = ["ProbeResult", "linear_probe", "standardise"]
