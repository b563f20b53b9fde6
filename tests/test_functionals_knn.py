"""KSG total correlation: a cKDTree second algorithm, Gaussian closed forms, independence, ties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redundax.functionals as F
from benchmarks.estimators import np_ksg as ksg_reference  # KSG eq. 9 with scipy's k-d tree


def _equicorrelated(d, n, rho, seed):
    c = np.full((d, d), rho) + (1 - rho) * np.eye(d)
    x = np.random.default_rng(seed).multivariate_normal(np.zeros(d), c, size=n)
    return x, -0.5 * np.linalg.slogdet(c)[1]


def test_matches_kdtree_reference_exactly():
    x, _ = _equicorrelated(4, 700, 0.6, 0)
    with jax.enable_x64(True):
        got = float(F.ksg_total_correlation(jnp.asarray(x), k=4, block_size=64))
    np.testing.assert_allclose(got, ksg_reference(x, k=4), rtol=1e-10)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_gaussian_closed_form_at_n2000(d):
    # Tolerance 0.15 nats: over 5 seeds at n = 2000, rho = 0.5 the estimator's standard deviation
    # was 0.013-0.055 nats for d = 2..6 and its mean within 0.02 of the closed form, so 0.15 is about
    # three standard deviations at the worst d (true TC here ranges 0.14-1.11 nats).
    x, true = _equicorrelated(d, 2000, 0.5, seed=d)
    est = float(F.ksg_total_correlation(jnp.asarray(x, jnp.float32)))
    assert abs(est - true) < 0.15, (d, est, true)


def test_zero_on_independent_data():
    # Independent units: true TC = 0; the estimator's sd at n = 2000 is about 0.015 nats.
    x = np.random.default_rng(1).normal(size=(2000, 4)).astype(np.float32)
    assert abs(float(F.ksg_total_correlation(jnp.asarray(x)))) < 0.05
    # scale invariance of the standardised estimator
    a = float(F.ksg_total_correlation(jnp.asarray(x)))
    b = float(F.ksg_total_correlation(jnp.asarray(x * np.array([1.0, 100.0, 0.01, 3.0], "f4"))))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_blocking_does_not_change_the_value():
    x, _ = _equicorrelated(3, 301, 0.4, 2)
    xs = jnp.asarray(x, jnp.float32)
    vals = [float(F.ksg_total_correlation(xs, block_size=b)) for b in (1, 7, 301)]
    np.testing.assert_allclose(vals, vals[0], rtol=1e-6)


def test_duplicates_and_ties_stay_finite():
    x, _ = _equicorrelated(3, 400, 0.5, 3)
    dup = np.concatenate([x, x[:100], x[:100]]).astype(np.float32)  # triplicated samples
    v = float(F.ksg_total_correlation(jnp.asarray(dup), k=2))
    assert np.isfinite(v)
    # Discrete units (heavy ties): jitter breaks ties; two independent dice give TC ~ 0.
    rng = np.random.default_rng(0)
    dice = rng.integers(0, 6, size=(2000, 2)).astype(np.float32)
    jittered = F.ksg_total_correlation(jnp.asarray(dice), jitter=1e-3, key=jax.random.key(0))
    assert abs(float(jittered)) < 0.05


def test_bad_input():
    x = jnp.ones((10, 3))
    with pytest.raises(ValueError, match="too few"):
        F.ksg_total_correlation(x[:3], k=3)
    with pytest.raises(ValueError, match="d >= 2"):
        F.ksg_total_correlation(x[:, :1])
    with pytest.raises(ValueError, match="`k`"):
        F.ksg_total_correlation(x, k=0)
    with pytest.raises(ValueError, match="key"):
        F.ksg_total_correlation(x, jitter=0.1)
