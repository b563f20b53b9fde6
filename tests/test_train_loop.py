"""redundax.train.loop.train: what it logs, when it evaluates and checkpoints."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from redundax.train import checkpoint, failures, loop, metrics, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib


def _batches(n_steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_steps):
        yield {"x": rng.normal(size=(8, 3)).astype(np.float32),
               "y": rng.normal(size=(8, 1)).astype(np.float32)}  # fmt: skip


def _loss(model, batch, rng):
    del rng
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), {}


def _run(tmp_path, log_every, steps=6, **kwargs):
    tx = optax.sgd(0.05)
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(nnx.Linear(3, 1, rngs=nnx.Rngs(0)), tx, 0), mesh)
    with metrics.Writer(tmp_path, tensorboard=False) as writer:
        state = loop.train(state, step.make_train_step(_loss, tx), _batches(steps),
                           num_steps=steps, mesh=mesh, writer=writer, log_every=log_every,
                           progress=False, **kwargs)  # fmt: skip
    return state, metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)


def test_logged_metrics_are_means_over_the_logging_interval(tmp_path):
    _, every_step = _run(tmp_path / "a", log_every=1)
    _, every_fourth = _run(tmp_path / "b", log_every=4)
    losses = [r["train/loss"] for r in every_step]
    assert [r["step"] for r in every_step] == [1, 2, 3, 4, 5, 6]
    # step 4: mean of steps 1-4; step 6 (the end): mean of steps 5-6
    assert [r["step"] for r in every_fourth] == [4, 6]
    assert every_fourth[0]["train/loss"] == pytest.approx(np.mean(losses[:4]), rel=1e-6)
    assert every_fourth[1]["train/loss"] == pytest.approx(np.mean(losses[4:]), rel=1e-6)
    assert every_fourth[1]["examples_per_sec"] > 0 and "steps_per_sec" in every_fourth[1]


def test_evaluation_cadence_and_final_checkpoint(tmp_path):
    calls = []

    def eval_fn(state):
        calls.append(int(state.step))
        return {"eval/step_seen": float(state.step)}

    with checkpoint.Checkpointer(tmp_path / "ckpt", every=4) as ckpt:
        state, records = _run(
            tmp_path, log_every=10, steps=7, eval_fn=eval_fn, eval_every=3, checkpointer=ckpt
        )
    assert calls == [3, 6, 7]  # every 3 steps and at the end
    assert [(r["step"], r["eval/step_seen"]) for r in records if "eval/step_seen" in r] == [
        (3, 3.0), (6, 6.0), (7, 7.0)
    ]  # fmt: skip
    assert int(state.step) == 7
    assert checkpoint.read_state(tmp_path / "ckpt")[0] == 7
    with checkpoint.Checkpointer(tmp_path / "ckpt", every=4) as ckpt:
        assert sorted(ckpt.manager.all_steps()) == [4, 7]  # periodic + final


def test_bad_loop_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_steps"):
        _run(tmp_path, log_every=1, steps=-1)
    with pytest.raises(ValueError, match="log_every"):
        _run(tmp_path, log_every=0)


def test_pluggable_evaluators_run_at_their_cadence_next_to_eval_fn(tmp_path):
    seen = {"a": [], "b": []}

    def make(name):
        def fn(state):
            seen[name].append(int(state.step))
            return {"value": 10.0 * int(state.step)}

        return loop.Evaluator(fn, every=2 if name == "a" else 5)

    _, records = _run(
        tmp_path,
        log_every=10,
        steps=7,
        eval_fn=lambda s: {"test/step": float(s.step)},
        eval_every=3,
        evaluators={"a": make("a"), "b": make("b")},
    )
    assert seen == {"a": [2, 4, 6, 7], "b": [5, 7]}  # every `every` steps and at the end
    evaluated = {r["step"]: r for r in records if "train/loss" not in r}  # one record a step
    assert sorted(evaluated) == [2, 3, 4, 5, 6, 7]
    assert evaluated[6] == {"step": 6, "test/step": 6.0, "a/value": 60.0}
    assert evaluated[7] == {"step": 7, "test/step": 7.0, "a/value": 70.0, "b/value": 70.0}


@pytest.mark.parametrize("batch_size", [1, 4, 9, 5, 7, 100])  # 36 examples: some divide it
def test_evaluate_equals_the_numpy_mean_whatever_the_batch_size(batch_size):
    mesh = mesh_lib.make_data_mesh()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    state = mesh_lib.replicate(state_lib.create(model, optax.sgd(0.1), 0), mesh)
    rng = np.random.default_rng(1)
    arrays = {"x": rng.normal(size=(36, 3)).astype(np.float32),
              "y": rng.normal(size=(36, 1)).astype(np.float32)}  # fmt: skip

    def metric_fn(model, batch):
        return {"sq": jnp.sum((model(batch["x"]) - batch["y"]) ** 2, -1)}

    eval_step = step.make_eval_step(metric_fn, mesh=mesh)
    got = loop.evaluate(eval_step, state, arrays, batch_size=batch_size, mesh=mesh)
    w, b = np.asarray(model.kernel[...]), np.asarray(model.bias[...])
    expected = np.mean(np.sum((arrays["x"] @ w + b - arrays["y"]) ** 2, -1))
    assert got == pytest.approx({"sq": float(expected)}, rel=1e-5)


def _stacked_step(state, batch):
    """Two stacked members, each fitting w_k to (k + 1) times the batch mean of x."""
    target = batch["x"].mean() * jnp.arange(1.0, 3.0)
    loss = (state["w"] - target) ** 2
    new = {"w": state["w"] - 0.5 * 2 * (state["w"] - target), "step": state["step"] + 1}
    return new, {"loss": loss, "grad_norm": jnp.abs(2 * (state["w"] - target))}


class _Stacked:
    """A minimal stacked state: `step` and `params` as the loop reads them."""

    def __init__(self, tree):
        self.tree = tree

    @property
    def step(self):
        return self.tree["step"]


def test_stacked_members_log_each_member_mean_at_step_predicates(tmp_path):
    mesh = mesh_lib.make_data_mesh()
    batches = list(_batches(6))
    losses = []

    def train_step(s, batch):
        tree, m = _stacked_step(s.tree, batch)
        losses.append(np.asarray(m["loss"]))
        return _Stacked(tree), m

    state = _Stacked({"w": jnp.zeros(2), "step": jnp.zeros(2, jnp.int32)})
    with metrics.Writer(tmp_path, tensorboard=False) as writer:
        state = loop.train(state, train_step, iter(batches), num_steps=6, mesh=mesh,
                           writer=writer, log_every=lambda s: s in (2, 5), progress=False,
                           members=["a", "b"])  # fmt: skip
    records = metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)
    assert [r["step"] for r in records] == [2, 5, 6]  # the predicate's steps and the end
    losses = np.stack(losses)  # (steps, members)
    for r, (lo, hi) in zip(records, [(0, 2), (2, 5), (5, 6)], strict=True):
        for k, tag in enumerate("ab"):
            assert r[f"{tag}/train/loss"] == pytest.approx(losses[lo:hi, k].mean(), rel=1e-6)
    assert np.asarray(state.step).tolist() == [6, 6]


def test_stacked_member_divergence_names_the_member(tmp_path):
    mesh = mesh_lib.make_data_mesh()

    def train_step(s, batch):
        tree, m = _stacked_step(s.tree, batch)
        m["loss"] = m["loss"].at[1].set(jnp.nan)
        return _Stacked(tree), m

    state = _Stacked({"w": jnp.zeros(2), "step": jnp.zeros(2, jnp.int32)})
    with pytest.raises(failures.Diverged, match=r"step 1 \(member b\): loss=nan"):
        loop.train(state, train_step, _batches(3), num_steps=3, mesh=mesh, log_every=1,
                   progress=False, members=["a", "b"])  # fmt: skip


def test_logged_means_survive_a_checkpoint_mid_interval(tmp_path):
    """A run resumed from a checkpoint taken between two logs logs the same means as an
    uninterrupted run: the checkpoint keeps the step metrics since the last log."""
    _, ref = _run(tmp_path / "ref", log_every=4, steps=8)
    tx = optax.sgd(0.05)
    mesh = mesh_lib.make_data_mesh()
    init = state_lib.create(nnx.Linear(3, 1, rngs=nnx.Rngs(0)), tx, 0)
    train_step = step.make_train_step(_loss, tx)

    class StopAt6(checkpoint.Checkpointer):  # a preemption after step 6
        def should_stop(self, step):
            return step == 6

    with metrics.Writer(tmp_path / "run", tensorboard=False) as writer:
        with StopAt6(tmp_path / "ckpt", every=100) as ckpt:
            state = loop.train(mesh_lib.replicate(init, mesh), train_step, _batches(8),
                               num_steps=8, mesh=mesh, writer=writer, log_every=4,
                               checkpointer=ckpt, progress=False)  # fmt: skip
    assert int(state.step) == 6 and failures.was_preempted()
    failures.reset_preempted()
    stream = _batches(8)
    for _ in range(6):
        next(stream)
    with metrics.Writer(tmp_path / "run", tensorboard=False, resume_step=6) as writer:
        with checkpoint.Checkpointer(tmp_path / "ckpt", every=100) as ckpt:
            state = ckpt.restore(mesh_lib.replicate(init, mesh))
            loop.train(state, train_step, stream, num_steps=8, mesh=mesh, writer=writer,
                       log_every=4, checkpointer=ckpt, progress=False)  # fmt: skip
    got = metrics.read_jsonl(tmp_path / "run" / metrics.METRICS_FILE)
    assert [r["step"] for r in got] == [4, 8]
    by_step = {r["step"]: r for r in got}
    for s in (4, 8):
        assert by_step[s]["train/loss"] == pytest.approx(
            next(r for r in ref if r["step"] == s)["train/loss"], rel=1e-6
        )
