"""Late-fusion multimodal classifier: per-modality encoders, concat fusion, unimodal heads.

The architecture of the modality-imbalance literature (Peng et al., 2022; Yang et al., 2025):
each modality ``m`` has an encoder giving a pooled feature ``z_m``; the fused head is one linear
layer on the concatenation ``[z_m for m in sorted modalities]``; each modality also has a
linear unimodal head on ``z_m`` (RedReg's ``p_m`` and the unimodal accuracies read it). The
forward pass returns every piece (:class:`FusionOutput`), including each modality's share of
the fused logits, ``z_m W_m + b / M`` (``W_m`` the rows of the fused kernel reading ``z_m``),
which OGM-GE's discrepancy ratio uses.

Encoders:

* :class:`MLPEncoder`: two ReLU layers, for the small offline views.
* :class:`ResNet18Encoder`: ResNet-18 as in the reference code (He et al., 2016): 7x7 stride-2
  conv -> BatchNorm -> ReLU -> 3x3 stride-2 max-pool, then the four basic-block stages of
  :mod:`redundax.models.resnet` (widths 64-128-256-512, two blocks each), average-pooled over
  space and, for frame inputs ``(b, t, h, w, c)``, over time: ``z`` has 512 units. Audio
  spectrograms go in as one-channel images ``(b, freq, time, 1)``.

Parameter paths are ``encoders/<m>/...``, ``heads/<m>/...`` and ``fused_head/...``;
:func:`encoder_labels` maps each leaf to its encoder's modality (None elsewhere), the labels
:func:`redundax.transforms.redreg` and :func:`redundax.transforms.ogm_ge` take.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.models.layers import ConvBN
from redundax.models.resnet import BasicBlock


class FusionOutput(NamedTuple):
    """Outputs of :class:`FusionClassifier` (dicts keyed by modality name).

    Attributes:
      logits: fused head on the concatenated features, ``(b, classes)``.
      unimodal_logits: each modality's unimodal head, ``(b, classes)``.
      slice_logits: each modality's share of the fused logits, ``z_m W_m + b / M``.
      features: pooled features ``z_m``, ``(b, d_m)``.
    """

    logits: jax.Array
    unimodal_logits: dict[str, jax.Array]
    slice_logits: dict[str, jax.Array]
    features: dict[str, jax.Array]


class MLPEncoder(nnx.Module):
    """``relu(W2 relu(W1 flatten(x)))``: a small encoder for low-dimensional views."""

    def __init__(
        self, in_shape: Sequence[int], hidden: int, features: int, *, rngs: nnx.Rngs
    ) -> None:
        size = int(np.prod(in_shape))
        if size < 1 or hidden < 1 or features < 1:
            raise ValueError(
                f"in_shape, hidden and features must be positive; got {in_shape}, {hidden}, "
                f"{features}."
            )
        self.in_shape = tuple(in_shape)
        self.out_features = features
        self.hidden = nnx.Linear(size, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        return jax.nn.relu(self.out(jax.nn.relu(self.hidden(x))))


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    return jax.lax.reduce_window(
        x,
        -jnp.inf,
        jax.lax.max,
        (1, 3, 3, 1),
        (1, 2, 2, 1),
        ((0, 0), (1, 1), (1, 1), (0, 0)),
    )


class ResNet18Encoder(nnx.Module):
    """ResNet-18 trunk with the ImageNet stem; pooled 512-unit feature (module docstring)."""

    def __init__(self, in_channels: int, *, frames: bool = False, rngs: nnx.Rngs) -> None:
        if in_channels < 1:
            raise ValueError(f"in_channels must be positive; got {in_channels}.")
        self.frames = frames
        self.out_features = 512
        self.stem = ConvBN(in_channels, 64, 7, stride=2, rngs=rngs)
        stages, c = [], 64
        for s, width in enumerate((64, 128, 256, 512)):
            stage = []
            for b in range(2):
                stage.append(BasicBlock(c, width, 2 if s > 0 and b == 0 else 1, rngs=rngs))
                c = width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.frames:
            if x.ndim != 5:
                raise ValueError(f"frame inputs must be (b, t, h, w, c); got shape {x.shape}.")
            b, t = x.shape[:2]
            x = x.reshape(b * t, *x.shape[2:])
        h = _max_pool_3x3_s2(jax.nn.relu(self.stem(x)))
        for stage in self.stages:
            for block in stage:
                h = block(h)
        if self.frames:
            h = h.reshape(b, t, *h.shape[1:])
            return jnp.mean(h, axis=(1, 2, 3))
        return jnp.mean(h, axis=(1, 2))


class FusionClassifier(nnx.Module):
    """Concat fusion of per-modality encoders with unimodal heads (module docstring).

    Args:
      encoders: modality name -> encoder module with an ``out_features`` attribute.
      num_classes: number of classes.
      rngs: initialisation of the heads.
    """

    def __init__(
        self, encoders: Mapping[str, nnx.Module], num_classes: int, *, rngs: nnx.Rngs
    ) -> None:
        names = tuple(sorted(encoders))
        if len(names) < 2:
            raise ValueError(f"encoders must hold at least two modalities; got {list(names)}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2; got {num_classes}.")
        self.modalities = names
        dims = {m: int(encoders[m].out_features) for m in names}
        self.encoders = nnx.Dict({m: encoders[m] for m in names})
        self.heads = nnx.Dict({m: nnx.Linear(dims[m], num_classes, rngs=rngs) for m in names})
        self.fused_head = nnx.Linear(sum(dims.values()), num_classes, rngs=rngs)
        offsets = np.cumsum([0, *(dims[m] for m in names)])
        self.slices = {m: (int(offsets[i]), int(offsets[i + 1])) for i, m in enumerate(names)}

    def encode(self, inputs: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """Pooled features ``z_m`` of every modality."""
        missing = set(self.modalities) - set(inputs)
        if missing:
            raise ValueError(
                f"inputs must hold every modality {list(self.modalities)}; missing "
                f"{sorted(missing)}."
            )
        return {m: self.encoders[m](inputs[m]) for m in self.modalities}

    def __call__(self, inputs: Mapping[str, jax.Array]) -> FusionOutput:
        z = self.encode(inputs)
        logits = self.fused_head(jnp.concatenate([z[m] for m in self.modalities], axis=-1))
        kernel = self.fused_head.kernel[...]
        bias = self.fused_head.bias[...]
        n = len(self.modalities)
        slices = {m: z[m] @ kernel[lo:hi] + bias / n for m, (lo, hi) in self.slices.items()}
        unimodal = {m: self.heads[m](z[m]) for m in self.modalities}
        return FusionOutput(logits, unimodal, slices, z)


def _key_name(k: Any) -> Any:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return getattr(k, attr)
    return k


def encoder_labels(params: Any) -> Any:
    """Labels for the multimodal transforms: the modality of every ``encoders/<m>/...`` leaf,
    None for the heads."""

    def label(path: tuple, _: Any) -> str | None:
        names = [_key_name(k) for k in path]
        if len(names) >= 2 and names[0] == "encoders":
            return str(names[1])
        return None

    return jax.tree_util.tree_map_with_path(label, params)


def mlp_fusion(
    shapes: Mapping[str, Sequence[int]],
    num_classes: int,
    *,
    hidden: int = 64,
    features: int = 32,
    rngs: nnx.Rngs,
) -> FusionClassifier:
    """:class:`FusionClassifier` with an :class:`MLPEncoder` per modality (equal widths)."""
    encoders = {
        m: MLPEncoder(shape, hidden, features, rngs=rngs) for m, shape in sorted(shapes.items())
    }
    return FusionClassifier(encoders, num_classes, rngs=rngs)


def resnet18_fusion(
    shapes: Mapping[str, Sequence[int]], num_classes: int, *, rngs: nnx.Rngs
) -> FusionClassifier:
    """:class:`FusionClassifier` with a :class:`ResNet18Encoder` per modality; a modality
    whose stored shape has four axes ``(t, h, w, c)`` is treated as frames."""
    encoders = {
        m: ResNet18Encoder(int(shape[-1]), frames=len(shape) == 4, rngs=rngs)
        for m, shape in sorted(shapes.items())
    }
    return FusionClassifier(encoders, num_classes, rngs=rngs)
