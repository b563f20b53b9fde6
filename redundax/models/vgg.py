"""VGG-16 with BatchNorm for CIFAR-sized images (Simonyan & Zisserman, 2015; CIFAR variant).

Thirteen 3x3 conv -> BatchNorm -> ReLU layers in five stages (64, 128, 256, 512, 512 channels at full
width) with 2x2 max-pooling after each stage, global average pooling and one linear classifier. On
32x32 inputs the last pool leaves 1x1; pooling stops once the feature map is 1x1, so 8x8 inputs
(scikit-learn digits) use three pools. BatchNorm uses momentum 0.9, epsilon 1e-5 (PyTorch defaults).

Intermediates for channel analysis (Safaai et al., two-axis channel information, Sec. 2.1): run the
model under `nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)`; every conv's
pre-BatchNorm output is captured at `(..., "conv", "__call__")` and its input at
`(..., "conv_in", "__call__")`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from redundax.models.layers import ConvBN

VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


def _scaled(c: int, width: float) -> int:
    if width <= 0:
        raise ValueError(f"`width` must be positive; got {width}.")
    return max(1, round(c * width))


class VGG(nnx.Module):
    """VGG with BatchNorm: `cfg` lists conv widths and "M" (max-pool) markers."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 3,
        cfg: Sequence[int | str] = VGG16_CFG,
        width: float = 1.0,
        rngs: nnx.Rngs,
    ):
        if num_classes < 1 or in_channels < 1:
            raise ValueError(
                f"`num_classes` and `in_channels` must be positive; got {num_classes}, {in_channels}."
            )
        self.cfg = tuple(cfg)
        layers = []
        c = in_channels
        for v in self.cfg:
            if v == "M":
                continue
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"`cfg` entries must be positive ints or 'M'; got {v!r}.")
            out = _scaled(v, width)
            layers.append(ConvBN(c, out, 3, rngs=rngs))
            c = out
        self.features = nnx.List(layers)
        self.classifier = nnx.Linear(c, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        i = 0
        for v in self.cfg:
            if v == "M":
                if x.shape[-2] > 1 and x.shape[-3] > 1:
                    x = nnx.max_pool(x, (2, 2), strides=(2, 2))
                continue
            x = jax.nn.relu(self.features[i](x))
            i += 1
        return self.classifier(jnp.mean(x, axis=(-3, -2)))


def vgg16_bn(num_classes: int = 10, *, in_channels: int = 3, width: float = 1.0, rngs: nnx.Rngs):
    """CIFAR VGG-16-BN (13 conv layers + linear classifier); `width` scales every conv."""
    return VGG(num_classes, in_channels=in_channels, cfg=VGG16_CFG, width=width, rngs=rngs)
