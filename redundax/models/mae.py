"""Masked autoencoder (He et al., 2022) with the spectral-redundancy objective of eq. 2.

Reference: Bi, Zhu & Calhoun (2025), Sec. 4, eq. 2:

    L_total = L_recon + lambda_red * R_spec(Z),     R_spec(Z) = 1 - r_eff(Z) / D   (Def. 2),

where L_recon is the MAE reconstruction loss (mean squared error on the masked patches only) and Z is
the encoder's latent representation of the batch.

Model (He et al., 2022, Sec. 3): the image is cut into ``p x p`` patches, linearly embedded and given
fixed 2-D sin-cos positions; a random subset of ``int(N (1 - mask_ratio))`` patches is kept per
image (random masking by argsort of uniform noise, with ``ids_restore`` undoing the shuffle); a
ViT encoder with a class token sees only the kept patches; a light ViT decoder gets the encoded
tokens plus a shared, learned mask token at each removed position (in the original order, with
its own sin-cos positions) and predicts every patch's pixels. The loss is the per-patch mean
squared error averaged over the removed patches; with ``norm_pix_loss`` each target patch is first
normalised by its own mean and variance.

Representations Z (``z_mode``): ``"mean"`` (default) the encoder output averaged over the visible
patch tokens, ``"cls"`` the class token, ``"tokens"`` every visible patch token as a sample
(``(B * L_visible, D)``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from redundax.functionals import spectral_redundancy
from redundax.models.vit import (
    Block,
    Linear,
    PatchEmbed,
    layer_norm,
    patchify,
    sincos_2d,
    xavier_uniform,
)

Z_MODES = ("mean", "cls", "tokens")


@dataclasses.dataclass(frozen=True)
class MAEConfig:
    """Shape of an MAE. ``image_size`` is square; widths must be multiples of 4 (sin-cos)."""

    image_size: int
    in_channels: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    decoder_embed_dim: int
    decoder_depth: int
    decoder_num_heads: int
    mlp_ratio: float = 4.0
    norm_pix_loss: bool = False
    dtype: str = "float32"

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2


SIZES: dict[str, dict] = {
    # scikit-learn digits, 8x8x1 with 2x2 patches: 16 patches.
    "tiny": dict(
        image_size=8,
        in_channels=1,
        patch_size=2,
        embed_dim=64,
        depth=2,
        num_heads=4,
        decoder_embed_dim=32,
        decoder_depth=1,
        decoder_num_heads=4,
        mlp_ratio=2.0,
    ),
    # CIFAR 32x32x3 with 4x4 patches: 64 patches.
    "small": dict(
        image_size=32,
        in_channels=3,
        patch_size=4,
        embed_dim=192,
        depth=6,
        num_heads=3,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
        mlp_ratio=4.0,
    ),
    # ViT-Base encoder with the MAE paper's decoder (512 wide, 8 blocks, 16 heads).
    "base": dict(
        image_size=224,
        in_channels=3,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        decoder_embed_dim=512,
        decoder_depth=8,
        decoder_num_heads=16,
        mlp_ratio=4.0,
    ),
}


def mae_config(size: str, **overrides) -> MAEConfig:
    """An :class:`MAEConfig` from a named size (``tiny``, ``small``, ``base``) and overrides.

    Overrides set to ``None`` are ignored, so config placeholders pass straight through.
    """
    if size not in SIZES:
        raise ValueError(f"Unknown MAE size {size!r}; choose one of {', '.join(SIZES)}.")
    fields = {f.name for f in dataclasses.fields(MAEConfig)}
    unknown = set(overrides) - fields
    if unknown:
        raise ValueError(f"Unknown MAE fields {sorted(unknown)}; known: {sorted(fields)}.")
    kw = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
    return MAEConfig(**kw)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches per image, ``int(N (1 - mask_ratio))`` as in the MAE reference code."""
    if not 0.0 <= float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1); got {mask_ratio}.")
    keep = int(num_patches * (1.0 - float(mask_ratio)))
    if keep < 1:
        raise ValueError(
            f"mask_ratio={mask_ratio} keeps no patch of {num_patches}; lower mask_ratio."
        )
    return keep


class Masking(NamedTuple):
    """Result of :func:`random_masking`."""

    kept: jax.Array  # (B, keep, D) the kept tokens, in shuffled order
    mask: jax.Array  # (B, N) 1.0 where a patch was removed, 0.0 where kept (original order)
    ids_restore: jax.Array  # (B, N) position of each original patch in the shuffled order
    ids_keep: jax.Array  # (B, keep) original indices of the kept patches


def random_masking(x: jax.Array, key: jax.Array, mask_ratio: float) -> Masking:
    """Per-image random masking by argsort of uniform noise (He et al., 2022, Sec. 3).

    ``ids_shuffle = argsort(noise)`` orders the patches; the first ``int(N (1 - mask_ratio))``
    are kept; ``ids_restore = argsort(ids_shuffle)`` is the inverse permutation, so
    ``take_along_axis(shuffled, ids_restore)`` puts tokens back in their original order.
    """
    b, n, _ = x.shape
    keep = num_kept(n, mask_ratio)
    noise = jax.random.uniform(key, (b, n))
    ids_shuffle = jnp.argsort(noise, axis=1)
    ids_restore = jnp.argsort(ids_shuffle, axis=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = jnp.take_along_axis(x, ids_keep[..., None], axis=1)
    mask = (ids_restore >= keep).astype(jnp.float32)
    return Masking(kept, mask, ids_restore, ids_keep)


def masked_mse(
    target_patches: jax.Array, pred: jax.Array, mask: jax.Array, norm_pix_loss: bool = False
) -> jax.Array:
    """Mean over removed patches of the per-patch mean squared error (MAE's loss).

    Args:
      target_patches: ``(B, N, K)`` true patches.
      pred: ``(B, N, K)`` predicted patches.
      mask: ``(B, N)``, 1 for removed (scored) patches, 0 for visible ones.
      norm_pix_loss: normalise each target patch by its mean and variance (+1e-6) first.
    """
    target = target_patches.astype(jnp.float32)
    if norm_pix_loss:
        mean = jnp.mean(target, axis=-1, keepdims=True)
        var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
        target = (target - mean) / jnp.sqrt(var + 1e-6)
    per_patch = jnp.mean((pred.astype(jnp.float32) - target) ** 2, axis=-1)
    return jnp.sum(per_patch * mask) / jnp.sum(mask)


def representation(latent: jax.Array, z_mode: str = "mean") -> jax.Array:
    """Samples Z ``(n, D)`` from encoder output ``(B, 1 + L, D)`` (class token first).

    ``"mean"``: mean over the L patch tokens (n = B); ``"cls"``: the class token (n = B);
    ``"tokens"``: every patch token as a sample (n = B L).
    """
    if z_mode == "mean":
        return jnp.mean(latent[:, 1:], axis=1)
    if z_mode == "cls":
        return latent[:, 0]
    if z_mode == "tokens":
        return latent[:, 1:].reshape(-1, latent.shape[-1])
    raise ValueError(f"z_mode must be one of {Z_MODES}; got {z_mode!r}.")


class MAEOutput(NamedTuple):
    loss: jax.Array  # scalar masked-patch reconstruction loss
    pred: jax.Array  # (B, N, p*p*C) predicted patches
    mask: jax.Array  # (B, N) 1 = removed
    latent: jax.Array  # (B, 1 + keep, D) encoder output, class token first


class MAE(nnx.Module):
    """ViT masked autoencoder: encoder on visible patches, light decoder on all positions."""

    def __init__(self, config: MAEConfig, *, rngs: nnx.Rngs):
        c = config
        if c.image_size % c.patch_size:
            raise ValueError(f"patch_size={c.patch_size} must divide image_size={c.image_size}.")
        for name in ("embed_dim", "decoder_embed_dim"):
            if getattr(c, name) % 4:
                raise ValueError(
                    f"{name} must be a multiple of 4 (2-D sin-cos); got {getattr(c, name)}."
                )
        self.config = c
        dtype = jnp.dtype(c.dtype)
        self.patch_embed = PatchEmbed(
            c.patch_size, c.in_channels, c.embed_dim, dtype=dtype, rngs=rngs
        )
        self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, 1, c.embed_dim)))
        self.blocks = nnx.List(
            [
                Block(c.embed_dim, c.num_heads, c.mlp_ratio, dtype=dtype, rngs=rngs)
                for _ in range(c.depth)
            ]
        )
        self.norm = layer_norm(c.embed_dim, dtype=dtype, rngs=rngs)
        self.decoder_embed = Linear(
            c.embed_dim, c.decoder_embed_dim, kernel_init=xavier_uniform, dtype=dtype, rngs=rngs
        )
        self.mask_token = nnx.Param(
            0.02 * jax.random.normal(rngs.params(), (1, 1, c.decoder_embed_dim))
        )
        self.decoder_blocks = nnx.List(
            [
                Block(c.decoder_embed_dim, c.decoder_num_heads, c.mlp_ratio, dtype=dtype, rngs=rngs)
                for _ in range(c.decoder_depth)
            ]
        )
        self.decoder_norm = layer_norm(c.decoder_embed_dim, dtype=dtype, rngs=rngs)
        self.decoder_pred = Linear(
            c.decoder_embed_dim,
            c.patch_size**2 * c.in_channels,
            kernel_init=xavier_uniform,
            dtype=dtype,
            rngs=rngs,
        )

    def encode(
        self, images: jax.Array, key: jax.Array | None = None, mask_ratio: float = 0.0
    ) -> tuple[jax.Array, Masking | None]:
        """Encoder output ``(B, 1 + keep, D)`` and the masking (None when ``mask_ratio == 0``).

        With ``mask_ratio == 0`` every patch is encoded in its original order and no key is needed.
        """
        c = self.config
        x = self.patch_embed(images) + sincos_2d(c.embed_dim, c.grid, c.grid)
        masking = None
        if mask_ratio > 0:
            if key is None:
                raise ValueError("encode needs a PRNG key when mask_ratio > 0.")
            masking = random_masking(x, key, mask_ratio)
            x = masking.kept
        cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, c.embed_dim)).astype(x.dtype)
        x = jnp.concatenate([cls, x], axis=1)  # the class token's position embedding is zero
        for block in self.blocks:
            x = block(x)
        return self.norm(x), masking

    def decode(self, latent: jax.Array, ids_restore: jax.Array) -> jax.Array:
        """Predicted patches ``(B, N, p*p*C)`` from the encoder output and ``ids_restore``."""
        c = self.config
        x = self.decoder_embed(latent)
        b, t, d = x.shape
        n = ids_restore.shape[1]
        tokens = jnp.concatenate(
            [x[:, 1:], jnp.broadcast_to(self.mask_token[...], (b, n + 1 - t, d)).astype(x.dtype)],
            axis=1,
        )
        tokens = jnp.take_along_axis(tokens, ids_restore[..., None], axis=1)  # unshuffle
        tokens = tokens + sincos_2d(c.decoder_embed_dim, c.grid, c.grid)
        x = jnp.concatenate([x[:, :1], tokens], axis=1)
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def __call__(self, images: jax.Array, key: jax.Array, mask_ratio: float = 0.75) -> MAEOutput:
        """Mask, encode, decode and score the removed patches of ``images`` ``(B, H, W, C)``."""
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1) for MAE training; got {mask_ratio}.")
        latent, masking = self.encode(images, key, mask_ratio)
        pred = self.decode(latent, masking.ids_restore)
        target = patchify(images, self.config.patch_size)
        loss = masked_mse(target, pred, masking.mask, self.config.norm_pix_loss)
        return MAEOutput(loss, pred, masking.mask, latent)

    def features(self, images: jax.Array, pool: str = "mean") -> jax.Array:
        """Frozen-encoder features ``(B, D)`` of whole (unmasked) images for a linear probe.

        ``pool``: ``"mean"`` over patch tokens or ``"cls"``; ``"tokens"`` pools by the mean.
        """
        latent, _ = self.encode(images)
        return representation(latent, "mean" if pool == "tokens" else pool).astype(jnp.float32)


def objective(
    model: MAE,
    images: jax.Array,
    key: jax.Array,
    lam: jax.Array | float,
    *,
    mask_ratio: float = 0.75,
    z_mode: str = "mean",
    penalty: bool = True,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Eq. 2: ``L_recon + lam * R_spec(Z)`` on one (global) batch, with its parts as aux.

    ``penalty=False`` drops R_spec from the program altogether (the plain MAE); with
    ``penalty=True`` and ``lam == 0`` the gradient equals the plain MAE's (the penalty's cotangent
    is multiplied by zero). R_spec is taken over the whole batch handed in, which under ``jit``
    on a batch sharded over devices is the global batch.
    """
    out = model(images, key, mask_ratio)
    aux = {"recon_loss": out.loss}
    if not penalty:
        return out.loss, aux
    r_spec = spectral_redundancy(representation(out.latent, z_mode).astype(jnp.float32))
    aux["spectral_redundancy"] = r_spec
    return out.loss + lam * r_spec, aux


__all__ = [
    "MAE",
    "SIZES",
    "Z_MODES",
    "MAEConfig",
    "MAEOutput",
    "Masking",
    "mae_config",
    "masked_mse",
    "num_kept",
    "objective",
    "random_masking",
    "representation",
]
