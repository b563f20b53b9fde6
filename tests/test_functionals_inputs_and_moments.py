"""Bad input gives clear errors; mergeable moments equal one-shot statistics; 8-device sharding."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redundax.functionals as F

SAMPLE_FNS = [
    F.spectral_redundancy,
    F.effective_rank,
    F.spectral_entropy,
    F.gaussian_total_correlation,
    F.chi2_redundancy,
    F.covariance,
    F.correlation,
]


@pytest.mark.parametrize("fn", SAMPLE_FNS, ids=lambda f: f.__name__)
def test_bad_samples(fn):
    with pytest.raises(ValueError, match=r"`x` must have shape \(\.\.\., n, d\)"):
        fn(jnp.ones(5))
    with pytest.raises(ValueError, match="at least 2 are needed"):
        fn(jnp.ones((1, 4)))
    bad = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(jnp.asarray(bad))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        fn(bad)


def test_nan_under_jit_propagates_documented():
    bad = jnp.ones((8, 3)).at[0, 0].set(jnp.nan)
    assert np.isnan(float(jax.jit(F.chi2_redundancy)(bad)))


def test_bad_joint_tables_and_kernels():
    with pytest.raises(ValueError, match="negative"):
        F.f_redundancy(jnp.asarray([[0.6, -0.1], [0.3, 0.2]]), "kl")
    with pytest.raises(ValueError, match="sums to 2"):
        F.f_redundancy(jnp.asarray([[0.5, 0.5], [0.5, 0.5]]), "kl")
    with pytest.raises(ValueError, match="at least 2 axes"):
        F.f_redundancy(jnp.asarray([0.5, 0.5]), "kl")
    with pytest.raises(ValueError, match=r"Unknown redundancy kernel 'kll'.*Known names"):
        F.f_redundancy(jnp.asarray([[0.25, 0.25], [0.25, 0.25]]), "kll")
    with pytest.raises(ValueError, match=r"f\(1\) = 0"):
        F.FKernel("shifted", lambda t: t * jnp.log(t) + 1.0, lambda s: s)
    with pytest.raises(ValueError, match="not convex"):
        F.FKernel("concave", lambda t: -((t - 1.0) ** 2), lambda s: s)
    with pytest.raises(ValueError, match="alpha"):
        F.renyi(1.0)
    with pytest.raises(ValueError, match="shrinkage"):
        F.gaussian_total_correlation(jnp.ones((4, 2)), shrinkage=2.0)
    with pytest.raises(ValueError, match="heads on axis -3"):
        F.head_redundancy(jnp.ones((4, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        F.head_redundancy(jnp.ones((1, 4, 4)))
    with pytest.raises(ValueError, match="share batch axes"):
        F.gaussian_mutual_information(jnp.ones((8, 2)), jnp.ones((7, 2)))


def test_user_kernel_works():
    kern = F.FKernel("le_cam", lambda t: (t - 1) ** 2 / (2 * (t + 1)), lambda s: s)
    joint = jnp.asarray([[0.4, 0.1], [0.1, 0.4]])
    q = np.full((2, 2), 0.25)
    p = np.asarray(joint)
    np.testing.assert_allclose(
        F.f_redundancy(joint, kern), np.sum((p - q) ** 2 / (2 * (p + q))), rtol=1e-6
    )


def test_moments_merge_equals_concatenation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(103, 5)).astype(np.float32) * 3 + 10
    chunks = np.array_split(x, 7)
    merged = F.Moments.zeros(5)
    for c in chunks:
        merged = merged.merge(F.Moments.from_samples(c))
    np.testing.assert_allclose(merged.covariance(), np.cov(x, rowvar=False), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(merged.correlation(), np.corrcoef(x, rowvar=False), atol=1e-5)
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-5)
    assert float(merged.count) == 103


def test_epoch_level_functionals_from_merged_moments():
    """Covariance-level variants on merged chunk moments equal the one-shot sample functionals."""
    rng = np.random.default_rng(4)
    x = (rng.normal(size=(90, 6)) @ rng.normal(size=(6, 6))).astype(np.float32)
    merged = F.Moments.zeros(6)
    for c in np.array_split(x, 4):
        merged = merged.merge(F.Moments.from_samples(c))
    np.testing.assert_allclose(
        F.spectral_redundancy_from_covariance(merged.covariance()),
        F.spectral_redundancy(x),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        F.spectral_entropy_from_covariance(merged.covariance()), F.spectral_entropy(x), rtol=1e-4
    )
    np.testing.assert_allclose(
        F.chi2_redundancy_from_corr(merged.correlation()), F.chi2_redundancy(x), rtol=1e-4
    )
    np.testing.assert_allclose(
        F.gaussian_total_correlation_from_corr(merged.correlation()),
        F.gaussian_total_correlation(x),
        rtol=1e-4,
    )


def test_moments_as_scan_carry():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(6, 20, 4)), jnp.float32)

    def body(carry, batch):
        return carry.merge(F.Moments.from_samples(batch)), None

    total, _ = jax.jit(lambda xs: jax.lax.scan(body, F.Moments.zeros(4), xs))(x)
    flat = np.asarray(x).reshape(-1, 4)
    np.testing.assert_allclose(total.covariance(), np.cov(flat, rowvar=False), rtol=1e-4, atol=1e-6)


def test_covariance_batch_axes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 30, 4)).astype(np.float32)
    cov = np.asarray(F.covariance(x))
    assert cov.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(cov[1, 2], np.cov(x[1, 2], rowvar=False), rtol=1e-4, atol=1e-6)


def test_sharded_equals_single_device_and_float64():
    """Runs tests/scripts/sharded_functionals.py on 8 simulated CPU devices (and in float64)."""
    script = pathlib.Path(__file__).parent / "scripts" / "sharded_functionals.py"
    env = dict(os.environ, JAX_NUM_CPU_DEVICES="8", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sharded OK" in out.stdout and "float64 OK" in out.stdout, out.stdout
