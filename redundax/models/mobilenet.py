"""MobileNetV2 for CIFAR-sized images (Sandler et al., 2018), CIFAR variant.

Inverted residual blocks (1x1 expansion -> 3x3 depthwise -> 1x1 linear projection, each followed by
BatchNorm; ReLU6 after the first two; identity residual when stride is 1 and widths match) with the
ImageNet settings (t, c, n, s) = (1,16,1,1), (6,24,2,2), (6,32,3,2), (6,64,4,2), (6,96,3,1),
(6,160,3,2), (6,320,1,1) and two CIFAR changes: the stem conv has stride 1 and the second stage
stride 1 (32x32 -> 4x4 before pooling). Blocks with t = 1 have no expansion conv. A final 1x1 conv
(1280 channels), global average pooling and a linear classifier follow. `width` scales every width
(rounded to a multiple of `divisor`, as in the paper's width multiplier); `last_channels` sets the
final conv width (1280 by default, scaled by `width` when `width` < 1 only if given explicitly).
BatchNorm: momentum 0.9, epsilon 1e-5.

Intermediates: as in `redundax.models.layers`, every `ConvBN` exposes its pre-BN conv output at
`(..., "conv", "__call__")` and its input at `(..., "conv_in", "__call__")` under
`nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from redundax.models.layers import ConvBN

CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 -> 1 for 32x32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, never below `divisor` or 90% of `v`."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new < 0.9 * v:
        new += divisor
    return new


class InvertedResidual(nnx.Module):
    """Expansion (if t > 1) -> depthwise -> linear projection, identity residual when shapes match."""

    def __init__(self, in_features: int, out_features: int, stride: int, expand: int, *, rngs):
        hidden = in_features * expand
        self.use_residual = stride == 1 and in_features == out_features
        self.expand = ConvBN(in_features, hidden, 1, rngs=rngs) if expand != 1 else None
        self.depthwise = ConvBN(hidden, hidden, 3, stride=stride, groups=hidden, rngs=rngs)
        self.project = ConvBN(hidden, out_features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = x if self.expand is None else jax.nn.relu6(self.expand(x))
        h = jax.nn.relu6(self.depthwise(h))
        h = self.project(h)
        return x + h if self.use_residual else h


class MobileNetV2(nnx.Module):
    """MobileNetV2, CIFAR variant (module docstring)."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        width: float = 1.0,
        settings: Sequence[tuple[int, int, int, int]] = CIFAR_SETTINGS,
        stem_channels: int = 32,
        last_channels: int = 1280,
        divisor: int = 8,
        rngs: nnx.Rngs,
    ):
        if width <= 0:
            raise ValueError(f"`width` must be positive; got {width}.")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(
                f"`num_classes` and `in_channels` must be positive; got {num_classes}, {in_channels}."
            )
        c = make_divisible(stem_channels * width, divisor)
        self.stem = ConvBN(in_channels, c, 3, rngs=rngs)
        blocks = []
        for t, ch, n, s in settings:
            out = make_divisible(ch * width, divisor)
            for i in range(n):
                blocks.append(InvertedResidual(c, out, s if i == 0 else 1, t, rngs=rngs))
                c = out
        self.blocks = nnx.List(blocks)
        self.head = ConvBN(c, last_channels, 1, rngs=rngs)
        self.classifier = nnx.Linear(last_channels, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.relu6(self.stem(x))
        for b in self.blocks:
            x = b(x)
        x = jax.nn.relu6(self.head(x))
        return self.classifier(jnp.mean(x, axis=(-3, -2)))
