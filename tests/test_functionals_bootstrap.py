"""Bootstrap, subsampling and jackknife intervals: closed-form standard errors and coverage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redundax.functionals as F


def _mean(x):
    return jnp.mean(x[:, 0])


def test_jackknife_se_of_the_mean_is_the_textbook_value():
    x = np.random.default_rng(0).normal(size=(50, 1))
    with jax.enable_x64(True):
        iv = F.jackknife_interval(_mean, jnp.asarray(x), confidence=0.95)
    se = x[:, 0].std(ddof=1) / np.sqrt(50)  # exact for the mean
    np.testing.assert_allclose(float(iv.std), se, rtol=1e-10)
    np.testing.assert_allclose(float(iv.high - iv.low), 2 * 1.959963984540054 * se, rtol=1e-8)


def test_bootstrap_se_of_the_mean():
    x = np.random.default_rng(1).normal(size=(100, 1)).astype(np.float32)
    iv = F.bootstrap_interval(_mean, jnp.asarray(x), key=jax.random.key(0), num_resamples=4000)
    # ideal bootstrap se of a mean: sqrt(sum (x - xbar)^2) / n; Monte Carlo error ~ 1/sqrt(2B) = 1.1%
    ideal = x[:, 0].std(ddof=0) / np.sqrt(100)
    np.testing.assert_allclose(float(iv.std), ideal, rtol=0.05)
    assert float(iv.low) < float(iv.estimate) < float(iv.high)
    # chunking does not change anything (same indices)
    iv2 = F.bootstrap_interval(
        _mean, jnp.asarray(x), key=jax.random.key(0), num_resamples=4000, chunk_size=7
    )
    np.testing.assert_allclose(np.asarray(iv2), np.asarray(iv), rtol=1e-6)


def test_paired_samples_and_array_statistics():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 2)).astype(np.float32)
    y = (x[:, :1] + rng.normal(size=(80, 1))).astype(np.float32)
    iv = F.bootstrap_interval(
        lambda xy: F.gaussian_mutual_information(*xy),
        (jnp.asarray(x), jnp.asarray(y)),
        key=jax.random.key(1),
        num_resamples=64,
    )
    assert iv.estimate.shape == () and float(iv.low) < float(iv.high)
    ivs = F.bootstrap_interval(
        lambda z: F.gaussian_unit_contributions(z).o,
        jnp.asarray(np.concatenate([x, y], 1)),
        key=jax.random.key(2),
        num_resamples=32,
        method="basic",
    )
    assert ivs.low.shape == (3,)


def _coverage(interval_fn, true, xs, keys):
    iv = jax.jit(jax.vmap(interval_fn))(xs, keys)
    return float(jnp.mean((iv.low <= true) & (true <= iv.high)))


def test_coverage_of_gaussian_total_correlation():
    # 200 simulated data sets (n = 200, d = 3, true TC = 0.217 nats), 200 resamples each. The
    # binomial sd of a coverage of 0.9 over 200 simulations is 0.021; allow 3 sd.
    d, n, sims = 3, 200, 200
    c = np.full((d, d), 0.4) + 0.6 * np.eye(d)
    true = -0.5 * np.linalg.slogdet(c)[1]
    xs = np.random.default_rng(0).multivariate_normal(np.zeros(d), c, size=(sims, n))
    xs = jnp.asarray(xs, jnp.float32)
    keys = jax.random.split(jax.random.key(0), sims)
    stat = F.gaussian_total_correlation
    boot = _coverage(
        lambda x, k: F.bootstrap_interval(stat, x, key=k, num_resamples=200, confidence=0.9),
        true,
        xs,
        keys,
    )
    jack = _coverage(lambda x, k: F.jackknife_interval(stat, x, confidence=0.9), true, xs, keys)
    assert abs(boot - 0.9) < 0.064, boot
    assert abs(jack - 0.9) < 0.064, jack


def test_subsampling_interval_scales_with_sqrt_m_over_n():
    x = np.random.default_rng(3).normal(size=(400, 1)).astype(np.float32)
    iv = F.bootstrap_interval(
        _mean, jnp.asarray(x), key=jax.random.key(0), num_resamples=2000, subsample_size=100
    )
    # without replacement: Var(mean_m) = s^2/m (1 - m/n); times m/n -> s^2/n (1 - m/n)
    ideal = x[:, 0].std(ddof=1) / np.sqrt(400) * np.sqrt(1 - 100 / 400)
    np.testing.assert_allclose(float(iv.std), ideal, rtol=0.06)


def test_bad_input():
    x = jnp.ones((10, 2))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="confidence"):
        F.bootstrap_interval(_mean, x, key=key, confidence=95)
    with pytest.raises(ValueError, match="method"):
        F.bootstrap_interval(_mean, x, key=key, method="bca")
    with pytest.raises(ValueError, match="subsample_size"):
        F.bootstrap_interval(_mean, x, key=key, subsample_size=10)
    with pytest.raises(ValueError, match="same number of samples"):
        F.bootstrap_interval(lambda t: t[0].sum(), (x, jnp.ones((9, 2))), key=key)
