"""CIFAR-style ResNets with basic blocks (He et al., 2016, *Deep residual learning*, Sec. 4.2).

A 3x3 stem conv (stride 1, no max-pool) -> stages of basic blocks (two 3x3 conv -> BatchNorm
layers; the first block of every stage after the first has stride 2; a 1x1 conv -> BatchNorm
shortcut where the shape changes, identity otherwise) -> global average pooling -> linear
classifier. BatchNorm uses momentum 0.9 and epsilon 1e-5 (the PyTorch defaults of the papers'
setups); convs have no bias; conv kernels use He (fan-out) initialisation.

Presets:

- `resnet18_cifar(num_classes)`: widths 64-128-256-512, [2, 2, 2, 2] blocks, 3 input channels
  (the CIFAR ResNet-18 of the channel-pruning literature; 11.2M parameters for 10 classes).
- `resnet_digits(num_classes)`: widths 16-32-64, [1, 1, 1] blocks, 1 input channel, for the 8x8
  scikit-learn digits (8x8 -> 4x4 -> 2x2 before pooling).

Attribute layout (used by `redundax.prune.graph`): `stem`, `stages[s][b]` (a `BasicBlock` with
`conv1`, `conv2` and `shortcut`, the latter None for identity shortcuts), `classifier`. Every
conv -> BatchNorm pair is a `redundax.models.layers.ConvBN`.

Intermediates (the pre-BatchNorm hook convention of Safaai et al., two-axis channel
information, Sec. 2.1): under `nnx.capture(model, nnx.Intermediate,
method_outputs=nnx.Intermediate)` every conv's output before BatchNorm is recorded at
`(..., "conv", "__call__")` and its input at `(..., "conv_in", "__call__")`. Outside `capture`
nothing is recorded and the forward pass costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from redundax.models.layers import ConvBN


class BasicBlock(nnx.Module):
    """relu(BN(conv2(relu(BN(conv1(x))))) + shortcut(x)) (He et al., 2016, Fig. 2)."""

    def __init__(self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = ConvBN(in_features, out_features, 3, stride=stride, rngs=rngs)
        self.conv2 = ConvBN(out_features, out_features, 3, rngs=rngs)
        needs_projection = stride != 1 or in_features != out_features
        self.shortcut = (
            ConvBN(in_features, out_features, 1, stride=stride, rngs=rngs)
            if needs_projection
            else None
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv2(jax.nn.relu(self.conv1(x)))
        s = x if self.shortcut is None else self.shortcut(x)
        return jax.nn.relu(h + s)


def _positive_ints(name: str, values: Sequence[int]) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise ValueError(f"`{name}` must be a non-empty sequence of positive ints; got {values!r}.")
    return values


class ResNet(nnx.Module):
    """ResNet with a 3x3 stem and basic blocks (module docstring).

    Args:
      num_classes: outputs of the linear classifier.
      in_channels: channels of the input images `(b, h, w, in_channels)`.
      widths: channels of each stage.
      blocks: basic blocks per stage (same length as `widths`).
      stem_width: channels of the stem conv; defaults to `widths[0]`.
      rngs: parameter initialisation.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        in_channels: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        blocks: Sequence[int] = (2, 2, 2, 2),
        stem_width: int | None = None,
        rngs: nnx.Rngs,
    ):
        widths = _positive_ints("widths", widths)
        blocks = _positive_ints("blocks", blocks)
        if len(widths) != len(blocks):
            raise ValueError(
                f"`widths` and `blocks` need one entry per stage; got {len(widths)} widths and "
                f"{len(blocks)} block counts."
            )
        stem_width = widths[0] if stem_width is None else stem_width
        for name, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("stem_width", stem_width),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int; got {value!r}.")
        self.stem = ConvBN(in_channels, stem_width, 3, rngs=rngs)
        stages, c = [], stem_width
        for s, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            stage = []
            for b in range(count):
                stride = 2 if s > 0 and b == 0 else 1
                stage.append(BasicBlock(c, width, stride, rngs=rngs))
                c = width
            stages.append(nnx.List(stage))
        self.stages = nnx.List(stages)
        self.classifier = nnx.Linear(c, num_classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        """Globally average-pooled output of the last stage, `(b, widths[-1])`."""
        x = jax.nn.relu(self.stem(x))
        for stage in self.stages:
            for block in stage:
                x = block(x)
        return jnp.mean(x, axis=(-3, -2))

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits `(b, num_classes)` of images `(b, h, w, in_channels)`."""
        return self.classifier(self.features(x))


def resnet18_cifar(num_classes: int = 10, *, in_channels: int = 3, rngs: nnx.Rngs) -> ResNet:
    """CIFAR ResNet-18: 3x3 stem, widths 64-128-256-512, [2, 2, 2, 2] basic blocks."""
    return ResNet(
        num_classes,
        in_channels=in_channels,
        widths=(64, 128, 256, 512),
        blocks=(2, 2, 2, 2),
        rngs=rngs,
    )


def resnet_digits(num_classes: int = 10, *, in_channels: int = 1, rngs: nnx.Rngs) -> ResNet:
    """Small ResNet for 8x8 digits: widths 16-32-64, one basic block per stage."""
    return ResNet(
        num_classes, in_channels=in_channels, widths=(16, 32, 64), blocks=(1, 1, 1), rngs=rngs
    )
