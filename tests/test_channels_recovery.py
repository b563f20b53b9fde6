"""Channel-pruning training on the engine (`redundax.prune.recovery`) against hand-written references:
a projected-SGD loop (the update, then the pruned parameters multiplied by zero), a plain gradient
step, a shuffled minibatch stream and whole-split accuracy and cross-entropy in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from redundax.models.resnet import ResNet
from redundax.models.vgg import VGG
from redundax.prune import channels as pc
from redundax.prune import graph as G
from redundax.prune import recovery
from redundax.train import mesh as mesh_lib

SGD = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3, "schedule": "constant"}


def tiny_resnet():
    return ResNet(3, in_channels=1, widths=(8, 16), blocks=(1, 1), rngs=nnx.Rngs(0))


def data(n=48, seed=5):
    x = np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype(np.float32)
    return x, (np.arange(n) % 3).astype(np.int32)


def reference_stream(images, labels, batch_size, seed):
    """The minibatch order of the recovery fine-tunes, written out (remainder dropped)."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(len(labels))
        for i in range(0, len(labels) - batch_size + 1, batch_size):
            yield images[perm[i : i + batch_size]], labels[perm[i : i + batch_size]]


def projected_sgd(model, graph, masks, batches, steps):
    """Reference: PyTorch-style SGD (L2 decay on the gradient, momentum), pruned BN scale and
    bias multiplied by zero after every update; train-mode BatchNorm."""
    model = G.apply_masks(nnx.clone(model), graph, masks)
    gdef, params, rest = nnx.split(nnx.view(model, use_running_average=False), nnx.Param, ...)
    mult = G.multipliers_like(params, graph, masks)
    tx = optax.chain(optax.add_decayed_weights(SGD["weight_decay"]), optax.sgd(SGD["lr"], 0.9))
    opt = tx.init(params)
    for _ in range(steps):
        x, y = next(batches)

        def loss(p, rest=rest, x=x, y=y):
            m = nnx.merge(gdef, p, rest, copy=True)
            return pc.cross_entropy(m(x), y), nnx.state(m, nnx.Not(nnx.Param))

        (_, rest), g = jax.value_and_grad(loss, has_aux=True)(params)
        upd, opt = tx.update(g, opt, params)
        params = jax.tree.map(lambda p, m: p * m, optax.apply_updates(params, upd), mult)
    return params, rest, nnx.merge(gdef, params, rest)


def test_array_stream_order_and_resume():
    x, y = data(20)
    stream = recovery.ArrayStream({"image": x, "label": y}, 6, seed=3)
    want = reference_stream(x, y, 6, 3)
    for _ in range(7):  # crosses two epoch boundaries (3 batches an epoch)
        got, (wx, wy) = next(stream), next(want)
        np.testing.assert_array_equal(got["image"], wx)
        np.testing.assert_array_equal(got["label"], wy)
    state = stream.get_state()
    follow = [next(stream)["label"] for _ in range(4)]
    again = recovery.ArrayStream({"image": x, "label": y}, 6, seed=3)
    again.set_state(state)
    for f in follow:
        np.testing.assert_array_equal(next(again)["label"], f)
    with pytest.raises(ValueError, match="batch_size"):
        recovery.ArrayStream({"image": x, "label": y}, 0, seed=0)


def test_masked_finetune_equals_projected_sgd_and_keeps_zeros():
    model = tiny_resnet()
    graph = G.channel_graph(model)
    rng = np.random.default_rng(0)
    masks = {u: rng.random(w) < 0.6 for u, w in G.unit_channels(graph).items()}
    x, y = data()
    mesh = mesh_lib.make_data_mesh()
    state = recovery.train(
        model, recovery.ArrayStream({"image": x, "label": y}, 16, seed=1), steps=5,
        optim_section=SGD, mesh=mesh, graph=graph, masks=masks, progress=False,
    )  # fmt: skip
    params, rest, _ = projected_sgd(model, graph, masks, reference_stream(x, y, 16, 1), 5)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(state.other), jax.tree.leaves(rest), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    flat = dict(nnx.to_flat_state(state.params))
    eff = G.effective_masks(graph, masks)
    for u in graph.units:
        for attr in ("scale", "bias"):
            v = np.asarray(flat[(*u.bn, attr)][...])
            assert np.all(v[~eff[u.name]] == 0.0)  # exactly zero after every update
            assert np.all(v[eff[u.name]] != 0.0)


def test_plain_step_and_evaluation_against_hand_computation():
    model = VGG(10, in_channels=1, cfg=(8, "M", 16), rngs=nnx.Rngs(1))
    x, y = data(8, seed=9)
    section = {"name": "sgd", "lr": 0.1, "momentum": 0.0, "schedule": "constant"}
    batches = iter([{"image": x, "label": y}])
    mesh = mesh_lib.make_data_mesh()
    one = recovery.train(model, batches, steps=1, optim_section=section, mesh=mesh, progress=False)
    gdef, params, rest = nnx.split(nnx.view(model, use_running_average=False), nnx.Param, ...)
    g = jax.grad(lambda p: pc.cross_entropy(nnx.merge(gdef, p, rest, copy=True)(x), y))(params)
    want = jax.tree.map(lambda p, d: p - 0.1 * d, params, g)
    for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # evaluation: eval-mode logits in NumPy, whatever the batch size (5 does not divide 8)
    trained = one.model()
    logits = np.asarray(nnx.view(trained, use_running_average=True)(jnp.asarray(x)), np.float64)
    z = logits - logits.max(1, keepdims=True)
    ce = np.log(np.exp(z).sum(1)) - z[np.arange(8), y]
    for batch_size in (5, 8, 64):
        got = recovery.evaluate(one, x, y, batch_size=batch_size, mesh=mesh)
        assert got["accuracy"] == np.mean(logits.argmax(1) == y)
        np.testing.assert_allclose(got["loss"], ce.mean(), rtol=1e-5)


def test_recoveries_record_and_skip(tmp_path):
    model = tiny_resnet()
    graph = G.channel_graph(model)
    masks = {u: np.arange(w) % 2 == 0 for u, w in G.unit_channels(graph).items()}
    x, y = data()
    kw = dict(steps=3, optim_section=SGD, batch_size=16, seed=2, mesh=mesh_lib.make_data_mesh(),
              directory=tmp_path, checkpoint_every=2)  # fmt: skip
    rec = recovery.Recoveries(model, graph, (x, y), (x, y), **kw)
    acc = rec("half", masks)
    *_, tuned = projected_sgd(model, graph, masks, reference_stream(x, y, 16, 2), 3)
    want = recovery.evaluate(tuned, x, y)
    assert acc == want["accuracy"]
    assert not (tmp_path / "half").exists()  # the finished fine-tune's checkpoint is removed
    again = recovery.Recoveries(model, graph, (x, y), (x, y), **kw)
    assert again.done == {"half": acc}
    assert again("half", None) == acc  # recorded: returned without training


def test_a_diverging_recovery_is_scored_as_its_non_finite_network(tmp_path):
    """A fine-tune that diverges (here: an infinite learning rate) is one point of a curve, not
    the run: it is scored like the network an unchecked fine-tune ends in (the reference: the
    projected-SGD loop run on into non-finite parameters), and the next point still trains."""
    model = tiny_resnet()
    graph = G.channel_graph(model)
    masks = {u: np.arange(w) % 2 == 0 for u, w in G.unit_channels(graph).items()}
    x, y = data()
    diverging = dict(SGD, lr=float("inf"))
    rec = recovery.Recoveries(model, graph, (x, y), (x, y), steps=3, optim_section=diverging,
                              batch_size=16, seed=2, mesh=mesh_lib.make_data_mesh(),
                              directory=tmp_path)  # fmt: skip
    acc = rec("diverged", masks)
    old = dict(SGD)
    SGD["lr"] = float("inf")
    try:
        params, *_, tuned = projected_sgd(model, graph, masks, reference_stream(x, y, 16, 2), 3)
    finally:
        SGD.update(old)
    assert not all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
    assert acc == recovery.evaluate(tuned, x, y)["accuracy"]
    assert rec.done == {"diverged": acc} and not (tmp_path / "diverged").exists()
    rec.optim_section = SGD
    assert np.isfinite(rec("next", masks))  # the curve goes on
