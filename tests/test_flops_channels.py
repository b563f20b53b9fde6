"""Architecture-aware MACs against hand counts, at full width and after pruning."""

import numpy as np
import pytest
from flax import nnx

from redundax.models.mobilenet import CIFAR_SETTINGS, MobileNetV2
from redundax.models.resnet import resnet18_cifar
from redundax.models.vgg import VGG16_CFG, vgg16_bn
from redundax.prune import channels as pc
from redundax.prune import flops
from redundax.prune import graph as G


@pytest.fixture(scope="module")
def resnet():
    return resnet18_cifar(10, rngs=nnx.Rngs(0))


def hand_resnet18(num_classes=10):
    hw = lambda s: (32 // s) ** 2
    total = hw(1) * 9 * 3 * 64  # stem
    c = 64
    for i, w in enumerate((64, 128, 256, 512)):
        s = 1 if i == 0 else 2**i
        for b in range(2):
            cin = c if b == 0 else w
            total += hw(s) * 9 * cin * w + hw(s) * 9 * w * w
            if b == 0 and cin != w:
                total += hw(s) * cin * w  # 1x1 shortcut
        c = w
    return total + 512 * num_classes


def test_resnet18_full_width(resnet):
    assert hand_resnet18() == 555_422_720  # 0.56 GMACs, the usual CIFAR ResNet-18 figure
    assert flops.macs(resnet, (32, 32, 3)) == hand_resnet18()
    assert flops.count_params(resnet) == 11_173_962


def test_vgg16_full_width():
    model = vgg16_bn(10, rngs=nnx.Rngs(0))
    total, c, hw = 0, 3, 32
    for v in VGG16_CFG:
        if v == "M":
            hw //= 2
            continue
        total += hw * hw * 9 * c * v
        c = v
    total += 512 * 10
    assert flops.macs(model, (32, 32, 3)) == total == 313_201_664


def test_mobilenetv2_full_width():
    model = MobileNetV2(10, rngs=nnx.Rngs(0))
    hw, c = 32 * 32, 32
    total = hw * 9 * 3 * 32
    for t, ch, n, s in CIFAR_SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = c * t
            if t != 1:
                total += hw * c * hidden  # expansion at input resolution
            hw //= stride * stride
            total += hw * 9 * hidden + hw * hidden * ch  # depthwise, projection
            c = ch
    total += hw * 320 * 1280 + 1280 * 10
    assert flops.macs(model, (32, 32, 3)) == total


def test_resnet_pruned_counts(resnet):
    g = G.channel_graph(resnet)
    fm = flops.flops_model(resnet, g, (32, 32, 3))
    full = flops.count_macs(fm, g)["total"]
    # block-internal channels: half of stage-0 block-0 conv1 -> conv1 outputs and conv2 inputs
    m = G.full_masks(g)
    m["stages.0.0.conv1.conv"][:32] = False
    assert full - flops.count_macs(fm, g, m)["total"] == 2 * 1024 * 9 * 64 * 32
    # residual coupling: dropping a stream channel in one writer saves nothing ...
    m = G.full_masks(g)
    m["stem.conv"][5] = False
    assert flops.count_macs(fm, g, m)["total"] == full
    # ... dropping it in every writer of the stage-0 stream removes it everywhere it is read
    for name in ("stem.conv", "stages.0.0.conv2.conv", "stages.0.1.conv2.conv"):
        m[name][5] = False
    saved = (
        1024 * 27  # stem output
        + 2 * 1024 * 9 * 64  # two conv1 inputs
        + 2 * 1024 * 9 * 64  # two conv2 outputs
        + 256 * 9 * 128
        + 256 * 128
    )  # stage-1 conv1 and shortcut inputs
    assert full - flops.count_macs(fm, g, m)["total"] == saved


def test_mobilenet_depthwise_cascade():
    model = MobileNetV2(10, rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    fm = flops.flops_model(model, g, (32, 32, 3))
    full = flops.count_macs(fm, g)["total"]
    # one hidden channel of block 1 (in 16, hidden 96, out 24, stride 1 at 32x32): masking it in
    # either the expansion or the depthwise conv removes it from expansion, depthwise and projection
    saved = 1024 * 16 + 1024 * 9 + 1024 * 24
    for name in ("blocks.1.expand.conv", "blocks.1.depthwise.conv"):
        m = G.full_masks(g)
        m[name][7] = False
        assert full - flops.count_macs(fm, g, m)["total"] == saved


def test_vgg_pruned_counts_and_shrunk_model_agree():
    model = vgg16_bn(10, width=0.25, rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    fm = flops.flops_model(model, g, (32, 32, 3))
    rng = np.random.default_rng(0)
    scores = {u.name: rng.random(g.spaces[u.dst].width) for u in g.units}
    m = pc.global_threshold_masks(g, scores, 0.5)
    live = [int(m[u.name].sum()) for u in g.units]
    hw = [32, 32, 16, 16, 8, 8, 8, 4, 4, 4, 2, 2, 2]
    want = (
        sum(h * h * 9 * cin * cout for h, cin, cout in zip(hw, [3, *live[:-1]], live, strict=True))
        + live[-1] * 10
    )
    assert flops.count_macs(fm, g, m)["total"] == want
    small, _ = pc.shrink(model, g, m)
    assert flops.macs(small, (32, 32, 3)) == want
