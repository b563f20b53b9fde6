"""redundax.train.checkpoint: save/restore with the grain iterator, retention, config checks,
SIGTERM."""

from __future__ import annotations

import os
import signal

import jax
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

import redundax.data as rd
from redundax.train import checkpoint, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return rd.get_source("sklearn_digits", "train", tmp_path_factory.mktemp("tfds"))


def _config(lr=0.1, log_every=10, data_dir="/a"):
    c = ml_collections.ConfigDict()
    c.optim = ml_collections.ConfigDict({"lr": lr, "momentum": 0.9})
    c.model = ml_collections.ConfigDict({"widths": (4, 8)})
    c.data = ml_collections.ConfigDict({"name": "sklearn_digits", "dir": data_dir})
    c.run = ml_collections.ConfigDict({"log_every": log_every})
    return c


def _setup(source, tx):
    model = nnx.Sequential(
        nnx.Conv(1, 4, (3, 3), rngs=nnx.Rngs(0)),
        nnx.BatchNorm(4, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0)),
        lambda h: h.mean((1, 2)),
        nnx.Linear(4, 10, rngs=nnx.Rngs(1)),
    )
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(model, tx, 3), mesh)
    batches = rd.make_iterator(source, global_batch_size=16, seed=5, augment=True)
    return mesh, state, batches


def _loss(model, batch, rng):
    noise = 0.01 * jax.random.normal(rng, batch["image"].shape)  # uses the step's key
    logits = model(batch["image"] + noise)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), {}


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves((state.params, state.other, state.opt_state))]


def test_restore_continues_exactly_where_the_run_stopped(digits, tmp_path):
    tx = optax.adam(1e-2)
    train_step = step.make_train_step(_loss, tx)

    def run(state, batches, mesh, n):
        seen = []
        for _ in range(n):
            b = next(batches)
            seen.append(b["label"].copy())
            state, _ = train_step(state, mesh_lib.shard_batch(b, mesh))
        return state, seen

    mesh, state, batches = _setup(digits, tx)
    state, _ = run(state, batches, mesh, 3)
    with checkpoint.Checkpointer(tmp_path, every=3, config=_config()) as ckpt:
        assert ckpt.save(3, state, batches)
    reference, ref_seen = run(state, batches, mesh, 3)

    mesh, fresh, fresh_batches = _setup(digits, tx)  # a new process would start like this
    with checkpoint.Checkpointer(tmp_path, every=3, config=_config()) as ckpt:
        assert ckpt.latest_step() == 3
        restored = ckpt.restore(fresh, fresh_batches)
    assert int(restored.step) == 3
    np.testing.assert_array_equal(
        jax.random.key_data(restored.rng), jax.random.key_data(jax.random.key(3))
    )
    resumed, seen = run(restored, fresh_batches, mesh, 3)
    for a, b in zip(seen, ref_seen, strict=True):
        np.testing.assert_array_equal(a, b)  # the same batches, augmentation included
    for a, b in zip(_leaves(resumed), _leaves(reference), strict=True):
        np.testing.assert_array_equal(a, b)  # params, BatchNorm statistics, Adam moments

    # read_state gives the same arrays as NumPy, without a target
    saved_step, tree = checkpoint.read_state(tmp_path)
    assert saved_step == 3 and tree["step"] == 3
    kernel = tree["params"]["layers"]["3"]["kernel"]["value"]
    assert isinstance(kernel, np.ndarray) and kernel.shape == (4, 10)
    with pytest.raises(ValueError, match="no checkpoint of step 7"):
        checkpoint.read_state(tmp_path, step=7)


def test_interval_and_retention(digits, tmp_path):
    _, state, _ = _setup(digits, optax.sgd(0.1))
    with checkpoint.Checkpointer(tmp_path, every=2, keep=2) as ckpt:
        saved = [ckpt.save(s, state) for s in range(1, 8)]
        assert saved == [False, True, False, True, False, True, False]
        assert ckpt.save(7, state, force=True)
        assert not ckpt.save(7, state, force=True)  # never the same step twice
        ckpt.wait()
        assert sorted(ckpt.manager.all_steps()) == [6, 7]
    with pytest.raises(ValueError, match="every"):
        checkpoint.Checkpointer(tmp_path, every=0)
    with pytest.raises(ValueError, match="keep"):
        checkpoint.Checkpointer(tmp_path, every=1, keep=0)


def test_a_checkpoint_of_another_config_is_refused(digits, tmp_path):
    _, state, _ = _setup(digits, optax.sgd(0.1))
    checkpoint.check_config(tmp_path / "absent", _config(lr=0.5))  # nothing to compare: fine
    with checkpoint.Checkpointer(tmp_path, every=1, config=_config()) as ckpt:
        ckpt.save(1, state)
    with pytest.raises(ValueError) as error:
        checkpoint.Checkpointer(tmp_path, every=1, config=_config(lr=0.2))
    message = str(error.value)
    assert "optim.lr: 0.1 in the checkpoint, 0.2 now" in message
    assert "step 1" in message and "--workdir" in message
    # The refused run changed nothing.
    assert checkpoint.read_state(tmp_path)[0] == 1
    # Fields under `run` and `data.dir` may change on resumption.
    checkpoint.check_config(tmp_path, _config(log_every=1, data_dir="/elsewhere"))
    other = _config()
    other.model.depth = 3
    with pytest.raises(ValueError, match=r"model\.depth: absent in the checkpoint, 3 now"):
        checkpoint.check_config(tmp_path, other)
    (tmp_path / checkpoint.CONFIG_FILE).unlink()
    with pytest.raises(ValueError, match=r"no config\.json"):
        checkpoint.check_config(tmp_path, _config())


def test_config_differences_lists_every_field():
    saved = {"a": {"b": 1, "c": [1, 2]}, "run": {"x": 1}, "gone": True}
    now = {"a": {"b": 2, "c": [1, 2]}, "run": {"x": 2}, "new": None}
    lines = checkpoint.config_differences(saved, now)
    assert lines == [
        "  a.b: 1 in the checkpoint, 2 now",
        "  gone: True in the checkpoint, absent now",
        "  new: absent in the checkpoint, None now",
    ]
    assert checkpoint.config_differences(saved, saved) == []


def test_sigterm_requests_a_stop_and_the_handler_is_restored(tmp_path):
    previous = signal.getsignal(signal.SIGTERM)
    ckpt = checkpoint.Checkpointer(tmp_path, every=1)
    try:
        assert not ckpt.should_stop(1)
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the test process keeps running
        assert ckpt.should_stop(2)
    finally:
        ckpt.close()
    assert signal.getsignal(signal.SIGTERM) == previous
