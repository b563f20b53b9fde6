"""redundax.models.resnet: CIFAR ResNets, pre-BatchNorm captures, BatchNorm conventions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax.models.resnet import ResNet, resnet18_cifar, resnet_digits


def _num_params(model) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(("classes", "expected"), [(10, 11_173_962), (100, 11_220_132)])
def test_resnet18_cifar_has_the_published_parameter_count(classes, expected):
    # The CIFAR ResNet-18 (3x3 stem, no max-pool, BatchNorm affine parameters counted, running
    # statistics not) has 11,173,962 parameters for 10 classes, as widely reported for the
    # PyTorch CIFAR implementations; 100 classes add 512 * 90 + 90.
    model = nnx.eval_shape(lambda: resnet18_cifar(classes, rngs=nnx.Rngs(0)))
    assert _num_params(model) == expected
    logits = nnx.eval_shape(
        lambda m, x: m(x), model, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    )
    assert logits.shape == (2, classes)


def _captures(model, x):
    y, inter = nnx.capture(model, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
    flat = {}
    for path, value in nnx.to_flat_state(inter):
        flat[tuple(str(p) for p in path)] = (
            value.get_value() if hasattr(value, "get_value") else value
        )
    return y, flat


def test_every_conv_exposes_its_pre_batchnorm_output():
    model = resnet_digits(10, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    y, flat = _captures(model, x)
    conv_paths = sorted(p[:-2] for p in flat if p[-2:] == ("conv", "__call__"))
    # stem + 2 convs per block + a projection shortcut in the two downsampling stages
    assert len(conv_paths) == 1 + 3 * 2 + 2
    shapes = {"/".join(p): flat[(*p, "conv", "__call__")] for p in conv_paths}
    assert shapes["stem"][0].shape == (4, 8, 8, 16)
    assert shapes["stages/1/0/conv1"][0].shape == (4, 4, 4, 32)
    assert shapes["stages/2/0/shortcut"][0].shape == (4, 2, 2, 64)
    # The stem capture is the convolution alone (no BatchNorm): recompute it with lax.conv.
    kernel = model.stem.conv.kernel[...]
    expected = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), [(1, 1), (1, 1)], dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(shapes["stem"][0], expected, rtol=1e-5, atol=1e-5)
    # Capturing changes nothing, and outside `capture` nothing is stored on the model.
    np.testing.assert_allclose(y, model(x), rtol=1e-6, atol=1e-6)
    assert not jax.tree.leaves(nnx.state(model, nnx.Intermediate))


def test_batchnorm_uses_momentum_0_9_and_epsilon_1e_5():
    model = resnet_digits(10, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (16, 8, 8, 1))
    _, flat = _captures(model, x)  # one training-mode forward pass updates the statistics
    pre = np.asarray(flat[("stem", "conv", "__call__")][0], np.float64).reshape(-1, 16)
    bn = model.stem.bn
    np.testing.assert_allclose(bn.mean[...], 0.1 * pre.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * pre.var(0), rtol=1e-4, atol=1e-6)
    assert bn.epsilon == 1e-5
    # Evaluation mode normalises with the running statistics: (h - mean) / sqrt(var + eps).
    model.eval()
    out = model.stem(x)
    ref = (np.asarray(model.stem.conv(x)) - bn.mean[...]) / np.sqrt(bn.var[...] + 1e-5)
    np.testing.assert_allclose(out, ref * bn.scale[...] + bn.bias[...], rtol=1e-4, atol=1e-5)


def test_identity_block_with_silenced_residual_branch_is_relu():
    # relu(BN(conv2(.)) + x) with a zero BatchNorm scale and bias on conv2 is relu(x).
    model = ResNet(10, in_channels=3, widths=(4, 4), blocks=(2, 1), rngs=nnx.Rngs(0))
    block = model.stages[0][1]
    assert block.shortcut is None and model.stages[1][0].shortcut is not None
    block.conv2.bn.scale[...] = jnp.zeros(4)
    block.conv2.bn.bias[...] = jnp.zeros(4)
    x = jax.random.normal(jax.random.key(3), (2, 6, 6, 4))
    np.testing.assert_allclose(block(x), jax.nn.relu(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"widths": (8, 16), "blocks": (1,)}, "blocks"),
        ({"widths": (), "blocks": ()}, "widths"),
        ({"widths": (8, 0), "blocks": (1, 1)}, "widths"),
        ({"widths": (8,), "blocks": (1,), "stem_width": -1}, "stem_width"),
    ],
)
def test_bad_architecture_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ResNet(10, rngs=nnx.Rngs(0), **kwargs)
