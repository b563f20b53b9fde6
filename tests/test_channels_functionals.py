"""Two-axis channel functionals against closed forms and brute force (Safaai et al., eqs. 1-5, 13)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redundax.functionals import channels as ch

jax.config.update("jax_enable_x64", False)


def exact_gaussian(cov, n=400, seed=0):
    """Samples whose sample covariance (ddof=1) equals `cov` exactly (whiten, then recolour)."""
    rng = np.random.default_rng(seed)
    d = cov.shape[0]
    z = rng.normal(size=(n, d))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return z @ np.linalg.cholesky(cov).T


def random_cov(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.3 * np.eye(d)


def g(rho):
    return -0.5 * np.log(1 - rho**2)


def corr_of(cov):
    s = np.sqrt(np.diag(cov))
    return cov / np.outer(s, s)


def r2_lstsq(x, t):
    xa = np.column_stack([x, np.ones(len(t))])
    beta, *_ = np.linalg.lstsq(xa, t, rcond=None)
    res = t - xa @ beta
    return 1 - res.var() / t.var()


def test_input_capture_closed_form():
    rng = np.random.default_rng(1)
    k, c = 12, 7
    cov = random_cov(k, 2)
    w = rng.normal(size=(c, k))
    s = np.array([w[i] @ cov @ w[i] for i in range(c)])
    sigma0 = np.median(s)
    got = ch.input_capture(w, cov)
    np.testing.assert_allclose(got, 0.5 * np.log(1 + s / sigma0), rtol=1e-5)
    # the median channel sits at 1/2 log 2; an explicit noise variance is honoured
    assert np.isclose(np.median(np.asarray(got)), 0.5 * np.log(2), rtol=1e-5)
    np.testing.assert_allclose(ch.input_capture(w, cov, 2.0), 0.5 * np.log(1 + s / 2.0), rtol=1e-5)
    # per-channel covariances (depthwise) give the per-channel quadratic forms
    covs = np.stack([random_cov(k, 10 + i) for i in range(c)])
    s_dw = np.array([w[i] @ covs[i] @ w[i] for i in range(c)])
    np.testing.assert_allclose(ch.signal_power(w, covs), s_dw, rtol=1e-5)


def test_input_capture_is_output_variance():
    """s_i = w_i^T Sigma_X w_i equals Var(Y_i) for Y = X W (second algorithm)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 9)) @ rng.normal(size=(9, 9))
    w = rng.normal(size=(4, 9))
    cov = np.cov(x, rowvar=False)
    np.testing.assert_allclose(ch.signal_power(w, cov), (x @ w.T).var(0, ddof=1), rtol=1e-4)


def test_peer_overlap_closed_form():
    cov = random_cov(6, 4)
    y = exact_gaussian(cov)
    rho = corr_of(cov)
    want = np.array([np.mean([g(rho[i, j]) for j in range(6) if j != i]) for i in range(6)])
    np.testing.assert_allclose(ch.peer_overlap(y), want, rtol=1e-4, atol=1e-6)


def joint_cov(d, seed):
    """Covariance of (Y_1..Y_d, T)."""
    return random_cov(d + 1, seed)


def test_target_axis_closed_forms():
    d, m = 7, 3
    cov = joint_cov(d, 5)
    yt = exact_gaussian(cov, n=300, seed=1)
    y, t = yt[:, :d], yt[:, d]
    rho = corr_of(cov)
    mi = g(rho[:d, d])
    np.testing.assert_allclose(ch.task_mutual_information(y, t), mi, rtol=1e-4)

    # Red_T: min rule over the top-m partners by singleton task MI (eq. 4)
    red = []
    for i in range(d):
        partners = sorted((j for j in range(d) if j != i), key=lambda j: -mi[j])[:m]
        red.append(np.mean([min(mi[i], mi[j]) for j in partners]))
    np.testing.assert_allclose(ch.mmi_redundancy(y, t, m=m), red, rtol=1e-4)

    # Syn from regression R² (eqs. 5, 9), via least squares on the samples
    syn = []
    for i in range(d):
        partners = sorted((j for j in range(d) if j != i), key=lambda j: -mi[j])[:m]
        vals = []
        for j in partners:
            joint = -0.5 * np.log(1 - r2_lstsq(y[:, [i, j]], t))
            vals.append(joint - max(mi[i], mi[j]))
        syn.append(np.mean(vals))
    np.testing.assert_allclose(ch.pairwise_synergy(y, t, m=m), syn, rtol=1e-3, atol=1e-6)


def test_m_is_capped_at_n_minus_1():
    cov = joint_cov(3, 6)
    yt = exact_gaussian(cov)
    y, t = yt[:, :3], yt[:, 3]
    np.testing.assert_allclose(ch.mmi_redundancy(y, t, m=10), ch.mmi_redundancy(y, t, m=2))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 6))
def test_redundancy_collapse_lemma1(seed, d):
    """Red_T depends on singleton task MIs only (Lemma 1): channel-channel correlation is invisible."""
    cov = joint_cov(d, seed)
    yt = exact_gaussian(cov, n=50, seed=seed)
    y, t = yt[:, :d], yt[:, d]
    mi = ch.task_mutual_information(y, t)
    red = ch.mmi_redundancy(y, t, m=2)
    assert np.all(np.asarray(red) <= np.asarray(mi) + 1e-6)  # min rule bounds Red_T by I(T;Y_i)
    np.testing.assert_allclose(red, ch.mmi_redundancy_from_task_mi(mi, m=2), rtol=1e-6)


def test_duplicated_channel_maximal_overlap_and_unit_hull():
    rng = np.random.default_rng(7)
    y = rng.normal(size=(2000, 6)) @ rng.normal(size=(6, 6)) * 0.3 + rng.normal(size=(2000, 6))
    y = np.column_stack([y, y[:, 2]])  # channel 6 duplicates channel 2
    r = np.asarray(ch.peer_overlap(y))
    assert set(np.argsort(-r)[:2]) == {2, 6}
    cap_term = -0.5 * np.log(1e-6) / 6  # the clipped duplicate term, shared over N-1 = 6 peers
    assert r[6] > cap_term and np.isfinite(r).all()
    corr = np.corrcoef(y, rowvar=False)
    hulls = ch.greedy_hulls(corr)
    assert int(hulls.size[6]) == 1 and int(hulls.members[6, 0]) == 2
    assert int(hulls.size[2]) == 1 and int(hulls.members[2, 0]) == 6
    assert float(hulls.e_full[6]) > 0.999
    # duplicated channels give large but finite MI (the documented clip) and finite gradients
    t = y[:, 2] + 0.0
    assert np.isclose(float(ch.task_mutual_information(y, t)[2]), -0.5 * np.log(1e-6), rtol=1e-3)
    grad = jax.grad(lambda z: jnp.sum(ch.peer_overlap(z)) + jnp.sum(ch.pairwise_synergy(z, t)))(
        jnp.asarray(y)
    )
    assert np.isfinite(np.asarray(grad)).all()


def brute_explanation(corr, i, s):
    s = list(s)
    if not s:
        return 0.0
    c = corr[np.ix_(s, s)] + 1e-6 * np.eye(len(s))
    r = corr[i, s]
    return float(np.clip(r @ np.linalg.solve(c, r), 0, 1))


@pytest.mark.parametrize("pool", [None, 4])
def test_greedy_hulls_match_direct_greedy(pool):
    rng = np.random.default_rng(11)
    n = 8
    y = rng.normal(size=(300, 5)) @ rng.normal(size=(5, n)) + 0.4 * rng.normal(size=(300, n))
    corr = np.corrcoef(y, rowvar=False)
    eps, cap = 0.05, 4
    hulls = ch.greedy_hulls(corr, eps=eps, cap=cap, pool=pool)
    for i in range(n):
        peers = [j for j in np.argsort(-np.abs(corr[i])) if j != i]
        peers = peers if pool is None else peers[:pool]
        e_full = brute_explanation(corr, i, peers)
        assert np.isclose(float(hulls.e_full[i]), e_full, atol=1e-4)
        chosen = []
        size = cap
        for k in range(1, cap + 1):
            best = max(
                (j for j in peers if j not in chosen),
                key=lambda j: brute_explanation(corr, i, [*chosen, j]),
            )
            chosen.append(best)
            if brute_explanation(corr, i, chosen) >= (1 - eps) * e_full:
                size = k
                break
        assert int(hulls.size[i]) == size, i
        np.testing.assert_array_equal(np.asarray(hulls.members[i, :size]), chosen[:size])
        assert np.isclose(
            float(hulls.e_hull[i]), brute_explanation(corr, i, chosen[:size]), atol=1e-4
        )
    np.testing.assert_allclose(
        ch.compact_hull_score(hulls.e_full, hulls.size),
        np.asarray(hulls.e_full) / np.maximum(1, np.asarray(hulls.size)),
        rtol=1e-6,
    )


def test_full_peer_explanation_is_regression_r2():
    rng = np.random.default_rng(12)
    y = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6)) + rng.normal(size=(400, 6))
    corr = np.corrcoef(y, rowvar=False)
    want = [r2_lstsq(np.delete(y, i, axis=1), y[:, i]) for i in range(6)]
    np.testing.assert_allclose(ch.full_peer_explanation(corr), want, atol=1e-4)
    assert np.isclose(
        float(ch.peer_explanation(corr, 0, [1, 2])), r2_lstsq(y[:, [1, 2]], y[:, 0]), atol=1e-4
    )


def test_triplet_excess_brute_force():
    d = 5
    cov = joint_cov(d, 13)
    yt = exact_gaussian(cov, n=200, seed=2)
    y, t = yt[:, :d], yt[:, d]
    c = np.corrcoef(yt, rowvar=False)
    res = ch.triplet_excess_from_corr(jnp.asarray(c[:d, :d]), jnp.asarray(c[:d, d]), top=24)
    info = lambda s: -0.5 * np.log(1 - r2_lstsq(y[:, list(s)], t))
    s3, s2 = [], []
    for tri in itertools.combinations(range(d), 3):
        pair = max(info(p) for p in itertools.combinations(tri, 2))
        s3.append(max(info(tri) - pair, 0.0))
        s2.append(pair - max(info([k]) for k in tri))
    assert res.num_triplets == 10
    np.testing.assert_allclose(float(res.s3), np.mean(s3), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(float(res.s2), np.mean(s2), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(float(res.ratio), np.mean(s3) / np.mean(s2), rtol=2e-3)


def test_synergy_graph_classic_xor_like_gaussian():
    """T = Y1 + Y2 with independent Y1, Y2: each alone gives 1/2 log 2, jointly R² -> 1."""
    y = exact_gaussian(np.eye(2), n=100)
    t = y[:, 0] + y[:, 1] + 1e-2 * exact_gaussian(np.eye(1), n=100, seed=3)[:, 0]
    s = np.asarray(ch.synergy_graph_from_corr(*_split(np.corrcoef(np.column_stack([y, t]).T))))
    r2 = r2_lstsq(y, t)
    want = -0.5 * np.log(1 - r2) - g(np.corrcoef(y[:, 0], t)[0, 1])
    assert np.isclose(s[0, 1], want, rtol=1e-3) and s[0, 0] == 0


def _split(c):
    return jnp.asarray(c[:-1, :-1]), jnp.asarray(c[:-1, -1])


def test_modularity_formula_and_greedy():
    rng = np.random.default_rng(0)
    a = rng.random((7, 7))
    a = np.triu(a, 1)
    a = a + a.T
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    two_m = a.sum()
    k = a.sum(1)
    q = (
        sum(
            a[i, j] - k[i] * k[j] / two_m
            for i in range(7)
            for j in range(7)
            if labels[i] == labels[j]
        )
        / two_m
    )
    assert np.isclose(ch.modularity(a, labels), q)
    # two 4-cliques joined by one weak edge: greedy finds them, and Q equals the brute-force optimum
    b = np.zeros((8, 8))
    b[:4, :4] = 1
    b[4:, 4:] = 1
    np.fill_diagonal(b, 0)
    b[3, 4] = b[4, 3] = 0.1
    q_greedy, lab = ch.greedy_modularity(b)
    assert len(set(lab[:4])) == 1 and len(set(lab[4:])) == 1 and lab[0] != lab[4]
    best = max(ch.modularity(b, np.array(p)) for p in itertools.product(range(3), repeat=8))
    assert np.isclose(q_greedy, best)


def test_top_edge_graph_keeps_fraction():
    w = np.arange(36, dtype=float).reshape(6, 6)
    w = w + w.T
    kept = ch.top_edge_graph(w, 0.2)
    assert np.count_nonzero(np.triu(kept, 1)) == 3  # ceil(0.2 * 15)
    assert np.allclose(kept, kept.T)
    assert np.triu(kept, 1).max() == np.triu(w, 1).max()


def test_weight_routed_metric_loop():
    rng = np.random.default_rng(1)
    kern = rng.normal(size=(3, 3, 5, 4))
    m = rng.random(5)
    want = []
    for j in range(4):
        nrm = np.array([np.linalg.norm(kern[:, :, i, j]) for i in range(5)])
        want.append(nrm @ m / nrm.sum())
    np.testing.assert_allclose(ch.weight_routed_metric(kern, m), want, rtol=1e-5)


def test_jit_and_bad_input():
    y = jnp.asarray(np.random.default_rng(0).normal(size=(50, 4)))
    t = y[:, 0]
    f = jax.jit(lambda y, t: ch.pairwise_synergy(y, t, m=2))
    np.testing.assert_allclose(f(y, t), ch.pairwise_synergy(y, t, m=2), rtol=1e-5)
    with pytest.raises(ValueError, match="`t`"):
        ch.task_mutual_information(y, t[:10])
    with pytest.raises(ValueError, match="`m`"):
        ch.mmi_redundancy(y, t, m=0)
    with pytest.raises(ValueError, match="`cov_x`"):
        ch.input_capture(np.ones((3, 4)), np.eye(5))
    with pytest.raises(ValueError, match="`noise_var`"):
        ch.input_capture(np.ones((3, 4)), np.eye(4), noise_var=0.0)
    with pytest.raises(ValueError, match="`y`"):
        ch.peer_overlap(np.ones(5))
