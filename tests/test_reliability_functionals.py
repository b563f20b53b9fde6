"""Functionals never hide bad input: NaN in gives NaN out under jit, invalid matrices are rejected,
half precision is computed in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import redundax.functionals as F

RNG = np.random.default_rng(0)
X = RNG.normal(size=(48, 6)).astype(np.float32) @ RNG.normal(size=(6, 6)).astype(np.float32)


def _np_spectral_redundancy(x: np.ndarray) -> float:
    """NumPy float64 reference of Def. 2: R_spec = 1 - exp(H(lambda / sum lambda)) / d."""
    lam = np.clip(np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False)), 0, None)
    p = lam / lam.sum()
    p = p[p > 0]
    return 1.0 - np.exp(-np.sum(p * np.log(p))) / x.shape[1]


def _with_bad(x: np.ndarray, value: float) -> np.ndarray:
    x = x.copy()
    x[3, 2] = value
    return x


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("n", [48, 4], ids=["n>d", "n<d"])
@pytest.mark.parametrize(
    "fn",
    [F.spectral_redundancy, F.effective_rank, F.spectral_entropy, F.covariance_spectrum],
    ids=lambda f: f.__name__,
)
def test_jitted_spectral_functionals_give_nan_on_non_finite_input(fn, n, bad):
    # Before: the CPU eigenvalue callback raised "CpuCallback error ... did not converge".
    out = np.asarray(jax.jit(fn)(_with_bad(X[:n], bad)))
    assert np.all(np.isnan(out))
    # The clean input in the same compiled program stays finite (no poisoning of other rows).
    both = jax.jit(jax.vmap(fn))(np.stack([X[:n], _with_bad(X[:n], bad)]))
    assert np.all(np.isfinite(np.asarray(both[0])))
    assert np.all(np.isnan(np.asarray(both[1])))


def test_spectral_from_covariance_with_nan_is_nan_under_jit():
    cov = np.cov(X, rowvar=False).astype(np.float32)
    cov[1, 1] = np.nan
    assert np.isnan(float(jax.jit(F.spectral_redundancy_from_covariance)(cov)))


def test_host_eigensolver_non_convergence_gives_nan_not_a_raise(monkeypatch):
    from redundax.functionals import spectral

    calls = []

    def fails(m, *args, **kwargs):
        calls.append(1)
        raise np.linalg.LinAlgError("Eigenvalues did not converge")

    monkeypatch.setattr(spectral.np.linalg, "eigvalsh", fails)
    out = spectral._host_eigvalsh(np.eye(3, dtype=np.float32)[None].repeat(2, 0))
    assert calls and out.shape == (2, 3) and np.isnan(out).all()


def test_f_redundancy_of_invalid_table_is_nan_under_jit():
    table = np.array([[0.3, 0.2], [0.1, 0.4]], np.float32)
    # Reference: KL redundancy = mutual information of the 2x2 table, by hand.
    q = table.sum(1, keepdims=True) * table.sum(0, keepdims=True)
    mi = float(np.sum(table * np.log(table / q)))
    np.testing.assert_allclose(float(jax.jit(F.f_redundancy)(table)), mi, rtol=1e-5)
    for bad in (np.nan, np.inf, -0.1):
        t = table.copy()
        t[0, 0] = bad
        assert np.isnan(float(jax.jit(F.f_redundancy)(t))), bad
    assert np.isnan(float(jax.jit(F.f_redundancy)(2 * table)))  # sums to 2
    with pytest.raises(ValueError, match="NaN or Inf"):
        F.f_redundancy(np.where(table == 0.3, np.nan, table))


@pytest.mark.parametrize(
    "corr, match",
    [
        (5 * np.eye(3), "diagonal entry 5"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), "not symmetric"),
        (np.array([[1.0, 0.9, 0.9], [0.9, 1.0, -0.9], [0.9, -0.9, 1.0]]), "not positive semidef"),
    ],
    ids=["covariance", "asymmetric", "indefinite"],
)
def test_gaussian_f_redundancy_rejects_non_correlation_matrices(corr, match):
    # Before: gaussian_f_redundancy(5 * I) returned -2.414.
    corr = jnp.asarray(corr, jnp.float32)
    with pytest.raises(ValueError, match=match):
        F.gaussian_f_redundancy(corr, "kl")
    assert np.isnan(float(jax.jit(F.gaussian_f_redundancy)(corr)))


def test_gaussian_f_redundancy_accepts_estimated_correlations():
    # A sample correlation (round-off off the unit diagonal) and a singular one (rank 1) pass.
    c = np.asarray(F.correlation(X))
    np.testing.assert_allclose(
        float(F.gaussian_f_redundancy(c, "kl")),
        -0.5 * np.linalg.slogdet(np.corrcoef(X, rowvar=False))[1],
        rtol=1e-4,
    )
    assert np.isinf(float(F.gaussian_f_redundancy(np.ones((3, 3), np.float32), "kl")))
    nan_corr = jnp.eye(3).at[0, 1].set(jnp.nan)
    assert np.isnan(float(jax.jit(F.gaussian_f_redundancy)(nan_corr)))


def test_covariance_rejects_ddof_at_least_n():
    with pytest.raises(ValueError, match=r"`ddof` must be in \[0, n\) for n = 48"):
        F.covariance(X, ddof=48)
    with pytest.raises(ValueError, match="ddof"):
        F.covariance(X, ddof=-1)
    np.testing.assert_allclose(
        np.asarray(F.covariance(X, ddof=47)), np.cov(X, rowvar=False, ddof=47), rtol=1e-4
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision_is_computed_in_float32(dtype):
    # Before: float16 crashed in the LAPACK callback; bfloat16 computed in bfloat16 (0.0625).
    xh = jnp.asarray(X).astype(dtype)
    rounded = np.asarray(xh.astype(jnp.float32))
    for fn in (F.spectral_redundancy, jax.jit(F.spectral_redundancy)):
        out = fn(xh)
        assert out.dtype == jnp.float32
        # Exactly the float32 computation on the rounded activations ...
        np.testing.assert_allclose(float(out), _np_spectral_redundancy(rounded), rtol=1e-4)
    # ... hence the float32 result of the unrounded activations within the input's rounding.
    eps = float(jnp.finfo(dtype).eps)
    np.testing.assert_allclose(float(out), _np_spectral_redundancy(X), rtol=4 * eps)
    for fn in (F.gaussian_total_correlation, F.chi2_redundancy, F.covariance):
        assert fn(xh).dtype == jnp.float32
    np.testing.assert_allclose(
        np.asarray(F.covariance(xh)), np.cov(rounded, rowvar=False), rtol=1e-4, atol=1e-5
    )


def test_bfloat16_gradient_flows_back_in_bfloat16():
    xh = jnp.asarray(X).astype(jnp.bfloat16)
    g = jax.grad(F.spectral_redundancy)(xh)
    g32 = jax.grad(F.spectral_redundancy)(xh.astype(jnp.float32))
    assert g.dtype == jnp.bfloat16
    np.testing.assert_allclose(
        np.asarray(g, np.float32), np.asarray(g32), rtol=2e-2, atol=1e-2 * float(jnp.abs(g32).max())
    )
