"""Local-axis decorrelation regularizer (Safaai et al., Appendix O).

    L_reg = lambda * 1/|S| sum_{l in S} R_X^(l),

where S is a depth-spaced subset of at most 6 conv layers and R_X^(l) is the mean Gaussian shared
information -1/2 log(1 - rho_ij²) (eq. 2) of up to `ref_channels` reference channels against the
other channels of an up-to-`max_channels` channel subsample of layer l, spatial positions as samples.
Add it to any training loss; the paper applies it every second mini-batch (lambda = 0.01, 0.1).
Correlations are clipped as in `redundax.functionals.channels` (r² <= 1 - 1e-6), so duplicated
channels give a large but finite penalty with finite gradients.

    def loss_fn(model, batch, rng):
        logits, acts = conv_outputs(model, batch["image"], paths)
        ce = cross_entropy(logits, batch["label"])
        return ce + decorrelation_penalty(acts, lam=0.1), {"ce": ce}
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.functionals import correlation
from redundax.functionals.channels import redundancy_graph_from_corr


def layer_shared_information(
    act: jax.Array, *, max_channels: int = 128, ref_channels: int = 64
) -> jax.Array:
    """Mean R_X over the first `ref_channels` of an evenly strided `max_channels` subsample.

    Args:
      act: `(b, h, w, c)` conv outputs (or `(n, c)` samples).
      max_channels: channels kept (every ceil(c / max_channels)-th channel).
      ref_channels: reference channels whose R_X (mean over the kept peers) is averaged.
    """
    if max_channels < 2 or ref_channels < 1:
        raise ValueError(
            f"`max_channels` must be >= 2 and `ref_channels` >= 1; got {max_channels}, "
            f"{ref_channels}."
        )
    act = jnp.asarray(act)
    c = act.shape[-1]
    if c < 2:
        raise ValueError(f"a layer needs at least 2 channels for shared information; got {c}.")
    stride = -(-c // max_channels)
    y = act.reshape(-1, c)[:, ::stride]
    k = y.shape[-1]
    r = redundancy_graph_from_corr(correlation(y))
    ref = min(ref_channels, k)
    return jnp.mean(jnp.sum(r[:ref], axis=-1) / (k - 1))


def decorrelation_penalty(
    acts: Sequence[jax.Array],
    *,
    lam: float = 0.1,
    max_channels: int = 128,
    ref_channels: int = 64,
) -> jax.Array:
    """lambda * mean over layers of `layer_shared_information` (Appendix O)."""
    if not acts:
        raise ValueError("`acts` is empty; pass the conv outputs of at least one layer.")
    vals = [
        layer_shared_information(a, max_channels=max_channels, ref_channels=ref_channels)
        for a in acts
    ]
    return lam * jnp.mean(jnp.stack(vals))


def depth_spaced(paths: Sequence, k: int = 6) -> list:
    """At most `k` entries of `paths`, evenly spaced over depth (first and last included)."""
    if k < 1:
        raise ValueError(f"`k` must be >= 1; got {k}.")
    if len(paths) <= k:
        return list(paths)
    return [paths[i] for i in np.unique(np.round(np.linspace(0, len(paths) - 1, k)).astype(int))]


def conv_outputs(model: nnx.Module, x: jax.Array, conv_paths: Sequence[tuple]):
    """`(logits, [pre-BN conv outputs at conv_paths])` from one forward pass under `nnx.capture`."""
    logits, inter = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
    flat = {}
    for key, var in nnx.to_flat_state(inter):
        v = var.get_value()
        flat[tuple(key)] = v[0] if isinstance(v, tuple | list) else v
    missing = [p for p in conv_paths if (*p, "__call__") not in flat]
    if missing:
        raise ValueError(f"no captured conv output at {missing}; paths must name nnx.Conv modules.")
    return logits, [flat[(*p, "__call__")] for p in conv_paths]
