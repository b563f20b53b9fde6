"""Vision Transformer building blocks: patches, fixed 2-D sin-cos positions, pre-norm blocks.

The blocks follow the ViT of Dosovitskiy et al. (2021) as the masked autoencoder of He et al. (2022)
builds it (timm-style pre-norm blocks): ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``, LayerNorm
epsilon 1e-6, exact-erf GELU, a bias on the query/key/value projection, Xavier-uniform linear
weights with zero biases; the GELU is PyTorch's ``nn.GELU()`` formula ``x/2 (1 + erf(x/sqrt 2))``.
Patch embedding is a linear map of the flattened ``p x p x C`` patches, which equals the
stride-``p`` convolution of the reference code (same fans, same initialisation).

Position embeddings are the fixed 2-D sin-cos embeddings of MAE (He et al., 2022, Sec. 3, following
Chen et al., 2021): the first half of the channels encodes the patch column, the second half the
patch row, each half as ``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-k / (D/4))``,
``k = 0..D/4-1``. They are computed from static shapes (constants under ``jit``) and hold no state.

Compiled for speed on XLA:CPU as well as accelerators (``benchmarks/mae_step.py``): every linear map
is one 2-D matrix product over the flattened token axes (:class:`Linear`), attention runs with heads
as a batch axis in front of the tokens (one transpose of the fused projection, as in the reference
code), and the GELU is written with ``erf`` rather than ``erfc`` (a cheaper XLA kernel).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

xavier_uniform = nnx.initializers.xavier_uniform()


def sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    """``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-2k / embed_dim)``.

    Args:
      embed_dim: output channels, even.
      positions: ``(m,)`` positions.

    Returns:
      ``(m, embed_dim)`` float64 array.
    """
    if embed_dim % 2:
        raise ValueError(f"embed_dim must be even for a sin-cos embedding; got {embed_dim}.")
    omega = 1.0 / 10000.0 ** (np.arange(embed_dim // 2, dtype=np.float64) / (embed_dim / 2.0))
    out = np.asarray(positions, np.float64).reshape(-1)[:, None] * omega[None, :]
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


@functools.lru_cache(maxsize=32)
def sincos_2d(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embeddings of a ``grid_h x grid_w`` patch grid (MAE, Sec. 3).

    Patches are numbered row-major. Channels ``[0, D/2)`` embed the column, ``[D/2, D)`` the row.

    Returns:
      ``(grid_h * grid_w, embed_dim)`` float32 array (read-only, cached).
    """
    if embed_dim % 4:
        raise ValueError(
            f"embed_dim must be a multiple of 4 for 2-D sin-cos positions; got {embed_dim}."
        )
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    emb = np.concatenate(
        [sincos_1d(embed_dim // 2, cols.reshape(-1)), sincos_1d(embed_dim // 2, rows.reshape(-1))],
        axis=1,
    ).astype(np.float32)
    emb.setflags(write=False)
    return emb


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """``(B, H, W, C)`` images -> ``(B, (H/p)(W/p), p*p*C)`` patches, row-major over the grid.

    Each patch is flattened in ``(row, column, channel)`` order, as in the MAE reference code.
    """
    b, h, w, c = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"patch_size={p} must divide the image size {h}x{w}.")
    x = images.reshape(b, h // p, p, w // p, p, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: jax.Array, patch_size: int, grid_h: int, grid_w: int) -> jax.Array:
    """Inverse of :func:`patchify`: ``(B, gh*gw, p*p*C)`` -> ``(B, gh*p, gw*p, C)``."""
    b, n, k = patches.shape
    p = patch_size
    c = k // (p * p)
    if n != grid_h * grid_w or k != p * p * c:
        raise ValueError(
            f"patches of shape {patches.shape} do not fit a {grid_h}x{grid_w} grid of "
            f"{p}x{p} patches."
        )
    x = patches.reshape(b, grid_h, grid_w, p, p, c)
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(b, grid_h * p, grid_w * p, c)


class Linear(nnx.Linear):
    """:class:`flax.nnx.Linear` (same parameters ``kernel (in, out)``, ``bias (out,)``, same numbers)
    applied as one 2-D matrix product over the flattened leading axes.

    For ``(B, T, D)`` inputs XLA:CPU compiles the kernel gradient of the 3-D contraction
    (a contraction over the two token axes) with a transposed copy of an activation-sized operand;
    the 2-D form's gradient is a single transposed-operand matrix product (measured: -18% of the
    MAE step on CPU).
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        if inputs.ndim <= 2 or out_sharding is not None:
            return super().__call__(inputs, out_sharding)
        y = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
        return y.reshape(*inputs.shape[:-1], y.shape[-1])


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, ``x/2 (1 + erf(x / sqrt 2))`` (Hendrycks & Gimpel, 2016), PyTorch's formula.

    Equals ``jax.nn.gelu(x, approximate=False)`` (written with ``erfc``) up to float round-off,
    at a fraction of its cost on XLA:CPU.
    """
    return 0.5 * x * (1.0 + lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


class PatchEmbed(nnx.Module):
    """Linear embedding of non-overlapping ``p x p`` patches (the stride-p convolution of ViT)."""

    def __init__(
        self, patch_size: int, in_channels: int, embed_dim: int, *, dtype=None, rngs: nnx.Rngs
    ):
        self.patch_size = patch_size
        self.proj = Linear(
            patch_size * patch_size * in_channels,
            embed_dim,
            kernel_init=xavier_uniform,
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(self, images: jax.Array) -> jax.Array:
        return self.proj(patchify(images, self.patch_size))


class Attention(nnx.Module):
    """Multi-head self-attention with a fused, biased query/key/value projection.

    ``softmax(q k^T / sqrt(head_dim)) v`` per head (Vaswani et al., 2017, eq. 1), the query scaled
    before the product; heads are moved in front of the tokens once, so that both products are
    batched matrix products over ``(B, heads)``.
    """

    def __init__(self, dim: int, num_heads: int, *, dtype=None, rngs: nnx.Rngs):
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the width {dim}.")
        self.num_heads = num_heads
        self.qkv = Linear(dim, 3 * dim, kernel_init=xavier_uniform, dtype=dtype, rngs=rngs)
        self.proj = Linear(dim, dim, kernel_init=xavier_uniform, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (b, heads, t, head_dim)
        q = q * np.asarray((d // h) ** -0.5, q.dtype)
        logits = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        out = jnp.einsum("bhts,bhsd->bhtd", weights, v)
        return self.proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class Mlp(nnx.Module):
    """``Linear -> GELU (exact) -> Linear``."""

    def __init__(self, dim: int, hidden: int, *, dtype=None, rngs: nnx.Rngs):
        self.fc1 = Linear(dim, hidden, kernel_init=xavier_uniform, dtype=dtype, rngs=rngs)
        self.fc2 = Linear(hidden, dim, kernel_init=xavier_uniform, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(gelu(self.fc1(x)))


def layer_norm(dim: int, *, dtype=None, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm with epsilon 1e-6 (the ViT/MAE setting), two-pass variance."""
    return nnx.LayerNorm(dim, epsilon=1e-6, use_fast_variance=False, dtype=dtype, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm transformer block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, *, dtype=None, rngs: nnx.Rngs
    ):
        self.norm1 = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.attn = Attention(dim, num_heads, dtype=dtype, rngs=rngs)
        self.norm2 = layer_norm(dim, dtype=dtype, rngs=rngs)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


__all__ = [
    "Attention",
    "Block",
    "Linear",
    "Mlp",
    "PatchEmbed",
    "gelu",
    "layer_norm",
    "patchify",
    "sincos_1d",
    "sincos_2d",
    "unpatchify",
]
