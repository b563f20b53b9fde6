"""Decorrelation regularizer (Appendix O) against the R_X closed form; usable in a training loss."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from redundax import regularizers as reg
from redundax.functionals import channels as ch
from redundax.models.vgg import VGG
from redundax.prune import graph as G


def test_penalty_is_mean_peer_overlap():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    rx = np.asarray(ch.peer_overlap(y))
    got = reg.layer_shared_information(y, max_channels=128, ref_channels=64)
    np.testing.assert_allclose(got, rx.mean(), rtol=1e-5)
    # reference subset: mean of -1/2 log(1 - rho²) of channels 0, 1 against all five peers
    rho = np.corrcoef(y, rowvar=False)
    want = np.mean(
        [np.mean([-0.5 * np.log(1 - rho[i, j] ** 2) for j in range(6) if j != i]) for i in range(2)]
    )
    np.testing.assert_allclose(reg.layer_shared_information(y, ref_channels=2), want, rtol=1e-5)
    # subsampling keeps every ceil(c / max_channels)-th channel
    np.testing.assert_allclose(
        reg.layer_shared_information(y, max_channels=3),
        np.asarray(ch.peer_overlap(y[:, ::2])).mean(),
        rtol=1e-5,
    )
    pen = reg.decorrelation_penalty([y, y[:, :4]], lam=0.5)
    np.testing.assert_allclose(
        pen, 0.5 * (rx.mean() + np.asarray(ch.peer_overlap(y[:, :4])).mean()) / 2, rtol=1e-5
    )


def test_penalty_trains_down_and_has_finite_gradients():
    model = VGG(10, in_channels=1, cfg=(8, 8), rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    paths = reg.depth_spaced([u.conv for u in g.units], 6)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 6, 6, 1)), jnp.float32)
    gdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        _, acts = reg.conv_outputs(nnx.merge(gdef, p, rest, copy=True), x, paths)
        return reg.decorrelation_penalty(acts, lam=1.0)

    tx = optax.sgd(0.05)
    opt = tx.init(params)
    first = float(loss(params))
    step = jax.jit(
        lambda p, o: (
            lambda gr: (optax.apply_updates(p, tx.update(gr, o)[0]), tx.update(gr, o)[1])
        )(jax.grad(loss)(p))
    )
    for _ in range(30):
        params, opt = step(params, opt)
    assert float(loss(params)) < 0.8 * first
    # duplicated channels: large but finite value and gradient
    dup = jnp.concatenate([x.reshape(-1, 1)] * 3, axis=1)
    val, grad = jax.value_and_grad(reg.layer_shared_information)(dup)
    assert np.isfinite(float(val)) and np.isfinite(np.asarray(grad)).all()
    assert np.isclose(float(val), -0.5 * np.log(1e-6), rtol=1e-3)


def test_depth_spaced():
    assert reg.depth_spaced(list(range(20)), 6) == [0, 4, 8, 11, 15, 19]
    assert reg.depth_spaced([1, 2], 6) == [1, 2]
