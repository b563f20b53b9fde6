"""Cross-modal similarity of paired features (RedReg's co-information proxy).

- `cross_modal_similarity(features) -> {modality: scalar}`: each modality's mean cosine similarity
  to the other modalities, sample by sample; with two modalities the paper's ``sim(t)`` (Yang et
  al., 2025, Sec. 3.3: mean diagonal of the cosine-similarity matrix of the L2-normalised pooled
  features), read by `redundax.transforms.redreg`'s co-information gate.

Reference:
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def cross_modal_similarity(features: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Each modality's mean cosine similarity to the other modalities, sample by sample.

    ``features[m]`` has shape ``(n, d)`` (pooled features of the same ``n`` samples; every
    modality the same ``d``). For modality ``m`` this is the mean over samples ``i`` and over
    the other modalities ``j`` of ``cos(z_m[i], z_j[i])`` -- with two modalities, the paper's
    ``sim(t)`` (mean diagonal of the cosine-similarity matrix of the L2-normalised features),
    the same value for both.
    """
    names = sorted(features)
    if len(names) < 2:
        raise ValueError(f"features must hold at least two modalities; got {names}.")
    shapes = {m: jnp.shape(features[m]) for m in names}
    if len({s for s in shapes.values()}) != 1 or len(next(iter(shapes.values()))) != 2:
        raise ValueError(
            f"features must all have one shape (n, d) to be compared sample by sample; got "
            f"{shapes}. Project them to a common width first."
        )

    def unit(z: jax.Array) -> jax.Array:
        z = jnp.asarray(z, jnp.float32)
        norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
        return z / jnp.maximum(norm, 1e-12)

    units = {m: unit(features[m]) for m in names}
    cos = {
        (a, b): jnp.mean(jnp.sum(units[a] * units[b], axis=-1))
        for a in names
        for b in names
        if a < b
    }
    out = {}
    for m in names:
        others = [cos[(min(m, j), max(m, j))] for j in names if j != m]
        out[m] = sum(others) / len(others)
    return out
