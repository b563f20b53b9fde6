"""Threefry-2x32 random bits as plain elementwise arithmetic, so that XLA fuses them.

JAX's default PRNG, Threefry-2x32 (Salmon, Moraes, Dror, Shaw, 2011, with 20 rounds), lowers on
CPU to a loop of five iterations over whole arrays: every iteration reads and writes the full
state, which made the Gaussian noise of OGM-GE cost several optimizer updates. Here the same
function is written out round by round in ``jnp``; XLA fuses it with the consumer of the bits
(for OGM-GE, the noisy gradient feeding the optimizer), so the bits never reach memory.

:data:`FUSED_THREEFRY` is a ``jax.random`` key implementation with JAX's threefry keys (seed,
split and fold-in are JAX's own) whose ``random_bits`` are bit for bit those of JAX's threefry
under ``jax_threefry_partitionable`` (the default): element ``i`` of an array is
``threefry2x32(key, (hi(i), lo(i)))``, its two output words combined as JAX combines them.
``jax.random.normal(jax.random.key(seed, impl=FUSED_THREEFRY), shape)`` therefore draws the same
numbers as with the default implementation, faster wherever JAX would run the loop.

References:
  Salmon, Moraes, Dror, Shaw. Parallel Random Numbers: As Easy as 1, 2, 3. SC 2011.
"""

from __future__ import annotations

import math

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_UINT = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32, 64: jnp.uint64}


def threefry2x32(
    k0: jax.Array, k1: jax.Array, x0: jax.Array, x1: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Threefry-2x32 with 20 rounds (Salmon et al., 2011, Sec. 4) of the counter words
    ``(x0, x1)`` (uint32 arrays of one shape) under the key ``(k0, k1)`` (uint32 scalars)."""
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(_PARITY))
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def _random_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"FUSED_THREEFRY draws fewer than 2**32 values at once; got {shape}.")
    lo = lax.iota(jnp.uint32, size).reshape(shape)
    hi, lo = threefry2x32(key[0], key[1], jnp.zeros_like(lo), lo)
    dtype = _UINT[bit_width]
    if bit_width == 64:
        return (hi.astype(dtype) << dtype(32)) | lo.astype(dtype)
    return (hi ^ lo).astype(dtype)


_THREEFRY = jax.extend.random.threefry_prng_impl
FUSED_THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=_THREEFRY.key_shape,
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_random_bits,
    fold_in=_THREEFRY.fold_in,
    name="fused_threefry",
    tag="fty",
)
"""``jax.random`` key implementation: JAX's threefry keys, bits by :func:`threefry2x32` unrolled
(module docstring); pass it as ``impl=`` to ``jax.random.key`` or ``jax.random.wrap_key_data``."""

__all__ = ["FUSED_THREEFRY", "threefry2x32"]
