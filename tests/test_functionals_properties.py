"""Propositions of the redundancy paper checked against independent references.

References used: brute-force sums over discrete tables, 2-D quadrature of Gaussian densities, Monte
Carlo estimates with scipy densities, float64 NumPy linear algebra, and the closed forms themselves.
"""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import redundax.functionals as F

KERNELS = ["kl", "pearson_chi2", "squared_hellinger", "jensen_shannon", "total_variation"]
ALL_KERNELS = [*KERNELS, F.renyi(0.5), F.renyi(3.0)]
FAST = settings(max_examples=25, deadline=None)


@st.composite
def joint_tables(draw, max_vars=3, max_states=4):
    shape = tuple(draw(st.lists(st.integers(2, max_states), min_size=2, max_size=max_vars)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    p = rng.gamma(0.7, size=shape) + 1e-3
    return p / p.sum()


def brute_force_rf(joint: np.ndarray, f) -> float:
    """Eq. 1 by explicit loops over cells (an implementation independent of the library's)."""
    marginals = [
        joint.sum(axis=tuple(j for j in range(joint.ndim) if j != i)) for i in range(joint.ndim)
    ]
    total = 0.0
    for idx in np.ndindex(joint.shape):
        q = np.prod([marginals[i][k] for i, k in enumerate(idx)])
        if q > 0:
            total += q * f(joint[idx] / q)
    return total


def numpy_marginals_product(joint: np.ndarray) -> np.ndarray:
    """Outer product of the marginals, by NumPy (independent of the library's)."""
    marginals = [
        joint.sum(axis=tuple(j for j in range(joint.ndim) if j != i)) for i in range(joint.ndim)
    ]
    out = marginals[0]
    for m in marginals[1:]:
        out = np.multiply.outer(out, m)
    return out


NUMPY_F = {
    "kl": lambda t: t * np.log(t) if t > 0 else 0.0,
    "pearson_chi2": lambda t: 0.5 * (t - 1) ** 2,
    "squared_hellinger": lambda t: (np.sqrt(t) - 1) ** 2,
    "jensen_shannon": lambda t: (
        0.5 * (t * np.log(t) - (1 + t) * np.log((1 + t) / 2)) if t > 0 else 0.5 * np.log(2)
    ),
    "total_variation": lambda t: 0.5 * abs(t - 1),
}


@settings(max_examples=10, deadline=None)
@given(joint_tables())
def test_f_redundancy_matches_brute_force(joint):
    for name in KERNELS:
        got = float(F.f_redundancy(jnp.asarray(joint, jnp.float32), name))
        np.testing.assert_allclose(got, brute_force_rf(joint, NUMPY_F[name]), rtol=2e-3, atol=1e-5)


def test_kl_redundancy_is_total_correlation():
    """Sec. 3.5: R_KL = sum_i H(X_i) - H(X) (entropy identity, independent computation)."""
    rng = np.random.default_rng(0)
    joint = rng.random((3, 4, 2))
    joint /= joint.sum()
    h = lambda p: -np.sum(p * np.log(p))
    marg = [joint.sum(axis=tuple(j for j in range(3) if j != i)) for i in range(3)]
    np.testing.assert_allclose(
        F.f_redundancy(jnp.asarray(joint), "kl"), sum(map(h, marg)) - h(joint), rtol=1e-5
    )


@FAST
@given(joint_tables())
def test_prop1_nonnegative_and_zero_iff_independent(joint):
    independent = numpy_marginals_product(joint)
    for kern in ALL_KERNELS:
        dep = float(F.f_redundancy(jnp.asarray(joint, jnp.float32), kern))
        assert dep >= -1e-6
        np.testing.assert_allclose(
            F.f_redundancy(jnp.asarray(independent, jnp.float32), kern), 0.0, atol=1e-5
        )


def test_prop1_strictly_positive_for_dependent_table():
    joint = jnp.asarray([[0.4, 0.1], [0.1, 0.4]])
    for kern in ALL_KERNELS:
        assert float(F.f_redundancy(joint, kern)) > 1e-3


@FAST
@given(joint_tables(max_vars=3, max_states=3), st.integers(0, 2**31 - 1))
def test_prop2_data_processing_under_coordinatewise_channels(joint, seed):
    """R_f(Y) <= R_f(X) for Y_i drawn from X_i through random stochastic matrices K_i."""
    rng = np.random.default_rng(seed)
    out = joint
    for axis, k in enumerate(joint.shape):
        kernel = rng.dirichlet(np.ones(rng.integers(2, 5)), size=k)  # (states_in, states_out)
        out = np.moveaxis(np.tensordot(out, kernel, axes=([axis], [0])), -1, axis)
    for kern in ALL_KERNELS:
        rx = float(F.f_redundancy(jnp.asarray(joint, jnp.float32), kern))
        ry = float(F.f_redundancy(jnp.asarray(out, jnp.float32), kern))
        assert ry <= rx + 1e-5 * (1 + rx), (getattr(kern, "name", kern), rx, ry)


@FAST
@given(joint_tables())
def test_prop3_upper_bound(joint):
    """m <= L <= M gives R_f <= max(f(m), f(M)); for KL (the paper's case) R_KL <= M log M."""
    q = numpy_marginals_product(joint)
    ratio = joint / q
    lo, hi = ratio.min(), ratio.max()
    assert float(F.f_redundancy(jnp.asarray(joint), "kl")) <= hi * np.log(hi) + 1e-6
    for name in KERNELS:
        bound = max(NUMPY_F[name](lo), NUMPY_F[name](hi))
        assert float(F.f_redundancy(jnp.asarray(joint), name)) <= bound + 1e-6


def _random_corr(d, strength, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d)) * strength
    cov = np.eye(d) + a @ a.T
    s = 1 / np.sqrt(np.diag(cov))
    return cov * s[:, None] * s[None, :]


def test_prop4_total_correlation_equals_monte_carlo_kl():
    corr = _random_corr(4, 0.6, seed=1)
    joint = stats.multivariate_normal(np.zeros(4), corr)
    x = joint.rvs(size=200_000, random_state=2)
    log_ratio = joint.logpdf(x) - stats.norm.logpdf(x).sum(axis=1)
    mc, se = log_ratio.mean(), log_ratio.std() / np.sqrt(len(x))
    closed = float(F.gaussian_total_correlation_from_corr(jnp.asarray(corr), shrinkage=0.0))
    assert abs(closed - mc) < 4 * se + 1e-3, (closed, mc, se)
    from_samples = float(F.gaussian_total_correlation(jnp.asarray(x[:50_000], jnp.float32)))
    np.testing.assert_allclose(from_samples, mc, rtol=0.03)
    np.testing.assert_allclose(F.gaussian_f_redundancy(jnp.asarray(corr), "kl"), closed, rtol=1e-5)


@pytest.mark.parametrize(
    "kernel", ["kl", "pearson_chi2", "squared_hellinger", F.renyi(0.3), F.renyi(1.5)]
)
def test_gaussian_closed_forms_match_quadrature(kernel):
    """Bivariate Gaussian R_f by 2-D quadrature of Pi f(p / Pi) on a fine grid."""
    rho = 0.45
    kern = F.get_kernel(kernel)
    g = np.linspace(-9, 9, 1201)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    pts = np.stack([xx, yy], -1)
    p = stats.multivariate_normal([0, 0], [[1, rho], [rho, 1]]).pdf(pts)
    q = stats.norm.pdf(xx) * stats.norm.pdf(yy)
    integrand = q * np.asarray(kern.f(jnp.asarray(p / q, jnp.float32)))
    quad = np.trapezoid(np.trapezoid(integrand, g, axis=1), g)
    closed = float(F.gaussian_f_redundancy(jnp.asarray([[1, rho], [rho, 1]]), kern))
    np.testing.assert_allclose(closed, quad, rtol=2e-3)


def test_gaussian_closed_form_errors_and_infinities():
    corr = jnp.asarray([[1.0, 0.3], [0.3, 1.0]])
    for name in ["jensen_shannon", "total_variation"]:
        with pytest.raises(ValueError, match="no Gaussian closed form"):
            F.gaussian_f_redundancy(corr, name)
    strong = jnp.asarray(_random_corr(4, 3.0, seed=0))  # largest eigenvalue > 2
    assert float(jnp.linalg.eigvalsh(strong)[-1]) > 2
    assert np.isinf(float(F.gaussian_f_redundancy(strong, "pearson_chi2")))


def test_prop5_kl_and_chi2_agree_to_second_order():
    base = _random_corr(5, 1.0, seed=3) - np.eye(5)
    errs = []
    for t in [0.08, 0.04, 0.02]:
        corr = jnp.asarray(np.eye(5) + t * base)
        tc = float(F.gaussian_total_correlation_from_corr(corr, shrinkage=0.0))
        proxy = 0.25 * float(jnp.sum((corr - jnp.eye(5)) ** 2))
        chi2_exact = float(F.gaussian_f_redundancy(corr, "pearson_chi2"))
        errs.append((abs(tc - proxy), abs(chi2_exact - proxy), proxy))
    for (e_kl, e_chi, proxy), (e_kl2, e_chi2, proxy2) in itertools.pairwise(errs):
        assert proxy / proxy2 == pytest.approx(4, rel=1e-6)
        assert e_kl2 < e_kl / 6 and e_chi2 < e_chi / 6  # third-order remainders shrink ~8x
    assert errs[-1][0] < 0.05 * errs[-1][2]


@st.composite
def correlation_matrices(draw):
    d = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    strength = draw(st.floats(0.05, 0.6))
    return _random_corr(d, strength, seed)


@FAST
@given(correlation_matrices())
def test_lemma2_kl_frobenius_bound(corr):
    a = corr - np.eye(len(corr))
    if np.max(np.abs(np.linalg.eigvalsh(a))) >= 1:
        return
    fro = np.linalg.norm(a)
    minus_logdet = 2 * float(
        F.gaussian_total_correlation_from_corr(jnp.asarray(corr), shrinkage=0.0)
    )
    assert minus_logdet >= 0.5 * fro**2 - fro**3 / 3 - 1e-5


def test_chi2_redundancy_matches_formula():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    c = np.corrcoef(x, rowvar=False)
    np.testing.assert_allclose(
        F.chi2_redundancy(jnp.asarray(x, jnp.float32)),
        0.25 * np.sum((c - np.eye(6)) ** 2),
        rtol=1e-4,
    )


def test_mutual_information_closed_form():
    """Bivariate: I = -1/2 log(1 - rho^2), also via gaussian_mi_from_r2."""
    rng = np.random.default_rng(8)
    cov = [[1, 0.6], [0.6, 1]]
    xy = rng.multivariate_normal([0, 0], cov, size=100_000)
    mi = float(
        F.gaussian_mutual_information(jnp.asarray(xy[:, :1]), jnp.asarray(xy[:, 1:]), shrinkage=0.0)
    )
    r = np.corrcoef(xy, rowvar=False)[0, 1]
    np.testing.assert_allclose(mi, -0.5 * np.log(1 - r**2), rtol=1e-4)
    np.testing.assert_allclose(F.gaussian_mi_from_r2(0.36), -0.5 * np.log(0.64), rtol=1e-6)
    assert np.isfinite(float(F.gaussian_mi_from_r2(1.0)))


def test_mutual_information_multivariate_is_tc_difference():
    rng = np.random.default_rng(9)
    z = rng.normal(size=(5000, 5)) @ rng.normal(size=(5, 5))
    x, y = z[:, :2], z[:, 2:]
    c = np.corrcoef(z, rowvar=False)
    ref = 0.5 * (
        np.linalg.slogdet(c[:2, :2])[1] + np.linalg.slogdet(c[2:, 2:])[1] - np.linalg.slogdet(c)[1]
    )
    np.testing.assert_allclose(F.gaussian_mutual_information(x, y, shrinkage=0.0), ref, rtol=1e-3)


def test_prop6_bounds_and_extremes():
    d = 8
    rng = np.random.default_rng(10)
    q, _ = np.linalg.qr(rng.normal(size=(64, d)))
    q = q - q.mean(0)  # exactly uniform spectrum needs centred orthogonal columns
    q, _ = np.linalg.qr(q)
    iso = jnp.asarray(q * 5.0)
    np.testing.assert_allclose(F.spectral_redundancy(iso), 0.0, atol=1e-4)
    np.testing.assert_allclose(F.effective_rank(iso), d, rtol=1e-4)
    collapsed = jnp.asarray(np.outer(rng.normal(size=64), rng.normal(size=d)), jnp.float32)
    np.testing.assert_allclose(F.spectral_redundancy(collapsed), 1 - 1 / d, atol=1e-5)
    for seed in range(5):
        x = np.random.default_rng(seed).normal(size=(30, d)) @ np.diag(np.geomspace(1, 100, d))
        r = float(F.spectral_redundancy(jnp.asarray(x, jnp.float32)))
        assert 0 <= r <= 1 - 1 / d
        lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
        p = lam / lam.sum()
        np.testing.assert_allclose(r, 1 - np.exp(-np.sum(p * np.log(p))) / d, rtol=1e-4)


def test_head_redundancy_reference_and_extremes():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(2, 4, 6, 6))
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = np.asarray(F.head_redundancy(jnp.asarray(attn)))
    for b in range(2):
        total = 0.0
        for h in range(4):
            for g in range(4):
                if h != g:
                    a, c = attn[b, h].ravel(), attn[b, g].ravel()
                    total += (a @ c) ** 2 / ((a @ a) * (c @ c))
        np.testing.assert_allclose(got[b], total / 12, rtol=1e-5)
    assert np.all((got >= 0) & (got <= 1))
    same = np.broadcast_to(attn[0, :1], (4, 6, 6))
    np.testing.assert_allclose(F.head_redundancy(jnp.asarray(same)), 1.0, rtol=1e-6)


def test_renyi_family_relations():
    joint = jnp.asarray([[0.3, 0.1, 0.05], [0.05, 0.2, 0.3]])
    np.testing.assert_allclose(
        F.f_redundancy(joint, F.renyi(2.0)), F.f_redundancy(joint, "pearson_chi2"), rtol=1e-6
    )
    np.testing.assert_allclose(
        F.f_redundancy(joint, F.renyi(0.5)) / 2,
        F.f_redundancy(joint, "squared_hellinger"),
        rtol=1e-6,
    )
    near_one = F.f_redundancy(joint, F.renyi(1.0001))
    np.testing.assert_allclose(near_one, F.f_redundancy(joint, "kl"), rtol=1e-3)
    # Renyi divergence of order alpha by its definition 1/(a-1) log sum p^a q^(1-a).
    q = F.product_of_marginals(joint)
    ref = np.log(np.sum(np.asarray(joint) ** 3 * np.asarray(q) ** -2)) / 2
    np.testing.assert_allclose(
        F.renyi_divergence(F.f_redundancy(joint, F.renyi(3.0)), 3.0), ref, rtol=1e-5
    )
    assert F.get_kernel("renyi(2)").alpha == 2.0


@pytest.mark.parametrize("kernel", ALL_KERNELS, ids=lambda k: getattr(k, "name", k))
def test_conjugates_match_numerical_supremum(kernel):
    """f*(s) = sup_t (s t - f(t)) on a dense grid; Fenchel-Young s t <= f(t) + f*(s)."""
    kern = F.get_kernel(kernel)
    t = np.concatenate([np.geomspace(1e-8, 1e-2, 2000), np.linspace(1e-2, 60, 200_000)])
    ft = np.asarray(kern.f(jnp.asarray(t, jnp.float32)), np.float64)
    for s in np.linspace(-3, 0.3, 23):
        conj = float(kern.conjugate(jnp.asarray(s, jnp.float32)))
        sup = np.max(s * t - ft)
        if np.isinf(conj):
            assert sup > 5, (s, sup)  # unbounded: the grid supremum keeps growing
            continue
        np.testing.assert_allclose(conj, sup, atol=2e-3, rtol=2e-3)
        assert np.all(s * t <= ft + conj + 1e-6)
