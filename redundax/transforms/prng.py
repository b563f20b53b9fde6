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

:func:`normal` draws standard normals by the Box-Muller transform (Box and Muller, 1958): from
two independent uniforms ``u`` in (0, 1] and ``a`` in [0, 1),

    z = sqrt(-2 log u) cos(2 pi a)  ~  N(0, 1),

one normal per Threefry-2x32 call, whose two output words give ``u`` and ``a``. JAX's
``jax.random.normal`` maps one uniform through ``erf_inv`` instead, which on CPU costs more
than the random bits themselves, and XLA's CPU ``cos`` is slower still; here the cosine of the
uniform angle is taken exactly where it is cheap: the top two bits of ``a``'s word pick the
quadrant ``q`` and the remaining 24 bits an angle ``x`` uniform on [-pi/4, pi/4), so that
``cos(q pi/2 + x)`` is one of ``cos x, -sin x, -cos x, sin x``, each a Taylor polynomial
(truncation error below 2e-9 on that interval, under float32 rounding). ``u`` has 31 bits, so
``|z|`` reaches 6.66 (the normal's mass beyond is 3e-11).

References:
  Salmon, Moraes, Dror, Shaw. Parallel Random Numbers: As Easy as 1, 2, 3. SC 2011.
  Box, Muller. A Note on the Generation of Random Normal Deviates. Ann. Math. Statist. 29, 1958.
"""

from __future__ import annotations

import math
from typing import Any

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


def box_muller(w0: jax.Array, w1: jax.Array) -> jax.Array:
    """Standard normals (float32) from two uint32 arrays of independent uniform words, one
    normal per pair of words, by the Box-Muller transform (module docstring)."""
    u = ((w0 >> jnp.uint32(1)).astype(jnp.int32).astype(jnp.float32) + 0.5) * (2.0**-31)
    r = jnp.sqrt(-2.0 * jnp.log(u))  # u in (0, 1]: 2^-32 <= u
    q = w1 >> jnp.uint32(30)  # quadrant of the angle
    f = ((w1 >> jnp.uint32(6)) & jnp.uint32(0xFFFFFF)).astype(jnp.int32).astype(jnp.float32)
    x = (f * (2.0**-24) - (0.5 - 2.0**-25)) * (math.pi / 2)  # centred cells of [-pi/4, pi/4)
    x2 = x * x
    sin = x * (1 + x2 * (-1 / 6 + x2 * (1 / 120 + x2 * (-1 / 5040 + x2 / 362880))))
    cos = 1 + x2 * (-1 / 2 + x2 * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 - x2 / 3628800))))
    c = jnp.where((q & jnp.uint32(1)) == 0, cos, sin)  # cos(q pi/2 + x) up to sign
    return r * jnp.where((q == 1) | (q == 2), -c, c)


def _is_threefry(key: jax.Array) -> bool:
    spec = jax.random.key_impl(key)
    return spec == FUSED_THREEFRY or spec == "threefry2x32"


def normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Standard normal draws of ``shape`` by :func:`box_muller`.

    For a Threefry key (:data:`FUSED_THREEFRY` or JAX's ``"threefry2x32"``; the same draws for
    both) element ``i`` comes from the two words of ``threefry2x32(key, (0, i))``, as arithmetic
    that XLA fuses into the consumer; for any other key implementation (``"rbg"``, ...) from
    ``jax.random.bits(key, (2, *shape))``.
    """
    shape = tuple(shape)
    size = math.prod(shape)
    if size >= 2**32:
        raise ValueError(f"normal draws fewer than 2**32 values at once; got shape {shape}.")
    if _is_threefry(key):
        k = jax.random.key_data(key)
        lo = lax.iota(jnp.uint32, size).reshape(shape)
        w0, w1 = threefry2x32(k[0], k[1], jnp.zeros_like(lo), lo)
    else:
        w0, w1 = jax.random.bits(key, (2, *shape), jnp.uint32)
    return box_muller(w0, w1).astype(dtype)


__all__ = ["FUSED_THREEFRY", "box_muller", "normal", "threefry2x32"]
