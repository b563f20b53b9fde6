"""OGM-GE transform: Eq. 9-10 by hand, generalisation-enhancement noise statistics, schedule."""

from __future__ import annotations

import math

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from redundax.transforms import discrepancy_coefficients, ogm_ge
from redundax.transforms.prng import (
    COUNTER_HASH,
    FUSED_THREEFRY,
    box_muller,
    hash32,
    normal,
    threefry2x32,
)

LABELS = {"a": "a", "v": "v", "head": None}


def _params(rng, n=64):
    return {
        "a": jnp.asarray(rng.normal(size=(n, 4)), jnp.float32),
        "v": jnp.asarray(rng.normal(size=(n, 2)), jnp.float32),
        "head": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
    }


def test_coefficients_by_hand():
    rho, k = discrepancy_coefficients(jnp.array([0.6, 0.3]), alpha=0.1)
    np.testing.assert_allclose(rho, [2.0, 0.5], rtol=1e-6)
    np.testing.assert_allclose(k, [1 - math.tanh(0.2), 1.0], rtol=1e-6)
    # three modalities: rho_m = s_m / mean of the others
    rho, k = discrepancy_coefficients(jnp.array([0.6, 0.2, 0.4]), alpha=0.5)
    np.testing.assert_allclose(rho, [2.0, 0.4, 1.0], rtol=1e-6)
    np.testing.assert_allclose(k, [1 - math.tanh(1.0), 1.0, 1.0], rtol=1e-6)  # rho = 1 is not > 1


def test_plain_ogm_scales_only_the_stronger_modality():
    rng = np.random.default_rng(0)
    params, g = _params(rng), _params(rng)
    tx = ogm_ge(LABELS, alpha=0.3, noise=False)
    out, state = tx.update(g, tx.init(params), params, scores={"a": 0.2, "v": 0.5})
    k_v = 1 - math.tanh(0.3 * 2.5)
    np.testing.assert_allclose(out["v"], k_v * np.asarray(g["v"]), rtol=1e-6)
    chex.assert_trees_all_equal(out["a"], g["a"])
    chex.assert_trees_all_equal(out["head"], g["head"])
    assert float(state.coeff["v"]) == pytest.approx(k_v, rel=1e-6)
    assert float(state.ratio["a"]) == pytest.approx(0.4, rel=1e-6)


def _noise_draws(rng_impl: str | None, normal: str, steps: int = 2):
    """GE noise ``out - k g`` of ``steps`` updates on four encoder leaves: two of one modality
    with equal gradients and shapes (a shared key would make their noise equal), one of the
    other modality, and a matrix; each leaf's gradient has its own mean and spread."""
    rng = np.random.default_rng(1)
    n = 40_000
    g0 = rng.normal(size=(n,))
    grads = {
        "a1": jnp.asarray(0.37 * g0 + 0.1, jnp.float32),
        "a2": jnp.asarray(0.37 * g0 + 0.1, jnp.float32),
        "v": jnp.asarray(2.5 * rng.normal(size=(n,)) - 1.0, jnp.float32),
        "vm": jnp.asarray(0.01 * rng.normal(size=(200, n // 200)), jnp.float32),
        "head": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
    }
    labels = {"a1": "a", "a2": "a", "v": "v", "vm": "v", "head": None}
    tx = ogm_ge(labels, alpha=0.1, noise=True, seed=3, rng_impl=rng_impl, normal=normal)
    update = jax.jit(tx.update)
    state = tx.init(grads)
    scores = {"a": 0.8, "v": 0.4}
    k = {"a": 1 - math.tanh(0.1 * 0.8 / 0.4), "v": 1.0}  # Eq. 10: rho_a = 2, rho_v = 0.5
    draws = []
    for _ in range(steps):
        out, state = update(grads, state, grads, scores=scores)
        chex.assert_trees_all_equal(out["head"], grads["head"])
        draws.append(
            {
                name: (
                    np.asarray(out[name], np.float64) - k[m] * np.asarray(grads[name], np.float64)
                )
                for name, m in labels.items()
                if m is not None
            }
        )
    return grads, draws


@pytest.mark.parametrize(
    "rng_impl,normal",
    [
        (None, "box_muller"),  # the default: counter hash
        ("fused_threefry", "box_muller"),
        ("rbg", "box_muller"),
        (None, "inverse_cdf"),  # Threefry
    ],
)
def test_generalisation_enhancement_noise_statistics(rng_impl, normal):
    """GE noise is N(0, std(g)^2) per leaf, fresh every step and independent across leaves.

    Tolerances are 4.5 standard errors of each statistic under that null (two-sided false-alarm
    rate about 7e-6 per check) with n = 40 000 draws per leaf: the sample mean has standard
    error sigma / sqrt(n) (0.5 % of sigma), the sample standard deviation sigma / sqrt(2 n)
    (0.35 % relative), a correlation coefficient of independent samples 1 / sqrt(n) (0.005),
    and the fraction within one sigma sqrt(p (1 - p) / n) with p = 0.6827 (0.0023).
    """
    grads, draws = _noise_draws(rng_impl, normal)
    z = 4.5
    for step in draws:
        for name, noise in step.items():
            n = noise.size
            sigma = np.asarray(grads[name], np.float64).std(ddof=1) + 1e-8
            assert abs(noise.mean()) < z * sigma / math.sqrt(n), name
            assert abs(noise.std(ddof=1) / sigma - 1) < z / math.sqrt(2 * n), name
            p1 = np.mean(np.abs(noise) < sigma)
            assert abs(p1 - 0.682689) < z * math.sqrt(0.682689 * 0.317311 / n), name
            flat = noise.ravel()  # neighbouring draws of one leaf are uncorrelated
            assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < z / math.sqrt(n - 1), name

    def corr(x, y):
        return abs(np.corrcoef(x.ravel(), y.ravel())[0, 1])

    first, second = draws
    for name in first:  # across steps
        assert corr(first[name], second[name]) < z / math.sqrt(first[name].size), name
    # across leaves: equal gradients and shapes in one modality, and across modalities
    assert corr(first["a1"], first["a2"]) < z / math.sqrt(first["a1"].size)
    assert corr(first["a1"], first["v"]) < z / math.sqrt(first["a1"].size)
    assert corr(first["v"], first["vm"]) < z / math.sqrt(first["v"].size)


def test_fused_threefry_draws_equal_jax_threefry():
    """The unrolled Threefry-2x32 equals JAX's primitive word for word, and its key
    implementation gives JAX's threefry draws (bits of several widths, normals, odd shapes)."""
    k0, k1 = jnp.uint32(0x13198A2E), jnp.uint32(0x03707344)
    x0 = jnp.arange(37, dtype=jnp.uint32) * jnp.uint32(2654435761)
    x1 = jnp.arange(37, dtype=jnp.uint32) ^ jnp.uint32(0xDEADBEEF)
    want = jax.extend.random.threefry2x32_p.bind(k0, k1, x0, x1)
    got = threefry2x32(k0, k1, x0, x1)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    for seed, shape in ((0, (5,)), (7, (3, 4, 5)), (123, (2, 1, 9))):
        ref = jax.random.fold_in(jax.random.key(seed), 11)
        fused = jax.random.fold_in(jax.random.key(seed, impl=FUSED_THREEFRY), 11)
        for dtype in (jnp.uint8, jnp.uint32, jnp.uint64):
            if dtype == jnp.uint64 and not jax.config.jax_enable_x64:
                continue
            np.testing.assert_array_equal(
                np.asarray(jax.random.bits(fused, shape, dtype)),
                np.asarray(jax.random.bits(ref, shape, dtype)),
            )
        # the same uniforms; the Gaussian transform may round differently once fused (1 ulp)
        normal = jax.jit(lambda k, s=shape: jax.random.normal(k, s))
        np.testing.assert_allclose(normal(fused), normal(ref), rtol=3e-7, atol=1e-7)


def _box_muller_reference(w: np.ndarray) -> np.ndarray:
    """Box-Muller in float64 with NumPy's log and cosine: ``u`` from the top 20 bits of the
    word, the angle on [0, pi/2) from the next 11, the sign from the last."""
    w = w.astype(np.int64)
    u = ((w >> 12) + 0.5) * 2.0**-20
    phi = (((w >> 1) & 0x7FF) + 0.5) * (np.pi / 2 * 2.0**-11)
    return np.where(w & 1, -1.0, 1.0) * np.sqrt(-2 * np.log(u)) * np.cos(phi)


def _fmix32_reference(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(mult)) & np.uint64(0xFFFFFFFF)
    return x ^ (x >> np.uint64(16))


def test_box_muller_equals_float64_reference():
    """The polynomial log and cosine and the word-to-cell maps equal a float64 transcription
    with NumPy's log and cosine, to float32 rounding: 3e-6 absolute (|z| <= 5.40, the log's
    polynomial is accurate to 1e-6 and the cosine's to 5e-7); every word maps to its own cell
    (edge words included). For :data:`COUNTER_HASH` keys element ``i`` uses the word
    ``fmix32(k1 ^ fmix32(k0 ^ i))`` (MurmurHash3's finaliser, written in NumPy here)."""
    rng = np.random.default_rng(5)
    w = rng.integers(0, 2**32, size=200_000, dtype=np.uint32)
    w[:6] = [0, 1, 2**32 - 1, 2**31, 2**12 - 1, 2**32 - 2**12]  # edge words
    got = np.asarray(jax.jit(box_muller)(jnp.asarray(w)), np.float64)
    want = _box_muller_reference(w)
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-6)
    np.testing.assert_array_equal(np.signbit(got), (w & 1).astype(bool))
    assert np.max(np.abs(got)) < 5.41
    key = jax.random.fold_in(jax.random.key(9, impl=COUNTER_HASH), 2)
    k0, k1 = np.asarray(jax.random.key_data(key), np.uint64)
    i = np.arange(3 * 5 * 7, dtype=np.uint64)
    words = _fmix32_reference(k1 ^ _fmix32_reference(k0 ^ i))
    np.testing.assert_array_equal(
        np.asarray(hash32(jnp.uint32(k0), jnp.uint32(k1), jnp.asarray(i, jnp.uint32))), words
    )
    np.testing.assert_array_equal(np.asarray(jax.random.bits(key, (3, 5, 7))).ravel(), words)
    got = jax.jit(lambda k: normal(k, (3, 5, 7)))(key)
    assert got.shape == (3, 5, 7) and got.dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(got, np.float64).ravel(), _box_muller_reference(words), atol=3e-6
    )


def test_counter_hash_bits_are_uniform_and_independent():
    """2^20 words of one :data:`COUNTER_HASH` key and of keys one fold-in apart. Thresholds are
    4.5 standard errors (two-sided false alarm about 7e-6 each) or the 0.001 critical value:
    every one of the 32 bits is set with frequency 1/2 (standard error 0.5 / sqrt(n)); the
    top-4-bit values of consecutive counters (i, i + 1) fill the 16 x 16 table uniformly
    (chi-square with 255 degrees of freedom); the uniforms of consecutive counters, of keys
    folded with consecutive leaf indices and of consecutive steps' keys are uncorrelated
    (standard error 1 / sqrt(n))."""
    n = 2**20
    z = 4.5
    key = jax.random.key(21, impl=COUNTER_HASH)
    step_key, next_key = jax.random.split(key)
    w = np.asarray(jax.random.bits(jax.random.fold_in(step_key, 0), (n,)), np.uint64)
    bits = (w[:, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1)
    assert np.max(np.abs(bits.mean(axis=0) - 0.5)) < z * 0.5 / math.sqrt(n)
    top = (w >> np.uint64(28)).astype(np.int64)
    table = np.bincount(16 * top[:-1] + top[1:], minlength=256)
    chi2 = np.sum((table - (n - 1) / 256) ** 2 / ((n - 1) / 256))
    assert chi2 < scipy.stats.chi2.ppf(0.999, 255)

    def uniform(k):
        return np.asarray(jax.random.bits(k, (n,)), np.float64) / 2**32

    u = uniform(jax.random.fold_in(step_key, 0))
    others = [
        u[1:],
        uniform(jax.random.fold_in(step_key, 1)),  # the next leaf
        uniform(jax.random.fold_in(jax.random.split(next_key)[1], 0)),  # the next step
    ]
    for v in others:
        assert abs(np.corrcoef(u[: v.size], v)[0, 1]) < z / math.sqrt(n)


@pytest.mark.parametrize("impl", [COUNTER_HASH, FUSED_THREEFRY, "rbg"])
def test_box_muller_matches_the_standard_normal_cdf(impl):
    """2^20 draws: the Kolmogorov-Smirnov statistic against Phi is below its 0.001-level
    critical value, and the shares beyond 2, 3 and 4 standard deviations are within 4.5
    standard errors sqrt(p (1 - p) / n) of 2 (1 - Phi(t)) (two-sided false alarm about 7e-6
    each)."""
    n = 2**20
    z = np.asarray(normal(jax.random.key(11, impl=impl), (n,)), np.float64)
    assert scipy.stats.kstest(z, "norm").statistic < scipy.stats.kstwo.ppf(0.999, n)
    for t in (2.0, 3.0, 4.0):
        p = 2 * scipy.stats.norm.sf(t)
        share = np.mean(np.abs(z) > t)
        assert abs(share - p) < 4.5 * math.sqrt(p * (1 - p) / n), t
    assert np.all(np.isfinite(z)) and np.max(np.abs(z)) < 5.41  # u >= 2^-21


def test_inverse_cdf_noise_is_the_earlier_versions_draws():
    """``normal="inverse_cdf"`` with the default ``rng_impl`` draws, for leaf ``i`` at step
    ``t``, ``jax.random.normal`` of JAX's own threefry key: the state's key split once per
    step, the second half folded with ``i`` (the draws the published tables used)."""
    params = _params(np.random.default_rng(6))
    tx = ogm_ge(LABELS, seed=8, normal="inverse_cdf", alpha=0.0)  # k = 1: out = g + std * z
    state = tx.init(params)
    key = jax.random.key(8)
    for _ in range(2):
        out, state = jax.jit(tx.update)(params, state, params, scores={"a": 0.7, "v": 0.2})
        key, step_key = jax.random.split(key)
        for i, name in enumerate(sorted(params)):  # leaf order of the dict
            g = params[name]
            if name == "head":
                chex.assert_trees_all_equal(out[name], g)
                continue
            std = float(np.std(np.asarray(g, np.float64), ddof=1)) + 1e-8
            want = np.asarray(g) + std * np.asarray(
                jax.random.normal(jax.random.fold_in(step_key, i), g.shape)
            )
            np.testing.assert_allclose(np.asarray(out[name]), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normal_kind", ["box_muller", "inverse_cdf"])
def test_fused_threefry_ogm_ge_equals_threefry_ogm_ge(normal_kind):
    """The fused key implementation changes the speed, not the bits: the same updates, except
    that the Box-Muller polynomials may round differently once fused with the bits (1 ulp)."""
    rng = np.random.default_rng(3)
    params = _params(rng, n=50)
    outs = {}
    for impl in ("fused_threefry", "threefry2x32"):
        tx = ogm_ge(LABELS, seed=4, rng_impl=impl, normal=normal_kind)
        state, seq = tx.init(params), []
        for _ in range(2):
            u, state = jax.jit(tx.update)(params, state, params, scores={"a": 0.7, "v": 0.2})
            seq.append(u)
        outs[impl] = seq
    if normal_kind == "inverse_cdf":
        chex.assert_trees_all_equal(outs["fused_threefry"], outs["threefry2x32"])
    else:
        chex.assert_trees_all_close(
            outs["fused_threefry"], outs["threefry2x32"], rtol=1e-6, atol=1e-6
        )


def test_generalisation_enhancement_noise_is_reproducible_from_the_seed():
    params = _params(np.random.default_rng(0))
    outs = []
    for seed in (5, 5, 6):
        tx = ogm_ge(LABELS, seed=seed)
        outs.append(tx.update(params, tx.init(params), params, scores={"a": 0.8, "v": 0.4})[0])
    chex.assert_trees_all_equal(outs[0], outs[1])
    assert not np.array_equal(np.asarray(outs[0]["a"]), np.asarray(outs[2]["a"]))


def test_modulation_window_and_min_ndim():
    rng = np.random.default_rng(2)
    params, g = _params(rng), _params(rng)
    tx = ogm_ge(LABELS, alpha=0.5, noise=False, start_step=2, end_step=3)
    state = tx.init(params)
    changed = []
    for _ in range(6):
        out, state = tx.update(g, state, params, scores={"a": 0.9, "v": 0.1})
        changed.append(not np.array_equal(np.asarray(out["a"]), np.asarray(g["a"])))
    assert changed == [False, False, True, True, False, False]
    tx = ogm_ge(LABELS, alpha=0.5, noise=True, min_ndim=4)  # the reference code's conv-only rule
    out, _ = tx.update(g, tx.init(params), params, scores={"a": 0.9, "v": 0.1})
    chex.assert_trees_all_equal(out, g)


def test_jit_equals_eager_inside_chain():
    rng = np.random.default_rng(4)
    params = _params(rng)
    grads = [_params(rng) for _ in range(3)]
    tx = optax.chain(ogm_ge(LABELS, alpha=0.2), optax.sgd(0.1, momentum=0.9))

    def run(update):
        state, outs = tx.init(params), []
        for t, g in enumerate(grads):
            u, state = update(g, state, params, scores={"a": 0.5 + 0.1 * t, "v": 0.3})
            outs.append(u)
        return outs

    chex.assert_trees_all_close(run(tx.update), run(jax.jit(tx.update)), rtol=1e-6, atol=1e-7)


def test_bad_arguments():
    params = _params(np.random.default_rng(0))
    with pytest.raises(ValueError, match="alpha"):
        ogm_ge(LABELS, alpha=-1.0)
    with pytest.raises(ValueError, match="end_step"):
        ogm_ge(LABELS, start_step=5, end_step=2)
    with pytest.raises(ValueError, match="rng_impl"):
        ogm_ge(LABELS, rng_impl="mersenne")
    with pytest.raises(ValueError, match="normal"):
        ogm_ge(LABELS, normal="ziggurat")
    tx = ogm_ge(LABELS)
    with pytest.raises(ValueError, match="scores"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="exactly the modality keys"):
        tx.update(params, tx.init(params), params, scores={"a": 1.0})
