"""`redundax.models.layers`: the shifted-slice depthwise conv equals XLA's grouped convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax.models.layers import ConvBN, depthwise_conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "shape,kernel,stride,pad",
    [
        ((3, 8, 8, 5), 3, 1, 1),
        ((2, 7, 9, 4), 3, 2, 1),
        ((2, 6, 6, 3), 5, 2, 2),
        ((1, 5, 5, 2), 1, 1, 0),
    ],
)
def test_depthwise_matches_grouped_conv_values_and_gradients(shape, kernel, stride, pad):
    c = shape[-1]
    x = jax.random.normal(jax.random.key(0), shape)
    k = jax.random.normal(jax.random.key(1), (kernel, kernel, 1, c))
    args = ((stride, stride), ((pad, pad), (pad, pad)))

    def ref(x, k):
        dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, DN)
        return jax.lax.conv_general_dilated(
            x,
            k,
            *args,
            dimension_numbers=dn,
            feature_group_count=c,
            precision=jax.lax.Precision.HIGHEST,
        )

    def ours(x, k):
        dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, DN)
        return depthwise_conv_general_dilated(
            x, k, *args, dimension_numbers=dn, feature_group_count=c
        )

    np.testing.assert_allclose(ours(x, k), ref(x, k), rtol=1e-5, atol=1e-5)
    w = jax.random.normal(jax.random.key(2), ref(x, k).shape)
    g_ref = jax.grad(lambda x, k: jnp.sum(ref(x, k) * w), argnums=(0, 1))(x, k)
    g_ours = jax.jit(jax.grad(lambda x, k: jnp.sum(ours(x, k) * w), argnums=(0, 1)))(x, k)
    for a, b in zip(g_ours, g_ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_non_depthwise_calls_fall_through_to_lax():
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4))
    k = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))  # groups=2, not depthwise
    dn = jax.lax.conv_dimension_numbers(x.shape, k.shape, DN)
    a = depthwise_conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2
    )
    b = jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=dn, feature_group_count=2
    )
    np.testing.assert_array_equal(a, b)


def test_depthwise_convbn_uses_the_fast_path_and_matches_nnx_conv():
    block = ConvBN(6, 6, 3, stride=2, groups=6, rngs=nnx.Rngs(0))
    assert block.conv.conv_general_dilated is depthwise_conv_general_dilated
    ref = nnx.Conv(
        6,
        6,
        (3, 3),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        feature_group_count=6,
        use_bias=False,
        rngs=nnx.Rngs(0),
    )
    ref.kernel.set_value(block.conv.kernel[...])
    x = jax.random.normal(jax.random.key(3), (2, 8, 8, 6))
    np.testing.assert_allclose(block.conv(x), ref(x), rtol=1e-5, atol=1e-5)
