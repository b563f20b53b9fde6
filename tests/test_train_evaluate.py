"""Evaluation over any iterable of batches equals a NumPy mean over the whole split, for batch sizes
that do and do not divide it, for ragged input batches, on 1 and 8 devices."""

import itertools
import json
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.train import step as step_lib
from redundax.train.evaluate import array_batches, evaluate_batches


def _setup():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    state = state_lib.create(model, optax.sgd(0.1), 0)

    def metric_fn(model, batch):
        out = model(batch["x"])
        return {
            "s": jnp.sum(out, -1),
            "hit": (jnp.argmax(out, -1) == batch["y"]).astype(jnp.float32),
        }

    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=37).astype(np.int32)
    out = np.asarray(model(jnp.asarray(x)))
    expected = {"s": out.sum(-1).mean(), "hit": (out.argmax(-1) == y).mean()}
    return state, metric_fn, x, y, expected


@pytest.mark.parametrize("batch_size", [1, 5, 8, 37, 64])
def test_arrays_any_batch_size(batch_size):
    state, metric_fn, x, y, expected = _setup()
    mesh = mesh_lib.make_data_mesh()
    eval_step = step_lib.make_eval_step(metric_fn, mesh=mesh)
    got = evaluate_batches(
        eval_step,
        state,
        array_batches({"x": x, "y": y}, batch_size, mesh),
        batch_size=batch_size,
        mesh=mesh,
    )
    assert got.keys() == expected.keys()
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5)


def test_ragged_iterable():
    state, metric_fn, x, y, expected = _setup()
    mesh = mesh_lib.make_data_mesh()
    eval_step = step_lib.make_eval_step(metric_fn, mesh=mesh)
    cuts = [0, 3, 4, 20, 21, 37]
    ragged = ({"x": x[a:b], "y": y[a:b]} for a, b in itertools.pairwise(cuts))
    got = evaluate_batches(eval_step, state, ragged, batch_size=6, mesh=mesh)
    for k in expected:
        np.testing.assert_allclose(got[k], expected[k], rtol=1e-5)


def test_bad_input():
    state, metric_fn, *_ = _setup()
    mesh = mesh_lib.make_data_mesh()
    eval_step = step_lib.make_eval_step(metric_fn, mesh=mesh)
    with pytest.raises(ValueError, match="no examples"):
        evaluate_batches(eval_step, state, iter([]), batch_size=4, mesh=mesh)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_batches(eval_step, state, iter([]), batch_size=0, mesh=mesh)
    with pytest.raises(ValueError, match="mappings"):
        evaluate_batches(eval_step, state, iter([np.zeros(3)]), batch_size=4, mesh=mesh)


def test_eight_devices_equal_one():
    code = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        sys.path.insert(0, "tests")
        import test_train_evaluate as t
        from redundax.train import mesh as mesh_lib, step as step_lib
        from redundax.train.evaluate import array_batches, evaluate_batches
        import jax
        assert jax.device_count() == 8
        state, metric_fn, x, y, expected = t._setup()
        mesh = mesh_lib.make_data_mesh()
        eval_step = step_lib.make_eval_step(metric_fn, mesh=mesh)
        out = {}
        for b in (3, 16, 37):
            got = evaluate_batches(eval_step, state, array_batches({"x": x, "y": y}, b, mesh),
                                   batch_size=b, mesh=mesh)
            out[b] = [got["s"], got["hit"], float(expected["s"]), float(expected["hit"])]
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for s, hit, es, eh in json.loads(proc.stdout.strip().splitlines()[-1]).values():
        np.testing.assert_allclose([s, hit], [es, eh], rtol=1e-5)
