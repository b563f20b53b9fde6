"""DTC, O- and S-information against float64 NumPy brute force over marginals and conditionals."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redundax.functionals as F


def _random_corr(d, seed, strength=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) * strength
    cov = a @ a.T + np.eye(d)
    s = np.sqrt(np.diag(cov))
    return cov / s[:, None] / s[None, :]


def _h(cov):
    """Differential entropy of a Gaussian with covariance `cov` (float64, explicit slogdet)."""
    k = cov.shape[0]
    if k == 0:
        return 0.0
    return 0.5 * (k * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])


def _brute(cov):
    """TC, DTC, O, S from entropies of every marginal and conditional (definitions, no shortcuts)."""
    d = cov.shape[0]
    idx = list(range(d))
    h = _h(cov)
    h_i = [_h(cov[np.ix_([i], [i])]) for i in idx]
    rest = [[j for j in idx if j != i] for i in idx]
    h_rest = [_h(cov[np.ix_(r, r)]) for r in rest]
    # H(X_i | X_{-i}) = H(X) - H(X_{-i})
    h_cond = [h - hr for hr in h_rest]
    tc = sum(h_i) - h
    dtc = h - sum(h_cond)
    return np.array([tc, dtc, tc - dtc, tc + dtc])


def _as_array(m):
    return np.array([float(v) for v in m])


@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_gaussian_measures_match_brute_force(d):
    with jax.enable_x64(True):
        c = _random_corr(d, d)
        got = _as_array(F.gaussian_higher_order_from_corr(jnp.asarray(c), shrinkage=0.0))
    np.testing.assert_allclose(got, _brute(c), rtol=1e-9, atol=1e-10)
    if d == 2:  # DTC = TC = I, O = 0
        assert abs(got[2]) < 1e-10 and abs(got[0] - got[1]) < 1e-10


def test_samples_path_and_scalar_wrappers():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4)) @ rng.normal(size=(4, 4))
    c = np.corrcoef(x, rowvar=False)
    ref = _brute(c)
    with jax.enable_x64(True):
        xj = jnp.asarray(x)
        m = F.gaussian_higher_order(xj, shrinkage=0.0)
        np.testing.assert_allclose(_as_array(m), ref, rtol=1e-8)
        np.testing.assert_allclose(F.gaussian_dual_total_correlation(xj, shrinkage=0.0), ref[1])
        np.testing.assert_allclose(F.gaussian_o_information(xj, shrinkage=0.0), ref[2])
        np.testing.assert_allclose(F.gaussian_s_information(xj, shrinkage=0.0), ref[3])
        tc = F.gaussian_total_correlation(xj, shrinkage=0.0)
        np.testing.assert_allclose(m.tc, tc, rtol=1e-10)


def test_redundant_and_synergistic_gaussian_signs():
    # Three noisy copies of one source: redundancy-dominated.
    rho = 0.8
    copies = np.full((3, 3), rho) + (1 - rho) * np.eye(3)
    assert float(F.gaussian_higher_order_from_corr(jnp.asarray(copies)).o) > 0.1
    # X3 = X1 + X2 + small noise with X1, X2 independent: synergy-dominated.
    cov = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 2.1]])
    s = np.sqrt(np.diag(cov))
    assert float(F.gaussian_higher_order_from_corr(jnp.asarray(cov / np.outer(s, s))).o) < -0.1


@pytest.mark.parametrize("d", [1, 3, 6])
def test_unit_contributions_match_brute_force(d):
    c = _random_corr(d, 10 + d)
    with jax.enable_x64(True):
        got = F.gaussian_unit_contributions_from_corr(jnp.asarray(c), shrinkage=0.0)
    full = _brute(c) if d > 1 else np.zeros(4)
    for i in range(d):
        r = [j for j in range(d) if j != i]
        sub = _brute(c[np.ix_(r, r)]) if len(r) > 1 else np.zeros(4)
        np.testing.assert_allclose([float(f[i]) for f in got], full - sub, rtol=1e-8, atol=1e-10)


def test_multiplets_equal_a_loop_over_subsets():
    d = 7
    c = _random_corr(d, 3)
    with jax.enable_x64(True):
        for k in (2, 3, 4):
            got = F.gaussian_multiplets(jnp.asarray(c), k, shrinkage=0.0, chunk_size=9)
            subsets = list(itertools.combinations(range(d), k))
            assert got.o.shape == (len(subsets),)
            ref = np.stack([_brute(c[np.ix_(s, s)]) for s in subsets])
            np.testing.assert_allclose(
                np.stack([np.asarray(f) for f in got], 1), ref, rtol=1e-8, atol=1e-12
            )
        picks = np.array([[6, 0, 2], [1, 5, 3]])
        got = F.gaussian_multiplets(jnp.asarray(c), subsets=picks, shrinkage=0.0)
        for r, s in enumerate(picks):
            np.testing.assert_allclose(float(got.o[r]), _brute(c[np.ix_(s, s)])[2], rtol=1e-8)


def test_multiplet_counts_and_shrinkage_consistency():
    assert F.all_subsets(20, 3).shape == (1140, 3)
    assert F.all_subsets(20, 4).shape == (4845, 4)
    c = jnp.asarray(_random_corr(6, 4), jnp.float32)
    sub = [0, 2, 5]
    whole = F.gaussian_multiplets(c, subsets=[sub])  # default shrinkage on the full matrix
    direct = F.gaussian_higher_order_from_corr(c[np.ix_(sub, sub)])
    np.testing.assert_allclose(float(whole.o[0]), float(direct.o), rtol=1e-5)


def _table(cells):
    joint = np.zeros((2, 2, 2))
    for c in cells:
        joint[c] += 1.0 / len(cells)
    return jnp.asarray(joint)


def test_discrete_xor_and_copy():
    ln2 = math.log(2)
    xor = F.discrete_higher_order(_table([(a, b, a ^ b) for a in (0, 1) for b in (0, 1)]))
    np.testing.assert_allclose(_as_array(xor), [ln2, 2 * ln2, -ln2, 3 * ln2], rtol=1e-6)
    copy = F.discrete_higher_order(_table([(0, 0, 0), (1, 1, 1)]))
    np.testing.assert_allclose(_as_array(copy), [2 * ln2, ln2, ln2, 3 * ln2], rtol=1e-6)
    # Leave-one-out: every pair of XOR is independent (O = 0), so each contribution is -log 2.
    contrib = F.discrete_unit_contributions(_table([(a, b, a ^ b) for a in (0, 1) for b in (0, 1)]))
    np.testing.assert_allclose(np.asarray(contrib.o), [-ln2] * 3, rtol=1e-6)
    # TC on a table equals R_KL.
    rng = np.random.default_rng(0)
    p = rng.random((2, 3, 2))
    p /= p.sum()
    np.testing.assert_allclose(
        float(F.discrete_higher_order(jnp.asarray(p)).tc), float(F.f_redundancy(p, "kl")), rtol=1e-5
    )


def test_gradients_finite_at_singular_correlation():
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    x = np.concatenate([x, x[:, :1], x[:, :1] + x[:, 1:2]], 1)  # duplicated and dependent units

    def loss(z):
        m = F.gaussian_higher_order(z)
        return m.o + m.dtc + m.s + jnp.sum(F.gaussian_unit_contributions(z).o)

    val, g = jax.value_and_grad(loss)(jnp.asarray(x))
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
    gm = jax.grad(lambda c: jnp.sum(F.gaussian_multiplets(c, 3).o))(F.correlation(jnp.asarray(x)))
    assert np.all(np.isfinite(np.asarray(gm)))


def test_jit_and_vmap():
    cs = jnp.asarray(np.stack([_random_corr(4, s) for s in range(3)]), jnp.float32)
    batched = jax.jit(F.gaussian_higher_order_from_corr)(cs).o
    loop = [float(F.gaussian_higher_order_from_corr(c).o) for c in cs]
    np.testing.assert_allclose(np.asarray(batched), loop, rtol=1e-5)


def test_bad_input():
    c = jnp.eye(4)
    with pytest.raises(ValueError, match="out of range"):
        F.gaussian_multiplets(c, subsets=[[0, 4]])
    with pytest.raises(ValueError, match="repeats a unit"):
        F.gaussian_multiplets(c, subsets=[[0, 1], [2, 2]])
    with pytest.raises(ValueError, match="`k`"):
        F.gaussian_multiplets(c, 5)
    with pytest.raises(ValueError, match="exactly one"):
        F.gaussian_multiplets(c)
    with pytest.raises(ValueError, match="shrinkage"):
        F.gaussian_higher_order_from_corr(c, shrinkage=2.0)
    with pytest.raises(ValueError, match="sums to"):
        F.discrete_higher_order(jnp.ones((2, 2)))
