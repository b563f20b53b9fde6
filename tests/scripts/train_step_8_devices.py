"""On 8 CPU devices: a data-parallel train step equals the single-device step, and BatchNorm
statistics are those of the global batch (not of a device's shard).

Run with JAX_NUM_CPU_DEVICES=8. Prints '8 devices OK' on success.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.train import step

assert jax.device_count() == 8, jax.devices()


def make_state():
    model = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
        nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0)),
        nnx.Linear(4, 2, rngs=nnx.Rngs(1)),
    )
    return state_lib.create(model, optax.sgd(0.1, momentum=0.9), 0)


def loss_fn(model, batch, rng):
    del rng
    logits = model(batch["x"])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])), {}


rng = np.random.default_rng(0)
# Shards with very different means: per-device statistics would differ from global ones.
x = (rng.normal(size=(32, 3)) + np.repeat(np.arange(8.0), 4)[:, None]).astype(np.float32)
batches = [{"x": x, "y": rng.integers(0, 2, 32).astype(np.int32)} for _ in range(3)]

results = {}
for name, devices in (("one", jax.devices()[:1]), ("eight", jax.devices())):
    mesh = mesh_lib.make_data_mesh(devices)
    state = mesh_lib.replicate(make_state(), mesh)
    w = np.asarray(state.params["layers"][0]["kernel"][...], np.float64)
    b = np.asarray(state.params["layers"][0]["bias"][...], np.float64)
    train_step = step.make_train_step(loss_fn, optax.sgd(0.1, momentum=0.9), mesh=mesh)
    first = True
    for batch in batches:
        sharded = mesh_lib.shard_batch(batch, mesh)
        assert len(sharded["x"].sharding.device_set) == len(devices)
        state, _ = train_step(state, sharded)
        if first:  # running statistics after one step: 0.1 * global-batch mean / variance
            h = batch["x"].astype(np.float64) @ w + b
            bn = state.other["layers"][1]
            mean, var = mesh_lib.to_host((bn["mean"][...], bn["var"][...]))
            np.testing.assert_allclose(mean, 0.1 * h.mean(0), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(var, 0.9 + 0.1 * h.var(0), rtol=1e-4, atol=1e-5)
            # (the mean of the 8 shard variances is far from the global variance here)
            shard_var = h.reshape(8, 4, -1).var(1).mean(0)
            assert np.all(np.abs(shard_var - h.var(0)) > 1.0)
            first = False
    leaf = state.params["layers"][0]["kernel"][...]
    assert leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == len(devices)
    results[name] = mesh_lib.to_host({"params": state.params, "other": state.other})

for a, b in zip(jax.tree.leaves(results["one"]), jax.tree.leaves(results["eight"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

mesh = mesh_lib.make_data_mesh()
try:
    mesh_lib.shard_batch({"x": np.zeros((12, 3))}, mesh)
except ValueError as e:
    assert "multiple of 8" in str(e), e
else:
    raise AssertionError("a 12-example batch over 8 devices must raise")
print("8 devices OK")
