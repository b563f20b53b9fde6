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

from redundax.transforms import discrepancy_coefficients, ogm_ge
from redundax.transforms.prng import FUSED_THREEFRY, threefry2x32

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


def _noise_draws(rng_impl: str, steps: int = 2):
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
    tx = ogm_ge(labels, alpha=0.1, noise=True, seed=3, rng_impl=rng_impl)
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


@pytest.mark.parametrize("rng_impl", ["fused_threefry", "rbg"])
def test_generalisation_enhancement_noise_statistics(rng_impl):
    """GE noise is N(0, std(g)^2) per leaf, fresh every step and independent across leaves.

    Tolerances are 4.5 standard errors of each statistic under that null (two-sided false-alarm
    rate about 7e-6 per check) with n = 40 000 draws per leaf: the sample mean has standard
    error sigma / sqrt(n) (0.5 % of sigma), the sample standard deviation sigma / sqrt(2 n)
    (0.35 % relative), a correlation coefficient of independent samples 1 / sqrt(n) (0.005),
    and the fraction within one sigma sqrt(p (1 - p) / n) with p = 0.6827 (0.0023).
    """
    grads, draws = _noise_draws(rng_impl)
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


def test_fused_threefry_ogm_ge_equals_threefry_ogm_ge():
    """The default key implementation changes the speed, not the draws."""
    rng = np.random.default_rng(3)
    params = _params(rng, n=50)
    outs = {}
    for impl in ("fused_threefry", "threefry2x32"):
        tx = ogm_ge(LABELS, seed=4, rng_impl=impl)
        state, seq = tx.init(params), []
        for _ in range(2):
            u, state = jax.jit(tx.update)(params, state, params, scores={"a": 0.7, "v": 0.2})
            seq.append(u)
        outs[impl] = seq
    chex.assert_trees_all_equal(outs["fused_threefry"], outs["threefry2x32"])


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
    tx = ogm_ge(LABELS)
    with pytest.raises(ValueError, match="scores"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="exactly the modality keys"):
        tx.update(params, tx.init(params), params, scores={"a": 1.0})
