"""Random bits and Gaussian noise as plain elementwise arithmetic, so that XLA fuses them.

JAX's default PRNG, Threefry-2x32 (Salmon, Moraes, Dror, Shaw, 2011, with 20 rounds), lowers on
CPU to a loop of five iterations over whole arrays: every iteration reads and writes the full
state, which made the Gaussian noise of OGM-GE cost several optimizer updates. This module gives
two key implementations whose bits are elementwise functions of the element's index, which XLA
fuses into the consumer of the bits (for OGM-GE, the noisy gradient feeding the optimizer), so
the bits never reach memory:

- :data:`FUSED_THREEFRY`: JAX's threefry keys (seed, split and fold-in are JAX's own) whose
  ``random_bits`` are bit for bit those of JAX's threefry under ``jax_threefry_partitionable``
  (the default), Threefry-2x32 written out round by round (:func:`threefry2x32`);
  ``jax.random.normal(jax.random.key(seed, impl=FUSED_THREEFRY), shape)`` draws the same numbers
  as with the default implementation, faster wherever JAX would run the loop.
- :data:`COUNTER_HASH`: the same threefry keys (so split and fold-in stay Threefry's), but the
  32-bit word of element ``i`` is a keyed hash ``h(k1 ^ h(k0 ^ i))`` (:func:`hash32`) with ``h``
  the 32-bit finaliser of MurmurHash3 (Appleby, 2011): a bijection of the word with full
  avalanche, ten integer operations per application instead of Threefry's hundred-odd. It is a
  counter-based generator (a hash of key and counter, as Salmon et al. propose) without
  Threefry's cryptographic margin, good for noise, not for anything adversarial; its statistics
  (mean, spread, Gaussian shape of :func:`normal`, independence across elements, steps and
  leaves) are checked in the tests.

:func:`normal` draws standard normals by the Box-Muller transform (Box and Muller, 1958) from a
single 32-bit word per normal: with ``u`` uniform in (0, 1) and ``phi`` uniform on
[0, pi/2), independent, and a random sign ``s``,

    z = s sqrt(-2 log u) cos(phi)  ~  N(0, 1),

because ``cos`` of an angle uniform on [0, 2 pi) has the law of ``s cos(phi)``. The word's top
20 bits give ``u`` (centred cells, ``u >= 2^-21``), the next 11 bits ``phi`` (centred cells) and
the last bit ``s``. ``log`` is computed from the float's exponent and a degree-7 polynomial of
its mantissa (relative error below 3e-7), ``cos`` by its Taylor polynomial to degree 10 (error
below 5e-7 on [0, pi/2)): XLA's CPU ``log`` and ``cos`` cost several times the rest of the
noise. The draws are a discretisation of N(0, 1) at that resolution: ``|z| <= 5.40`` (the
normal's mass beyond is 7e-8) and every ``z`` lies within 3e-6 of the float64 transform of its
cell centres (:func:`box_muller`). JAX's ``jax.random.normal`` maps one uniform through
``erf_inv`` instead, which on CPU costs more than the random bits themselves.

References:
  Salmon, Moraes, Dror, Shaw. Parallel Random Numbers: As Easy as 1, 2, 3. SC 2011.
  Appleby. MurmurHash3 (2011), the ``fmix32`` finaliser.
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
# log(1 + f) / f on [-1/3, 1/3): least squares on 4000 Chebyshev nodes, rounded to float32
# (relative error of f times it below 2e-7)
_LOG1P_OVER_F = (
    0.9999998211860657,
    -0.4999993145465851,
    0.3333798944950104,
    -0.25008025765419006,
    0.1979503035545349,
    -0.16412799060344696,
    0.1711122691631317,
    -0.15403155982494354,
)
_TWO_THIRDS = 0x3F2AAAAB  # float32 bits of 2/3
U_BITS, PHI_BITS = 20, 11
"""Bits of a 32-bit word that :func:`box_muller` gives the radius's uniform and the angle."""


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


def _fmix32(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finaliser: a bijection of uint32 with full avalanche."""
    x = x ^ (x >> jnp.uint32(16))
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> jnp.uint32(13))
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> jnp.uint32(16))


def hash32(k0: jax.Array, k1: jax.Array, x: jax.Array) -> jax.Array:
    """The keyed counter hash of :data:`COUNTER_HASH`: ``fmix32(k1 ^ fmix32(k0 ^ x))`` of the
    uint32 counters ``x`` under the key ``(k0, k1)`` (uint32 scalars)."""
    return _fmix32(k1 ^ _fmix32(k0 ^ x))


def _counters(shape: tuple[int, ...], count: int = 1) -> jax.Array:
    size = math.prod(shape)
    if count * size >= 2**32:
        raise ValueError(f"a key draws fewer than 2**32 words at once; got shape {shape}.")
    return lax.iota(jnp.uint32, size).reshape(shape)


def _fused_threefry_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    lo = _counters(shape)
    hi, lo = threefry2x32(key[0], key[1], jnp.zeros_like(lo), lo)
    dtype = _UINT[bit_width]
    if bit_width == 64:
        return (hi.astype(dtype) << dtype(32)) | lo.astype(dtype)
    return (hi ^ lo).astype(dtype)


def _hash_bits(key: jax.Array, bit_width: int, shape: tuple[int, ...]) -> jax.Array:
    dtype = _UINT[bit_width]
    if bit_width == 64:  # words i and size + i
        i = _counters(shape, 2)
        hi = hash32(key[0], key[1], i)
        lo = hash32(key[0], key[1], i + jnp.uint32(math.prod(shape)))
        return (hi.astype(dtype) << dtype(32)) | lo.astype(dtype)
    w = hash32(key[0], key[1], _counters(shape))
    return (w >> jnp.uint32(32 - bit_width)).astype(dtype)  # the top bits


_THREEFRY = jax.extend.random.threefry_prng_impl
FUSED_THREEFRY = jax.extend.random.define_prng_impl(
    key_shape=_THREEFRY.key_shape,
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_fused_threefry_bits,
    fold_in=_THREEFRY.fold_in,
    name="fused_threefry",
    tag="fty",
)
"""``jax.random`` key implementation: JAX's threefry keys, bits by :func:`threefry2x32` unrolled
(module docstring); pass it as ``impl=`` to ``jax.random.key`` or ``jax.random.wrap_key_data``."""

COUNTER_HASH = jax.extend.random.define_prng_impl(
    key_shape=_THREEFRY.key_shape,
    seed=_THREEFRY.seed,
    split=_THREEFRY.split,
    random_bits=_hash_bits,
    fold_in=_THREEFRY.fold_in,
    name="counter_hash",
    tag="chs",
)
"""``jax.random`` key implementation: JAX's threefry keys, the word of element ``i`` by
:func:`hash32` (module docstring)."""


def _log(x: jax.Array) -> jax.Array:
    """Natural log of positive normal float32 ``x``: ``x = 2^e (1 + f)`` with ``1 + f`` in
    [2/3, 4/3) (the split of musl's ``logf``), then ``e log 2 + f q(f)`` with ``q`` a degree-7
    polynomial; relative error below 3e-7 (float32 rounding included)."""
    t = lax.bitcast_convert_type(x, jnp.int32) - _TWO_THIRDS
    e = lax.shift_right_arithmetic(t, jnp.int32(23))
    f = lax.bitcast_convert_type((t & 0x7FFFFF) + _TWO_THIRDS, jnp.float32) - 1.0
    q = jnp.float32(_LOG1P_OVER_F[-1])
    for c in _LOG1P_OVER_F[-2::-1]:
        q = q * f + jnp.float32(c)
    return e.astype(jnp.float32) * math.log(2) + f * q


def box_muller(w: jax.Array) -> jax.Array:
    """Standard normals (float32) from a uint32 array of independent uniform words, one normal
    per word, by the Box-Muller transform with a random sign (module docstring)."""
    one = jnp.uint32(1)
    k = (w >> jnp.uint32(32 - U_BITS)).astype(jnp.int32).astype(jnp.float32)
    u = (k + 0.5) * 2.0**-U_BITS  # in (0, 1), exact in float32
    r = jnp.sqrt(-2.0 * _log(u))
    j = ((w >> one) & jnp.uint32(2**PHI_BITS - 1)).astype(jnp.int32).astype(jnp.float32)
    x = (j + 0.5) * (math.pi / 2 * 2.0**-PHI_BITS)  # centred cells of [0, pi/2)
    x2 = x * x
    c = 1 + x2 * (-1 / 2 + x2 * (1 / 24 + x2 * (-1 / 720 + x2 * (1 / 40320 - x2 / 3628800))))
    z = lax.bitcast_convert_type(r * c, jnp.uint32) ^ (w << jnp.uint32(31))  # sign from bit 0
    return lax.bitcast_convert_type(z, jnp.float32)


def normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """Standard normal draws of ``shape`` by :func:`box_muller` of the key's 32-bit words
    (``jax.random.bits(key, shape, jnp.uint32)``; fused into the consumer for
    :data:`COUNTER_HASH` and :data:`FUSED_THREEFRY` keys)."""
    return box_muller(jax.random.bits(key, tuple(shape), jnp.uint32)).astype(dtype)


__all__ = ["COUNTER_HASH", "FUSED_THREEFRY", "box_muller", "hash32", "normal", "threefry2x32"]
