"""Entropy rate and redundancy score (Liang, 2025): eq. 25, Theorems 1-2, the space-time form.

References: a plain float64 NumPy transcription of eq. 25 (double loop over batches and pairs),
closed forms (affine layers give cos^2 = 1, orthogonal differences give 0, linear-Gaussian stacks
give exact conditional entropies), float64 NumPy eigenvalues for tr A and ln det(I - A), and
least-squares projections for the space-time form.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redundax.functionals import entropy_rate as er

FAST = settings(max_examples=12, deadline=None)  # every new shape compiles


def numpy_eq25(hidden: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Eq. 25 written out: R_l = 1/(2 M (B-1)) sum_m sum_i cos^2(dz_l, dz_{l-1}); 0 for zero dz."""
    h = np.asarray(hidden, np.float64)
    n = h.shape[1]
    b = n if batch_size is None else batch_size
    m = n // b
    out = np.zeros(h.shape[0] - 1)
    for layer in range(1, h.shape[0]):
        total = 0.0
        for bm in range(m):
            for i in range(b - 1):
                j = bm * b + i
                u = h[layer, j + 1] - h[layer, j]
                v = h[layer - 1, j + 1] - h[layer - 1, j]
                den = np.dot(u, u) * np.dot(v, v)
                total += np.dot(u, v) ** 2 / den if den > 0 else 0.0
        out[layer - 1] = total / (2 * m * (b - 1))
    return out


@st.composite
def hidden_states(draw, max_layers=5, max_b=9, max_d=7):
    num = draw(st.integers(2, max_layers))
    b = draw(st.integers(2, max_b))
    d = draw(st.integers(1, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-2, 1.0, 30.0]))
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(num, b, d)) * scale
    # correlated layers, as in a residual network
    for layer in range(1, num):
        h[layer] = 0.7 * h[layer - 1] + 0.5 * h[layer]
    return h.astype(np.float32)


# ------------------------------------------------------------------------------------- eq. 25


@FAST
@given(hidden_states())
def test_scores_match_numpy_eq25(h):
    got = np.asarray(er.layer_redundancy_scores(h))
    np.testing.assert_allclose(got, numpy_eq25(h), rtol=2e-5, atol=2e-6)
    assert np.all(got >= 0) and np.all(got <= 0.5)


@FAST
@given(st.sampled_from([2, 3]), st.sampled_from([2, 5]), st.integers(0, 2**31 - 1))
def test_streaming_equals_one_shot(m, b, seed):
    d = 3
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(4, m * b, d)).astype(np.float32)
    one_shot = np.asarray(er.layer_redundancy_scores(h, batch_size=b))
    acc = er.RedundancyAccumulator.zeros(3)
    for i in range(m):
        acc = acc.update(h[:, i * b : (i + 1) * b])
    np.testing.assert_allclose(np.asarray(acc.scores()), one_shot, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(one_shot, numpy_eq25(h, b), rtol=2e-5, atol=2e-6)
    assert float(acc.num_pairs) == m * (b - 1)
    # merging in another order (e.g. across devices) gives the same sums
    parts = [er.RedundancyAccumulator.from_hidden(h[:, i * b : (i + 1) * b]) for i in range(m)]
    merged = parts[-1]
    for p in reversed(parts[:-1]):
        merged = merged.merge(p)
    np.testing.assert_allclose(np.asarray(merged.scores()), one_shot, rtol=1e-5, atol=1e-7)


def test_accumulator_under_jit_and_scan():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 3, 8, 4)).astype(np.float32)  # (L+1, M, B, d)

    def body(acc, batch):
        return acc.merge(er.RedundancyAccumulator.from_hidden(batch)), None

    acc, _ = jax.jit(lambda x: jax.lax.scan(body, er.RedundancyAccumulator.zeros(4), x))(
        jnp.moveaxis(h, 1, 0)
    )
    np.testing.assert_allclose(
        np.asarray(acc.scores()), numpy_eq25(h.reshape(5, 24, 4), 8), rtol=2e-5
    )


@FAST
@given(hidden_states(), st.integers(0, 2**31 - 1))
def test_scale_translation_rotation_invariance(h, seed):
    """cos^2 of differences: invariant to a positive or negative scale and a shift of each layer,
    and to one orthogonal map applied to every layer."""
    rng = np.random.default_rng(seed)
    num, _, d = h.shape
    scales = rng.choice([-1.0, 1.0], size=num) * 10.0 ** rng.uniform(-2, 2, size=num)
    shifts = rng.normal(size=(num, 1, d)) * 5 * np.abs(scales[:, None, None]) * np.std(h)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ref = np.asarray(er.layer_redundancy_scores(h))
    h2 = (h * scales[:, None, None] + shifts).astype(np.float32)
    np.testing.assert_allclose(np.asarray(er.layer_redundancy_scores(h2)), ref, atol=2e-4)
    h3 = (h @ q).astype(np.float32)
    np.testing.assert_allclose(np.asarray(er.layer_redundancy_scores(h3)), ref, atol=2e-5)


def test_closed_forms():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6))
    affine = np.stack([x, 3.0 * x + 1.0, -0.5 * x + 2.0]).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(er.layer_redundancy_scores(affine)), [0.5, 0.5], atol=1e-6
    )
    # layer 1 moves only in coordinates 0..2, layer 0 only in 3..5: orthogonal differences
    a = np.zeros((16, 6))
    b = np.zeros((16, 6))
    a[:, 3:] = rng.normal(size=(16, 3))
    b[:, :3] = rng.normal(size=(16, 3))
    ortho = np.stack([a, b]).astype(np.float32)
    np.testing.assert_allclose(np.asarray(er.layer_redundancy_scores(ortho)), [0.0], atol=1e-7)


def test_zero_difference_convention():
    """A repeated sample contributes cos^2 = 0 and still counts in M (B - 1)."""
    rng = np.random.default_rng(2)
    h = rng.normal(size=(3, 6, 4)).astype(np.float32)
    h[:, 3] = h[:, 2]  # sample 3 repeats sample 2 at every layer -> pair (2, 3) has dz = 0
    got = np.asarray(er.layer_redundancy_scores(h))
    np.testing.assert_allclose(got, numpy_eq25(h), rtol=1e-5)
    # the same batch without the repeat has the same 4 nonzero pairs ((2,3)+(3,4) of the original
    # become (2,3) of the shorter batch), normalised by 2 * 4 instead of 2 * 5
    keep = np.delete(h, 3, axis=1)
    np.testing.assert_allclose(got, numpy_eq25(keep) * 4 / 5, rtol=1e-4)
    # all samples identical: every pair is zero, the score is 0 with finite gradients
    same = np.repeat(h[:, :1], 5, axis=1)
    np.testing.assert_array_equal(np.asarray(er.layer_redundancy_scores(same)), [0.0, 0.0])
    grad = jax.grad(lambda x: jnp.sum(er.layer_redundancy_scores(x)))(jnp.asarray(same))
    assert bool(jnp.all(jnp.isfinite(grad)))
    grad = jax.grad(lambda x: jnp.sum(er.layer_redundancy_scores(x)))(jnp.asarray(h))
    assert bool(jnp.all(jnp.isfinite(grad)))
    # round-off-level differences (relative 1e-7) also count as zero
    tiny = h.copy()
    tiny[:, 3] = tiny[:, 2] * (1 + 1e-7)
    np.testing.assert_allclose(np.asarray(er.layer_redundancy_scores(tiny)), got, atol=1e-6)


@FAST
@given(st.sampled_from([2, 4]), st.sampled_from([3, 5]), st.integers(0, 2**31 - 1))
def test_token_pooling(b, t, seed):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(3, b, t, 4)).astype(np.float32)
    lengths = rng.integers(1, t + 1, size=b)
    mask = (np.arange(t)[None, :] < lengths[:, None]).astype(np.int32)
    pooled = (h * mask[None, :, :, None]).sum(2) / mask.sum(1)[None, :, None]
    got = np.asarray(er.layer_redundancy_scores(h, mask))
    np.testing.assert_allclose(got, numpy_eq25(pooled), rtol=1e-4, atol=1e-6)
    # values at padded positions do not matter
    h2 = np.where(mask[None, :, :, None] > 0, h, 1e3).astype(np.float32)
    np.testing.assert_allclose(np.asarray(er.layer_redundancy_scores(h2, mask)), got, atol=1e-5)
    first = np.asarray(er.layer_redundancy_scores(h, pooling="first"))
    np.testing.assert_allclose(first, numpy_eq25(h[:, :, 0]), rtol=1e-4, atol=1e-6)
    flat = np.asarray(er.layer_redundancy_scores(h, pooling="tokens"))
    np.testing.assert_allclose(flat, numpy_eq25(h.reshape(3, b * t, 4)), rtol=1e-4, atol=1e-6)
    # tokens with a mask: only pairs of two unmasked consecutive tokens, normalised by their count
    hf = h.reshape(3, b * t, 4).astype(np.float64)
    mf = mask.reshape(-1)
    ref = []
    for layer in (1, 2):
        tot, cnt = 0.0, 0
        for k in range(b * t - 1):
            if mf[k] and mf[k + 1]:
                u, v = hf[layer, k + 1] - hf[layer, k], hf[layer - 1, k + 1] - hf[layer - 1, k]
                tot += np.dot(u, v) ** 2 / (np.dot(u, u) * np.dot(v, v))
                cnt += 1
        ref.append(tot / (2 * max(cnt, 1)))
    got_tok = np.asarray(er.layer_redundancy_scores(h, mask, pooling="tokens"))
    np.testing.assert_allclose(got_tok, ref, rtol=1e-4, atol=1e-6)


def test_theorem2_entropy_rate_constant():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(4, 10, 5)).astype(np.float32)
    sigma2 = 0.37
    c = 5 / 2 * math.log(2 * math.pi * math.e * sigma2)
    got = np.asarray(er.cosine_entropy_rates(h, sigma2=sigma2))
    np.testing.assert_allclose(got, c - numpy_eq25(h), rtol=1e-6)
    acc = er.RedundancyAccumulator.from_hidden(h)
    np.testing.assert_allclose(np.asarray(acc.entropy_rates(5, sigma2)), got, rtol=1e-6)
    # rankings: lower entropy rate <=> higher redundancy (App. D, eqs. 61-62)
    assert list(np.argsort(got)) == list(np.argsort(-numpy_eq25(h)))


def test_bad_inputs_raise():
    h = np.zeros((3, 4, 2), np.float32)
    with pytest.raises(ValueError, match="hidden"):
        er.layer_redundancy_scores(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="B >= 2"):
        er.layer_redundancy_scores(np.zeros((3, 1, 2)))
    with pytest.raises(ValueError, match="L\\+1 >= 2"):
        er.layer_redundancy_scores(np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="pooling"):
        er.layer_redundancy_scores(h, pooling="max")
    with pytest.raises(ValueError, match="mask"):
        er.layer_redundancy_scores(np.zeros((3, 4, 5, 2)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="batch_size"):
        er.layer_redundancy_scores(h, batch_size=3)
    with pytest.raises(ValueError, match="NaN"):
        er.layer_redundancy_scores(np.full((3, 4, 2), np.nan))
    with pytest.raises(ValueError, match="sigma2"):
        er.gaussian_entropy_constant(4, 0.0)
    with pytest.raises(ValueError, match="previous"):
        er.spacetime_redundancy_scores(h, h[:, :3])


# ------------------------------------------------------------------------- space-time form


def _proj_r2(u, a, b):
    basis = np.stack([a, b], axis=1)
    coef, *_ = np.linalg.lstsq(basis, u, rcond=None)
    p = basis @ coef
    return float(np.dot(p, p) / np.dot(u, u))


@FAST
@given(st.sampled_from([3, 6]), st.sampled_from([2, 5]), st.integers(0, 2**31 - 1))
def test_spacetime_projection_matches_least_squares(b, d, seed):
    rng = np.random.default_rng(seed)
    new = rng.normal(size=(3, b, d)).astype(np.float32)
    old = rng.normal(size=(3, b, d)).astype(np.float32)
    got = np.asarray(er.spacetime_redundancy_scores(new, old))
    ref = []
    for layer in (1, 2):
        vals = []
        for i in range(b - 1):
            u = (new[layer, i + 1] - new[layer, i]).astype(np.float64)
            a = (new[layer - 1, i + 1] - new[layer - 1, i]).astype(np.float64)
            c = (old[layer, i + 1] - old[layer, i]).astype(np.float64)
            vals.append(_proj_r2(u, a, c) if d >= 2 else min(1.0, _proj_r2(u, a, c)))
        ref.append(np.sum(vals) / (2 * (b - 1)))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)
    spatial = np.asarray(er.layer_redundancy_scores(new))
    summed = np.asarray(er.spacetime_redundancy_scores(new, old, combine="sum"))
    assert np.all(got >= spatial - 1e-6) and np.all(got <= 0.5 + 1e-6)
    assert np.all(summed >= spatial - 1e-6) and np.all(summed <= 1.0 + 1e-6)


def test_spacetime_closed_forms():
    rng = np.random.default_rng(4)
    new = rng.normal(size=(3, 7, 5)).astype(np.float32)
    # the earlier checkpoint equals the later one: u is one of the conditioning changes
    np.testing.assert_allclose(
        np.asarray(er.spacetime_redundancy_scores(new, new)), [0.5, 0.5], atol=1e-6
    )
    # old differences parallel to the spatial ones: reduces to eq. 25
    old = np.concatenate([new[:1], 2.0 * new[:2]])  # old[l] = 2 new[l-1] for l >= 1
    np.testing.assert_allclose(
        np.asarray(er.spacetime_redundancy_scores(new, old.astype(np.float32))),
        numpy_eq25(new),
        rtol=1e-4,
    )
    # orthogonal conditioning changes: projection = sum of the two cos^2
    a = np.zeros((3, 7, 6))
    o = np.zeros((3, 7, 6))
    a[..., :3] = rng.normal(size=(3, 7, 3))
    o[..., 3:] = rng.normal(size=(3, 7, 3))
    a[1:] += o[1:]  # layer l at t+1 moves in both subspaces
    proj = er.spacetime_redundancy_scores(a.astype(np.float32), o.astype(np.float32))
    summed = er.spacetime_redundancy_scores(
        a.astype(np.float32), o.astype(np.float32), combine="sum"
    )
    np.testing.assert_allclose(np.asarray(proj)[0], np.asarray(summed)[0], rtol=1e-4)


# ------------------------------------------------------------------------------- Theorem 1


def _exact_linear_gaussian(j_u, j_v, sigma2):
    """H(u | v) of u = J_u x, v = J_v x, x ~ N(0, sigma2 I) by the chain rule H(u, v) - H(v)."""
    j = np.concatenate([j_u, j_v]).astype(np.float64)
    joint = sigma2 * j @ j.T
    d_u = j_u.shape[0]
    _, ld_joint = np.linalg.slogdet(joint)
    _, ld_v = np.linalg.slogdet(joint[d_u:, d_u:])
    return 0.5 * d_u * math.log(2 * math.pi * math.e) + 0.5 * (ld_joint - ld_v)


def test_theorem1_spatial_chain_closed_form():
    """z1 = W1 z0 + n1, z2 = W2 z1 + s n2: H(z2 | z1) = d/2 ln(2 pi e s^2 sigma^2) exactly."""
    rng = np.random.default_rng(5)
    d, s, sigma2 = 4, 0.6, 0.8
    w1, w2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))

    def fn(x):
        z0, n1, n2 = x[:d], x[d : 2 * d], x[2 * d :]
        z1 = w1 @ z0 + n1
        return w2 @ z1 + s * n2, z1

    res = er.first_order_entropy_rate(fn, jnp.zeros(3 * d), sigma2=sigma2, ridge=1e-7)
    exact = d / 2 * math.log(2 * math.pi * math.e * s * s * sigma2)
    assert abs(float(res.gaussian) - exact) < 2e-3
    j_u = np.concatenate([w2 @ w1, w2, s * np.eye(d)], axis=1)
    j_v = np.concatenate([w1, np.eye(d), np.zeros((d, d))], axis=1)
    assert abs(_exact_linear_gaussian(j_u, j_v, sigma2) - exact) < 1e-9


def test_theorem1_spacetime_linear_stack():
    """v = (X_l^{t+1}, X_{l+1}^t), u = A X_l^{t+1} + B X_{l+1}^t + C e: H(u|v) = ln det of C C^T."""
    rng = np.random.default_rng(6)
    d, sigma2 = 3, 1.3
    p_, a_, b_, c_ = (rng.normal(size=(d, d)) for _ in range(4))

    def fn(x):
        xl, xn, e1, e2 = x[:d], x[d : 2 * d], x[2 * d : 3 * d], x[3 * d :]
        v1 = p_ @ xl + e1  # X_l^{t+1}
        v2 = xn  # X_{l+1}^t (a coordinate of the expansion point)
        return a_ @ v1 + b_ @ v2 + c_ @ e2, (v1, v2)

    res = er.first_order_entropy_rate(fn, jnp.zeros(4 * d), sigma2=sigma2, ridge=1e-7)
    exact = (
        0.5 * d * math.log(2 * math.pi * math.e) + 0.5 * np.linalg.slogdet(sigma2 * c_ @ c_.T)[1]
    )
    assert abs(float(res.gaussian) - exact) < 5e-3


@FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(0.05, 1.0))
def test_theorem1_trace_and_logdet_match_numpy(d_u, d_v, seed, coupling):
    rng = np.random.default_rng(seed)
    p = d_u + d_v + 2
    j_v = rng.normal(size=(d_v, p))
    j_u = coupling * rng.normal(size=(d_u, d_v)) @ j_v + rng.normal(size=(d_u, p))
    sigma2, ridge = 0.5, 1e-6
    res = er.first_order_conditional_entropy(
        j_u.astype(np.float32), j_v.astype(np.float32), sigma2=sigma2, ridge=ridge
    )
    s_uu = sigma2 * j_u @ j_u.T
    s_vv = sigma2 * j_v @ j_v.T
    s_uv = sigma2 * j_u @ j_v.T
    s_uu += ridge * np.trace(s_uu) / d_u * np.eye(d_u)
    s_vv += ridge * np.trace(s_vv) / d_v * np.eye(d_v)
    lam = np.linalg.eigvals(np.linalg.solve(s_uu, s_uv @ np.linalg.solve(s_vv, s_uv.T))).real
    np.testing.assert_allclose(float(res.trace_a), lam.sum(), rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(
        float(res.logdet_i_minus_a), np.sum(np.log1p(-lam)), rtol=5e-3, atol=5e-3
    )
    # eq. 15 vs eq. 36: first order = d/2 ln(2 pi e sigma^2) - tr A / 2
    c = d_u / 2 * math.log(2 * math.pi * math.e * sigma2)
    np.testing.assert_allclose(float(res.first_order), c - lam.sum() / 2, rtol=1e-3, atol=1e-3)
    # eq. 34: ln det S_{u|v} = ln det S_uu + ln det(I - A)
    gaussian = 0.5 * d_u * math.log(2 * math.pi * math.e) + 0.5 * (
        np.linalg.slogdet(s_uu)[1] + np.sum(np.log1p(-lam))
    )
    np.testing.assert_allclose(float(res.gaussian), gaussian, rtol=2e-3, atol=5e-3)
    # eq. 38's error: 0 <= -(ln det(I - A) + tr A) <= sum lam^2 / (2 (1 - lam_max))
    gap = -(np.sum(np.log1p(-lam)) + lam.sum())
    assert -1e-9 <= gap <= np.sum(lam**2) / (2 * (1 - lam.max())) + 1e-9


def test_theorem1_weak_coupling_first_order_is_accurate():
    """When v is weakly informative, ln det(I - A) ~= -tr A (eq. 38) and eq. 15 + the Jacobian term
    of eq. 37 recovers the exact conditional entropy."""
    rng = np.random.default_rng(7)
    d, p, sigma2 = 3, 8, 1.0
    j_v = rng.normal(size=(2, p))
    q, _ = np.linalg.qr(j_v.T)  # orthonormal basis of v's row space
    free = rng.normal(size=(d, p))
    free -= free @ q @ q.T  # the part of u that v cannot explain
    j_u = 0.05 * rng.normal(size=(d, 2)) @ j_v + free
    res = er.first_order_conditional_entropy(j_u, j_v, sigma2=sigma2, ridge=1e-7)
    exact = _exact_linear_gaussian(j_u, j_v, sigma2)
    jac_term = 0.5 * np.linalg.slogdet(j_u @ j_u.T)[1]  # eq. 37, absorbed into the constant
    assert float(res.trace_a) < 0.05
    assert abs(float(res.first_order) + jac_term - exact) < 2e-3
    assert abs(float(res.gaussian) - exact) < 2e-3


def test_theorem1_paper_blocks_are_degenerate():
    """Eqs. 18-19 literally (J_v = [J_l; J_{l+1}], containing J_u): u is a function of v, tr A = d."""
    rng = np.random.default_rng(8)
    j_l, j_next = rng.normal(size=(3, 9)), rng.normal(size=(3, 9))
    res = er.first_order_conditional_entropy(j_next, np.concatenate([j_l, j_next]), ridge=1e-6)
    assert abs(float(res.trace_a) - 3.0) < 1e-3


def test_theorem1_jacfwd_equals_explicit_jacobians():
    rng = np.random.default_rng(9)
    j_u, j_v = rng.normal(size=(3, 7)), rng.normal(size=(4, 7))

    def fn(x):
        return jnp.tanh(jnp.asarray(j_u, jnp.float32) @ x), jnp.asarray(j_v, jnp.float32) @ x

    res = er.first_order_entropy_rate(fn, jnp.zeros(7), sigma2=0.3)
    ref = er.first_order_conditional_entropy(j_u, j_v, sigma2=0.3)  # tanh'(0) = 1
    for a, b in zip(res, ref, strict=True):
        np.testing.assert_allclose(float(a), float(b), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="ridge"):
        er.first_order_conditional_entropy(j_u, j_v, ridge=0.0)
    with pytest.raises(ValueError, match="j_u"):
        er.first_order_conditional_entropy(j_u, j_v[:, :5])
