"""Numerical safety of the functionals: finite values and gradients on degenerate batches."""

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

import redundax.functionals as F

SAMPLE_FUNCTIONALS = {
    "spectral_redundancy": F.spectral_redundancy,
    "spectral_entropy": F.spectral_entropy,
    "effective_rank": F.effective_rank,
    "gaussian_total_correlation": F.gaussian_total_correlation,
    "chi2_redundancy": F.chi2_redundancy,
}


def _rank_one(n=48, d=12, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.outer(rng.normal(size=n), rng.normal(size=d)), jnp.float32)


def _degenerate_batches():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 10)).astype(np.float32)
    zero_var = base.copy()
    zero_var[:, 3] = 2.5
    duplicated = base.copy()
    duplicated[:, 7] = duplicated[:, 2]
    return {
        "rank_one": _rank_one(),
        "n_less_than_d": jnp.asarray(rng.normal(size=(6, 32)), jnp.float32),
        "zero_variance_unit": jnp.asarray(zero_var),
        "duplicated_units": jnp.asarray(duplicated),
    }


@pytest.mark.parametrize("batch", list(_degenerate_batches()))
@pytest.mark.parametrize("name", list(SAMPLE_FUNCTIONALS))
def test_finite_value_and_gradient(name, batch):
    fn = SAMPLE_FUNCTIONALS[name]
    x = _degenerate_batches()[batch]
    value, grad = jax.jit(jax.value_and_grad(fn))(x)
    assert np.isfinite(float(value)), (name, batch, value)
    assert np.all(np.isfinite(np.asarray(grad))), (name, batch)


def test_naive_eigvalsh_spectral_redundancy_is_nan_on_rank_one():
    """The failure mode this module guards against, reproduced with a plain implementation."""

    def naive(x):
        xc = x - x.mean(0)
        lam = jnp.linalg.eigvalsh(xc.T @ xc)
        p = lam / lam.sum()
        return 1 - jnp.exp(-jnp.sum(p * jnp.log(p))) / x.shape[-1]

    x = _rank_one()
    value, grad = jax.value_and_grad(naive)(x)
    assert not (np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad))))
    value, grad = jax.value_and_grad(F.spectral_redundancy)(x)
    assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


def test_constant_batch_has_documented_values():
    x = jnp.full((16, 5), 3.0)
    np.testing.assert_allclose(F.spectral_redundancy(x), 1 - 1 / 5, atol=1e-6)
    np.testing.assert_allclose(F.effective_rank(x), 1.0, atol=1e-6)
    np.testing.assert_allclose(F.gaussian_total_correlation(x), 0.0, atol=1e-6)
    np.testing.assert_allclose(F.chi2_redundancy(x), 0.0, atol=1e-6)
    np.testing.assert_allclose(F.correlation(x), np.eye(5), atol=1e-6)
    for fn in SAMPLE_FUNCTIONALS.values():
        assert np.all(np.asarray(jax.grad(fn)(x)) == 0)


def test_zero_variance_unit_is_independent():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    with_const = np.concatenate([x, np.full((64, 1), -7.0, np.float32)], axis=1)
    c = np.asarray(F.correlation(with_const))
    np.testing.assert_allclose(c[:4, :4], np.corrcoef(x, rowvar=False), atol=1e-5)
    np.testing.assert_allclose(c[4], np.eye(5)[4], atol=1e-6)
    np.testing.assert_allclose(
        F.gaussian_total_correlation(with_const), F.gaussian_total_correlation(x), rtol=1e-5
    )


def test_gram_and_covariance_paths_agree():
    """n < d (Gram path) against the d x d formula evaluated in float64 NumPy."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 30))
    x[:, 5] = x[:, 0] * 2 + 1  # duplicated unit
    c = np.corrcoef(x, rowvar=False)
    chi2_ref = 0.25 * np.sum((c - np.eye(30)) ** 2)
    np.testing.assert_allclose(F.chi2_redundancy(jnp.asarray(x, jnp.float32)), chi2_ref, rtol=1e-4)
    eps = 1e-4
    _, logdet = np.linalg.slogdet((1 - eps) * c + eps * np.eye(30))
    np.testing.assert_allclose(
        F.gaussian_total_correlation(jnp.asarray(x, jnp.float32)), -0.5 * logdet, rtol=2e-3
    )
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    lam = lam[lam > 1e-9 * lam.max()]
    p = lam / lam.sum()
    np.testing.assert_allclose(
        F.spectral_entropy(jnp.asarray(x, jnp.float32)), -np.sum(p * np.log(p)), rtol=1e-4
    )


def test_vmap_matches_loop():
    rng = np.random.default_rng(5)
    xs = jnp.asarray(rng.normal(size=(3, 20, 6)), jnp.float32)
    for fn in SAMPLE_FUNCTIONALS.values():
        batched = jax.vmap(fn)(xs)
        np.testing.assert_allclose(batched, [fn(x) for x in xs], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fn(xs), batched, rtol=1e-5, atol=1e-6)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(12, 4))
    x = jnp.asarray(x, jnp.float32)
    for fn in SAMPLE_FUNCTIONALS.values():
        jax.test_util.check_grads(fn, (x,), order=1, modes=["rev"], atol=5e-2, rtol=5e-2, eps=1e-2)
