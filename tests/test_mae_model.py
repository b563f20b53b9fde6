"""ViT/MAE model: patches, sin-cos positions, masking, masked loss, eq. 2 gradients."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from redundax.functionals import spectral_redundancy
from redundax.models import vit
from redundax.models.mae import (
    MAE,
    SIZES,
    mae_config,
    masked_mse,
    num_kept,
    objective,
    random_masking,
    representation,
)

TINY = mae_config(
    "tiny", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=16, decoder_num_heads=2
)


# ------------------------------------------------------------------------------- positions, patches
def test_sincos_2d_matches_the_formula_entry_by_entry():
    d, gh, gw = 16, 3, 5
    emb = vit.sincos_2d(d, gh, gw)
    assert emb.shape == (gh * gw, d)
    q = d // 4
    for idx in range(gh * gw):
        row, col = divmod(idx, gw)
        for k in range(q):
            w = 10000.0 ** (-k / q)
            np.testing.assert_allclose(emb[idx, k], math.sin(col * w), atol=1e-6)
            np.testing.assert_allclose(emb[idx, q + k], math.cos(col * w), atol=1e-6)
            np.testing.assert_allclose(emb[idx, 2 * q + k], math.sin(row * w), atol=1e-6)
            np.testing.assert_allclose(emb[idx, 3 * q + k], math.cos(row * w), atol=1e-6)
    assert len({tuple(np.round(r, 5)) for r in emb}) == gh * gw  # positions are distinguishable


def test_sincos_2d_rejects_widths_not_multiple_of_four():
    with pytest.raises(ValueError, match="multiple of 4"):
        vit.sincos_2d(18, 2, 2)


@settings(max_examples=15, deadline=None)
@given(b=st.integers(1, 3), g=st.integers(1, 4), p=st.integers(1, 3), c=st.integers(1, 3))
def test_patchify_brute_force_and_inverse(b, g, p, c):
    x = np.random.default_rng(b * 100 + g * 10 + p).normal(size=(b, g * p, g * p, c))
    patches = np.asarray(vit.patchify(jnp.asarray(x), p))
    assert patches.shape == (b, g * g, p * p * c)
    for i in range(g):
        for j in range(g):
            want = x[:, i * p : (i + 1) * p, j * p : (j + 1) * p, :].reshape(b, -1)
            np.testing.assert_array_equal(patches[:, i * g + j], want.astype(np.float32))
    back = vit.unpatchify(jnp.asarray(patches), p, g, g)
    np.testing.assert_array_equal(np.asarray(back), x.astype(np.float32))


def test_patch_embed_equals_strided_convolution():
    p, c, d = 2, 3, 8
    embed = vit.PatchEmbed(p, c, d, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 6, 6, c))
    kernel = embed.proj.kernel[...].reshape(p, p, c, d)  # (row, col, channel) patch order
    conv = (
        jax.lax.conv_general_dilated(
            x,
            kernel,
            (p, p),
            "VALID",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=jax.lax.Precision.HIGHEST,
        )
        + embed.proj.bias[...]
    )
    np.testing.assert_allclose(embed(x), conv.reshape(2, 9, d), rtol=1e-5, atol=1e-5)


def test_attention_matches_a_numpy_softmax_attention():
    dim, heads = 8, 2
    attn = vit.Attention(dim, heads, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, 5, dim)).astype(np.float32)
    wq, bq = np.asarray(attn.qkv.kernel[...]), np.asarray(attn.qkv.bias[...])
    wo, bo = np.asarray(attn.proj.kernel[...]), np.asarray(attn.proj.bias[...])
    qkv = (x @ wq + bq).reshape(2, 5, 3, heads, dim // heads)
    out = np.zeros((2, 5, heads, dim // heads))
    for b in range(2):
        for h in range(heads):
            q, k, v = qkv[b, :, 0, h], qkv[b, :, 1, h], qkv[b, :, 2, h]
            s = q @ k.T / np.sqrt(dim // heads)
            a = np.exp(s - s.max(1, keepdims=True))
            out[b, :, h] = (a / a.sum(1, keepdims=True)) @ v
    want = out.reshape(2, 5, dim) @ wo + bo
    np.testing.assert_allclose(attn(jnp.asarray(x)), want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ masking
@settings(max_examples=25, deadline=None)
@given(
    b=st.sampled_from([1, 3]),
    n=st.sampled_from([2, 5, 16, 37]),
    ratio=st.floats(0.05, 0.95),
    seed=st.integers(0, 99),
)
def test_masking_keeps_exact_count_and_ids_restore_inverts(b, n, ratio, seed):
    keep = int(n * (1 - ratio))
    if keep < 1:
        with pytest.raises(ValueError, match="keeps no patch"):
            num_kept(n, ratio)
        return
    x = jnp.arange(b * n * 3, dtype=jnp.float32).reshape(b, n, 3)
    m = random_masking(x, jax.random.key(seed), ratio)
    assert m.kept.shape == (b, keep, 3)
    mask = np.asarray(m.mask)
    np.testing.assert_array_equal(mask.sum(1), n - keep)  # exactly N - keep removed per image
    ids_restore, ids_keep = np.asarray(m.ids_restore), np.asarray(m.ids_keep)
    for i in range(b):
        assert sorted(ids_restore[i]) == list(range(n))  # a permutation
        # kept tokens are x at ids_keep; the mask is 0 exactly there
        np.testing.assert_array_equal(np.asarray(m.kept[i]), np.asarray(x[i])[ids_keep[i]])
        assert set(np.flatnonzero(mask[i] == 0)) == set(ids_keep[i])
    # unshuffling (kept tokens + placeholders) with ids_restore gives the original order back
    shuffled = np.argsort(ids_restore, axis=1)  # ids_shuffle
    xs = np.take_along_axis(np.asarray(x), shuffled[..., None], axis=1)
    back = np.take_along_axis(xs, ids_restore[..., None], axis=1)
    np.testing.assert_array_equal(back, np.asarray(x))


def test_masking_rejects_bad_ratios():
    for r in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            num_kept(16, r)
    model = MAE(TINY, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="mask_ratio"):
        model(jnp.zeros((2, 8, 8, 1)), jax.random.key(0), 0.0)


# --------------------------------------------------------------------------------------------- loss
def _brute_loss(target, pred, mask, norm):
    total, count = 0.0, 0
    for b in range(target.shape[0]):
        for i in range(target.shape[1]):
            if mask[b, i]:
                t = target[b, i].astype(np.float64)
                if norm:
                    t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
                total += np.mean((pred[b, i] - t) ** 2)
                count += 1
    return total / count


@pytest.mark.parametrize("norm", [False, True])
def test_loss_counts_only_masked_patches(norm):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(3, 10, 4)).astype(np.float32)
    pred = rng.normal(size=(3, 10, 4)).astype(np.float32)
    mask = (rng.random((3, 10)) < 0.6).astype(np.float32)
    mask[:, 0] = 1
    loss = float(masked_mse(jnp.asarray(target), jnp.asarray(pred), jnp.asarray(mask), norm))
    np.testing.assert_allclose(loss, _brute_loss(target, pred, mask, norm), rtol=1e-5)
    # garbage predictions (and targets) at visible patches change nothing
    pred2, target2 = pred.copy(), target.copy()
    pred2[mask == 0] = 1e3
    target2[mask == 0] = -1e3
    loss2 = float(masked_mse(jnp.asarray(target2), jnp.asarray(pred2), jnp.asarray(mask), norm))
    assert loss2 == loss


def test_model_loss_is_the_masked_mse_of_its_prediction():
    model = MAE(TINY, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    out = model(x, jax.random.key(2), 0.75)
    assert out.pred.shape == (4, 16, 4) and out.latent.shape == (4, 1 + 4, 32)
    np.testing.assert_array_equal(np.asarray(out.mask).sum(1), 12)
    target = np.asarray(vit.patchify(x, 2))
    want = _brute_loss(target, np.asarray(out.pred), np.asarray(out.mask), False)
    np.testing.assert_allclose(float(out.loss), want, rtol=1e-5)


def test_representation_modes():
    latent = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    np.testing.assert_array_equal(representation(latent, "cls"), latent[:, 0])
    np.testing.assert_allclose(representation(latent, "mean"), latent[:, 1:].mean(1))
    assert representation(latent, "tokens").shape == (6, 3)
    with pytest.raises(ValueError, match="z_mode"):
        representation(latent, "max")


# ---------------------------------------------------------------------------------------- eq. 2
@functools.lru_cache(maxsize=8)
def _grad_fn(graphdef, penalty, z_mode):
    def f(params, x, key, lam):
        return jax.grad(
            lambda p: objective(
                nnx.merge(graphdef, p), x, key, lam, z_mode=z_mode, penalty=penalty
            )[0]
        )(params)

    return jax.jit(f)


def _grads(model, x, key, lam, penalty, z_mode="mean"):
    graphdef, params = nnx.split(model)
    return _grad_fn(graphdef, penalty, z_mode)(params, x, key, jnp.float32(lam))


def test_lambda_zero_gives_exactly_the_plain_mae_gradients():
    model = MAE(TINY, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (8, 8, 8, 1))
    key = jax.random.key(2)
    # The penalty reaches the parameters only through the cotangent of Z, to which it adds
    # d(0 * R_spec)/dZ. That is exactly zero (bitwise) -- also on a collapsed Z -- so the chain rule
    # gives the plain MAE gradient: a + 0 == a in IEEE arithmetic.
    latent, _ = model.encode(x, key, 0.75)
    for z in (representation(latent), jnp.ones((8, 32)), jnp.outer(jnp.arange(8.0), jnp.ones(32))):
        dz = jax.jit(jax.grad(lambda z: 0.0 * spectral_redundancy(z)))(z)
        np.testing.assert_array_equal(np.asarray(dz), np.zeros(z.shape, np.float32))
    # End to end, compiled: the two programs are fused differently by XLA, so equality holds to
    # float round-off (observed: 1-2 ulp) rather than bit for bit.
    plain = _grads(model, x, key, 0.0, penalty=False)
    with_term = _grads(model, x, key, 0.0, penalty=True)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(with_term), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=1e-8)
    # and the penalty is not a no-op: lambda > 0 changes them well beyond round-off
    other = _grads(model, x, key, 1.0, penalty=True)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(other), strict=True)
    )
    assert diff > 1e-4


def _penalty_grads(model, x, key, z_mode="mean"):
    graphdef, params = nnx.split(model)

    def pen(p):
        out = nnx.merge(graphdef, p)(x, key, 0.75)
        return spectral_redundancy(representation(out.latent, z_mode))

    return jax.jit(jax.value_and_grad(pen))(params)


@pytest.mark.parametrize("z_mode", ["mean", "cls", "tokens"])
def test_penalty_gradient_finite_at_init(z_mode):
    model = MAE(TINY, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (16, 8, 8, 1))  # n = 16 < D = 32 for mean/cls
    value, grads = _penalty_grads(model, x, jax.random.key(2), z_mode)
    leaves = jax.tree.leaves(grads)
    assert 0.0 <= float(value) <= 1 - 1 / 32
    assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
    assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


def test_penalty_gradient_finite_on_collapsed_representation():
    model = MAE(TINY, rngs=nnx.Rngs(0))
    # (a) every image identical, masks identical: Z has no variance at all
    x = jnp.broadcast_to(jax.random.normal(jax.random.key(1), (1, 8, 8, 1)), (8, 8, 8, 1))
    graphdef, params = nnx.split(model)

    def pen_same_mask(p):
        m = nnx.merge(graphdef, p)
        latent, _ = m.encode(x)
        return spectral_redundancy(representation(latent, "mean"))

    value, grads = jax.jit(jax.value_and_grad(pen_same_mask))(params)
    np.testing.assert_allclose(float(value), 1 - 1 / 32, atol=1e-6)  # Prop. 6 collapse value
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    # (b) encoder's final LayerNorm scale zeroed: Z = bias for every sample (rank 0), and a rank-1
    # collapse (scale on one unit only) -- finite gradients through the whole objective at lam=500
    xr = jax.random.normal(jax.random.key(3), (16, 8, 8, 1))
    for scale in (np.zeros(32), np.eye(32)[0]):
        model.norm.scale[...] = jnp.asarray(scale, jnp.float32)
        grads = _grads(model, xr, jax.random.key(4), 500.0, penalty=True)
        assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


# ------------------------------------------------------------------------------------------- sizes
def _count(cfg):
    d, dd = cfg.embed_dim, cfg.decoder_embed_dim
    h, hd = int(d * cfg.mlp_ratio), int(dd * cfg.mlp_ratio)
    k = cfg.patch_size**2 * cfg.in_channels

    def block(w, hidden):  # 2 LayerNorms, qkv, proj, 2-layer MLP
        return 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * hidden + hidden) + (hidden * w + w)

    enc = (k * d + d) + d + cfg.depth * block(d, h) + 2 * d
    dec = (d * dd + dd) + dd + cfg.decoder_depth * block(dd, hd) + 2 * dd + (dd * k + k)
    return enc, dec


@pytest.mark.parametrize("size", list(SIZES))
def test_parameter_counts_match_closed_form(size):
    cfg = mae_config(size)
    model = nnx.eval_shape(lambda: MAE(cfg, rngs=nnx.Rngs(0)))
    state = nnx.state(model)
    total = sum(math.prod(x.shape) for x in jax.tree.leaves(state))
    enc, dec = _count(cfg)
    assert total == enc + dec
    if size == "base":  # ViT-Base/16 encoder: 86M parameters (Dosovitskiy et al., 2021, Table 1)
        assert round(enc / 1e6) == 86


def test_mae_config_errors():
    with pytest.raises(ValueError, match="Unknown MAE size"):
        mae_config("huge")
    with pytest.raises(ValueError, match="Unknown MAE fields"):
        mae_config("tiny", width=3)
    with pytest.raises(ValueError, match="patch_size"):
        MAE(mae_config("tiny", patch_size=3), rngs=nnx.Rngs(0))
