"""redundax.train.state / step / loop.evaluate / mesh on one device, against closed forms."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from redundax.train import loop, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _regression_batch(n=8, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, d)).astype(np.float32),
        "y": rng.normal(size=(n, 1)).astype(np.float32),
    }


def mse_loss(model, batch, rng):
    del rng
    r = model(batch["x"]) - batch["y"]
    return jnp.mean(r**2), {"mean_residual": jnp.mean(r)}


def _numpy_grads(w, b, batch):
    x, y = batch["x"].astype(np.float64), batch["y"].astype(np.float64)
    r = x @ w + b - y
    return np.mean(r**2), 2 * x.T @ r / len(x), 2 * r.sum(0) / len(x)


def _linear_state(tx, seed=0):
    return state_lib.create(nnx.Linear(3, 1, rngs=nnx.Rngs(seed)), tx, seed)


def _wb(state):
    return np.asarray(state.params["kernel"][...], np.float64), np.asarray(
        state.params["bias"][...], np.float64
    )


def test_create_splits_params_from_other_state():
    model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    s = state_lib.create(model, optax.sgd(0.1), 7)
    param_types = {type(v) for _, v in nnx.to_flat_state(s.params)}
    other_types = {type(v) for _, v in nnx.to_flat_state(s.other)}
    assert param_types == {nnx.Param} and other_types == {nnx.BatchStat}
    assert int(s.step) == 0
    assert jax.dtypes.issubdtype(s.rng.dtype, jax.dtypes.prng_key)
    chex.assert_trees_all_equal(jax.random.key_data(s.rng), jax.random.key_data(jax.random.key(7)))
    chex.assert_trees_all_equal(
        jax.random.key_data(state_lib.step_rng(s)),
        jax.random.key_data(jax.random.fold_in(jax.random.key(7), 0)),
    )
    # the merged model is a copy: using it never touches the state
    m = s.model()
    assert isinstance(m, nnx.Sequential)
    with pytest.raises(ValueError, match="model"):
        state_lib.create(lambda x: x, optax.sgd(0.1), 0)
    with pytest.raises(ValueError, match="rng"):
        state_lib.create(model, optax.sgd(0.1), jnp.zeros(3))


def test_train_step_is_one_sgd_step_on_the_closed_form_gradient():
    lr = 0.1
    s = _linear_state(optax.sgd(lr))
    w, b = _wb(s)
    batch = _regression_batch()
    loss, gw, gb = _numpy_grads(w, b, batch)
    train_step = step.make_train_step(mse_loss, optax.sgd(lr), learning_rate=lambda c: lr)
    old_params = s.params
    s2, m = train_step(s, batch)
    w2, b2 = _wb(s2)
    np.testing.assert_allclose(w2, w - lr * gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b2, b - lr * gb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(m["grad_norm"], np.sqrt((gw**2).sum() + (gb**2).sum()), rtol=1e-5)
    assert set(m) == {"loss", "mean_residual", "grad_norm", "learning_rate"}
    assert int(s2.step) == 1
    assert old_params["kernel"][...].is_deleted()  # the state was donated


def scale_by_factor() -> optax.GradientTransformationExtraArgs:
    """Multiplies the updates by the extra argument `factor` (a test transform)."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, factor, **extra):
        del params, extra
        return jax.tree.map(lambda u: factor * u, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_extra_args_reach_the_transform_from_the_call_and_from_the_loss():
    lr = 0.1
    tx = optax.chain(scale_by_factor(), optax.sgd(lr))
    batch = _regression_batch()
    w, b = _wb(_linear_state(tx))
    _, gw, _ = _numpy_grads(w, b, batch)

    by_call = step.make_train_step(mse_loss, tx, donate=False)
    s0 = _linear_state(tx)
    np.testing.assert_allclose(_wb(by_call(s0, batch, factor=0.0)[0])[0], w, atol=0)
    np.testing.assert_allclose(
        _wb(by_call(s0, batch, factor=2.0)[0])[0], w - 2 * lr * gw, rtol=1e-5, atol=1e-6
    )

    def loss_with_signal(model, batch, rng):
        loss, aux = mse_loss(model, batch, rng)
        return loss, {**aux, step.EXTRA_ARGS: {"factor": jnp.float32(0.5)}}

    by_loss = step.make_train_step(loss_with_signal, tx)
    s1, m = by_loss(_linear_state(tx), batch)
    np.testing.assert_allclose(_wb(s1)[0], w - 0.5 * lr * gw, rtol=1e-5, atol=1e-6)
    assert step.EXTRA_ARGS not in m


def test_accumulated_micro_batches_equal_one_full_batch_step():
    lr, k = 0.1, 2
    batch = _regression_batch(n=8)
    halves = [jax.tree.map(lambda v, i=i: v[4 * i : 4 * (i + 1)], batch) for i in range(k)]
    base = optax.sgd(lr, momentum=0.9)
    full = step.make_train_step(mse_loss, base)
    s_full, _ = full(_linear_state(base), batch)

    tx = step.accumulate(base, k)
    schedule = optax.linear_schedule(1.0, 0.0, 10)
    acc = step.make_train_step(mse_loss, tx, learning_rate=schedule)
    s = _linear_state(tx)
    w0, _ = _wb(s)
    s, m1 = acc(s, halves[0])
    np.testing.assert_array_equal(_wb(s)[0], w0)  # no update after the first micro-batch
    s, m2 = acc(s, halves[1])
    np.testing.assert_allclose(_wb(s)[0], _wb(s_full)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_wb(s)[1], _wb(s_full)[1], rtol=1e-5, atol=1e-6)
    assert int(s.step) == 2
    # the schedule is read at the optimizer-update count, not the micro-batch count
    assert float(m1["learning_rate"]) == float(m2["learning_rate"]) == 1.0
    with pytest.raises(ValueError, match="every_k"):
        step.accumulate(base, 0)


def test_train_step_keeps_batchnorm_statistics_of_the_batch():
    model = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(0)),
        nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0)),
    )
    s = state_lib.create(model, optax.sgd(0.1), 0)
    batch = _regression_batch(n=16)
    w = np.asarray(s.params["layers"][0]["kernel"][...], np.float64)
    bias = np.asarray(s.params["layers"][0]["bias"][...], np.float64)
    h = batch["x"].astype(np.float64) @ w + bias

    def loss_fn(m, batch, rng):
        return jnp.mean(m(batch["x"]) ** 2), {}

    s, _ = step.make_train_step(loss_fn, optax.sgd(0.1))(s, batch)
    bn = s.other["layers"][1]
    np.testing.assert_allclose(bn["mean"][...], 0.1 * h.mean(0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn["var"][...], 0.9 + 0.1 * h.var(0), rtol=1e-4, atol=1e-6)


def test_evaluate_means_over_every_example_once():
    s = _linear_state(optax.sgd(0.1))
    data = _regression_batch(n=37, seed=3)
    w, b = _wb(s)
    errors = ((data["x"].astype(np.float64) @ w + b - data["y"]) ** 2)[:, 0]

    def metric_fn(model, batch):
        return {"sq_error": ((model(batch["x"]) - batch["y"]) ** 2)[:, 0]}

    eval_step = step.make_eval_step(metric_fn)
    mesh = mesh_lib.make_data_mesh()
    for batch_size in (5, 16, 37, 100):  # padded last batches of every size
        result = loop.evaluate(eval_step, s, data, batch_size=batch_size, mesh=mesh)
        assert result.keys() == {"sq_error"}
        np.testing.assert_allclose(result["sq_error"], errors.mean(), rtol=1e-5)
    sums = eval_step(s, {**data, "mask": np.arange(37) % 3 == 0})
    np.testing.assert_allclose(sums["sq_error"], errors[::3].sum(), rtol=1e-5)
    assert float(sums["count"]) == len(errors[::3])
    with pytest.raises(ValueError, match="per-example"):
        step.make_eval_step(lambda m, b: {"total": jnp.sum(m(b["x"]))})(s, data)
    with pytest.raises(ValueError, match="same number"):
        loop.evaluate(eval_step, s, {"x": data["x"], "y": data["y"][:3]}, batch_size=4, mesh=mesh)


def test_mesh_helpers_on_one_device():
    mesh = mesh_lib.make_data_mesh()
    assert mesh.axis_names == ("data",)
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    batch = mesh_lib.shard_batch({"a": np.arange(6.0), "b": np.ones((6, 2))}, mesh)
    np.testing.assert_array_equal(batch["a"], np.arange(6.0))
    with pytest.raises(ValueError, match="leading"):
        mesh_lib.shard_batch({"a": np.zeros(4), "b": np.zeros(5)}, mesh)
    key = jax.random.key(3)
    tree = mesh_lib.replicate({"k": key, "x": np.arange(3)}, mesh)
    chex.assert_trees_all_equal(jax.random.key_data(tree["k"]), jax.random.key_data(key))
    np.testing.assert_array_equal(mesh_lib.to_host(tree["x"]), np.arange(3))


def test_eight_devices_batchnorm_sees_the_global_batch():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env.update(JAX_NUM_CPU_DEVICES="8", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "train_step_8_devices.py")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "8 devices OK" in proc.stdout


def test_gradient_eval_step_sums_the_closed_form_gradient_over_unmasked_examples():
    """l_i = (w.x_i + b - y_i)^2 / 2: the step's gradient of the masked sum is
    sum_i m_i r_i x_i (kernel) and sum_i m_i r_i (bias), with r_i the residual; masked
    (padding) examples contribute nothing, and evaluate_batches turns the sums into means."""
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    state = state_lib.create(model, optax.sgd(0.1), 0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3)).astype(np.float32)
    y = rng.normal(size=(6,)).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 1, 0], np.float32)

    def losses(m, batch):
        return 0.5 * (m(batch["x"])[:, 0] - batch["y"]) ** 2

    def reduce(params, grads):
        return {"kernel": grads["kernel"][...][:, 0], "bias": grads["bias"][...]}

    grad_step = step.make_gradient_eval_step(losses, reduce)
    out = grad_step(state, {"x": x, "y": y, "mask": mask})
    w, b = np.asarray(model.kernel[...])[:, 0], np.asarray(model.bias[...])
    r = (x @ w + b - y) * mask
    np.testing.assert_allclose(out["kernel"], r @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["bias"], [r.sum()], rtol=1e-5, atol=1e-6)
    assert float(out["count"]) == 4.0
    with pytest.raises(ValueError, match="per-example losses"):
        step.make_gradient_eval_step(lambda m, b: losses(m, b).sum(), reduce)(
            state, {"x": x, "y": y}
        )
