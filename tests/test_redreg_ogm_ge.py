"""OGM-GE transform: Eq. 9-10 by hand, generalisation-enhancement noise statistics, schedule."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from redundax.transforms import discrepancy_coefficients, ogm_ge

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


def test_generalisation_enhancement_noise_matches_gradient_std():
    rng = np.random.default_rng(1)
    params = _params(rng, n=20000)
    g = jax.tree.map(lambda x: 0.37 * x + 0.1, params)
    tx = ogm_ge(LABELS, alpha=0.1, noise=True, seed=3)
    state = tx.init(params)
    scores = {"a": 0.8, "v": 0.4}
    k = discrepancy_coefficients(jnp.array([0.8, 0.4]), 0.1)[1]
    out1, state = tx.update(g, state, params, scores=scores)
    out2, state = tx.update(g, state, params, scores=scores)
    for i, m in enumerate(("a", "v")):
        gm = np.asarray(g[m], np.float64)
        noise = np.asarray(out1[m], np.float64) - float(k[i]) * gm
        assert abs(noise.mean()) < 5 * gm.std(ddof=1) / math.sqrt(noise.size)
        assert noise.std() == pytest.approx(gm.std(ddof=1), rel=0.03)
        # a fresh draw every step
        noise2 = np.asarray(out2[m], np.float64) - float(k[i]) * gm
        assert abs(np.corrcoef(noise.ravel(), noise2.ravel())[0, 1]) < 0.05
    chex.assert_trees_all_equal(out1["head"], g["head"])


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
    tx = ogm_ge(LABELS)
    with pytest.raises(ValueError, match="scores"):
        tx.update(params, tx.init(params), params)
    with pytest.raises(ValueError, match="exactly the modality keys"):
        tx.update(params, tx.init(params), params, scores={"a": 1.0})
