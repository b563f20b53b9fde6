"""Attention-head redundancy.

Reference: Bi, Zhu & Calhoun (2025), Section 3.5 and Appendix A.15:

    R_head = 1 / (H (H - 1)) * sum_{h != h'} <vec A_h, vec A_h'>^2 / (||A_h||_F^2 ||A_h'||_F^2),

the mean squared cosine similarity between the flattened attention maps of distinct heads; in [0, 1],
1 when all heads are identical (up to scale). A head whose map is identically zero has cosine 0 with
every other head (it shares nothing).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from redundax.functionals import _checks


def head_redundancy(attn) -> jax.Array:
    """Head redundancy R_head of attention maps `(..., H, N, N)` -> `(...)` (Sec. 3.5).

    Args:
      attn: attention maps with heads on axis -3 and H >= 2; other leading axes (batch, layers) are
        kept. Average over a batch axis afterwards if one value per layer is wanted.
    """
    attn = _checks.as_float(attn, "attn")
    if attn.ndim < 3:
        raise ValueError(
            f"`attn` must have shape (..., H, N, N) with heads on axis -3; got shape {attn.shape}."
        )
    h = attn.shape[-3]
    if h < 2:
        raise ValueError(f"`attn` has {h} head on axis -3 (shape {attn.shape}); need at least 2.")
    _checks.check_finite(attn, "attn")
    flat = attn.reshape(*attn.shape[:-2], -1)
    sq_norm = jnp.sum(flat * flat, axis=-1)
    ok = sq_norm > 0
    inv = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, sq_norm, 1)), 0)
    unit = flat * inv[..., None]
    cos = jnp.einsum("...hk,...gk->...hg", unit, unit, precision=jax.lax.Precision.HIGHEST)
    off = 1 - jnp.eye(h, dtype=cos.dtype)
    total = jnp.sum(cos * cos * off, axis=(-2, -1))
    return jnp.clip(total / (h * (h - 1)), 0.0, 1.0)


__all__ = ["head_redundancy"]
