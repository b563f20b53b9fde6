"""The ViT blocks' fast forms against the library functions they replace (values and gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from redundax.models.vit import Attention, Linear, gelu


def test_gelu_equals_exact_erfc_gelu():
    """Agrees to float32 round-off of ``|x|`` (the erf form rounds the far negative tail, below
    ~5e-7, to zero, as PyTorch's does)."""
    x = jnp.linspace(-9.0, 9.0, 2001)
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        jax.vmap(jax.grad(gelu))(x),
        jax.vmap(jax.grad(lambda t: jax.nn.gelu(t, approximate=False)))(x),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (2, 3, 4, 7)])
def test_linear_matches_nnx_linear(shape):
    """Same parameters, same values and gradients as ``nnx.Linear`` on N-D inputs."""
    ours, ref = Linear(7, 5, rngs=nnx.Rngs(0)), nnx.Linear(7, 5, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), shape)
    assert jax.tree.map(jnp.shape, nnx.state(ours)) == jax.tree.map(jnp.shape, nnx.state(ref))

    def loss(m, x):
        return jnp.sum(jnp.tanh(m(x)) ** 2)

    np.testing.assert_allclose(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    g_ours, g_ref = nnx.grad(loss)(ours, x), nnx.grad(loss)(ref, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_attention_matches_dot_product_attention():
    """Head-major attention equals ``jax.nn.dot_product_attention`` on the same projections."""
    attn = Attention(12, 3, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(2), (2, 5, 12))
    qkv = attn.qkv(x).reshape(2, 5, 3, 3, 4)
    ref = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2])
    np.testing.assert_allclose(attn(x), attn.proj(ref.reshape(2, 5, 12)), rtol=1e-5, atol=1e-6)
