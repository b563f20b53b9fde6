"""The layer-pruning fine-tunes on the engine: resumable batches, the optimizer section, GLUE
metrics through the sharded evaluator, and resuming a fine-tune.

References: NumPy's generator drawn by hand (batch order), `optim.build` with explicit
`warmup_steps`, `redundax.text.glue_metric` on predictions from a direct forward pass, and an
uninterrupted fine-tune.
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest
from flax import nnx

from configs import layers as layers_config
from redundax import glue
from redundax.models import bert
from redundax.prune import finetune as ft
from redundax.prune import layers as pl
from redundax.train import config_schema, failures, loop, optim
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib

TINY = bert.BertConfig(
    vocab_size=30,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    max_position_embeddings=16,
    layer_norm_eps=1e-5,
)


def jax_leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _split(n: int, seed: int, num_labels: int, t: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, t + 1, size=n)
    mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask > 0, rng.integers(1, TINY.vocab_size, size=(n, t)), 0).astype(np.int32)
    if num_labels == 1:
        label = rng.uniform(0, 5, size=n).astype(np.float32)
    else:
        label = rng.integers(0, num_labels, size=n).astype(np.int32)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(ids),
        "label": label,
    }


def _batches_at(step: int) -> ft.ShuffledBatches:
    it = ft.ShuffledBatches(10, 4, 3, lambda idx: {"x": np.asarray(idx) * 10})
    for _ in range(step):
        next(it)
    return it


def test_shuffled_batches_follow_numpy_permutations_and_resume():
    data = np.arange(10) * 10
    rng = np.random.default_rng(3)
    expected = []
    for _ in range(3):  # two full batches per epoch, the remainder of 2 dropped
        order = rng.permutation(10)
        expected += [data[order[:4]], data[order[4:8]]]
    it = _batches_at(0)
    got = [next(it)["x"] for _ in range(6)]
    np.testing.assert_array_equal(np.stack(got), np.stack(expected))
    resumed = _batches_at(0)
    resumed.set_state(_batches_at(3).get_state())
    np.testing.assert_array_equal(np.stack([next(resumed)["x"] for _ in range(3)]), expected[3:])
    with pytest.raises(ValueError, match="exceeds the 10 training examples"):
        ft.ShuffledBatches(10, 11, 0, lambda idx: {"x": idx})


def test_optim_section_turns_the_warmup_fraction_into_steps():
    section = {"name": "adamw", "lr": 1e-3, "schedule": "linear", "warmup_fraction": 0.25}
    fields = ft.optim_section(section, 40)
    assert fields["warmup_steps"] == 10 and "warmup_fraction" not in fields
    _, schedule = optim.build(fields, 40)
    for t in (0, 5, 10, 25, 39):  # linear warm-up over 10 steps, linear decay over 30
        expected = 1e-3 * (t / 10 if t < 10 else 1 - (t - 10) / 30)
        assert float(schedule(t)) == pytest.approx(expected, rel=1e-6)
    assert ft.optim_section({**section, "warmup_fraction": 0.01}, 10)["warmup_steps"] == 1
    with pytest.raises(ValueError, match="both set"):
        ft.optim_section({**section, "warmup_steps": 3}, 40)


@pytest.mark.parametrize("task", ["mrpc", "cola", "sst2", "mnli", "stsb"])
def test_glue_evaluate_equals_glue_metric_for_any_batch_size(task):
    spec = glue.text.glue_task(task)
    model = bert.SequenceClassifier(TINY, spec.num_labels, rngs=nnx.Rngs(1))
    split = _split(37, 2, spec.num_labels)
    logits = np.asarray(model(split["input_ids"], split["attention_mask"], split["token_type_ids"]))
    pred = logits[:, 0] if spec.num_labels == 1 else logits.argmax(-1)
    reference = glue.text.glue_metric(task, pred, split["label"])
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(model, optim.build({"lr": 0.1}, 1)[0], 0), mesh)
    for batch_size in (8, 37, 64):  # divides nothing, the whole split, more than the split
        got = glue.evaluate(state, split, task, batch_size=batch_size, mesh=mesh)
        assert got.keys() == reference.keys()
        for k, v in reference.items():  # float32 sums of the sufficient statistics
            assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (task, batch_size, k)


def test_finetune_stopped_by_sigterm_resumes_to_the_uninterrupted_state(tmp_path):
    """A SIGTERM during step 3 of 6 saves at step 3 and returns None; the same call again
    resumes and ends with the parameters of 6 uninterrupted steps; once more, it trains nothing
    and returns the same state."""
    model = bert.SequenceClassifier(TINY, 2, rngs=nnx.Rngs(0))
    split = _split(24, 5, 2)
    loss = glue.classification_loss(2)
    section = {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "decay_mask": "weights",
               "schedule": "linear", "warmup_fraction": 0.2}  # fmt: skip
    mesh = mesh_lib.make_data_mesh()
    kw = {"num_steps": 6, "optim_config": section, "mesh": mesh, "progress": False}

    def batches(signal_at: int | None = None) -> ft.ShuffledBatches:
        def fetch(idx):
            if signal_at is not None and it.step == signal_at:
                os.kill(os.getpid(), signal.SIGTERM)
            return {k: v[idx] for k, v in split.items()}

        it = ft.ShuffledBatches(24, 8, 0, fetch)
        return it

    whole = ft.finetune(model, loss, batches(), rundir=tmp_path / "whole", **kw)
    try:
        stopped = ft.finetune(model, loss, batches(2), rundir=tmp_path / "split", **kw)
        assert stopped is None and failures.was_preempted()
    finally:
        failures.reset_preempted()
    resumed = ft.finetune(model, loss, batches(), rundir=tmp_path / "split", **kw)
    again = ft.finetune(model, loss, batches(0), rundir=tmp_path / "split", **kw)  # a step: SIGTERM
    leaves = [jax_leaves(mesh_lib.to_host(s.params)) for s in (whole, resumed, again)]
    for a, b, c in zip(*leaves, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert int(mesh_lib.to_host(resumed.step)) == 6
    # The model given to finetune is untouched, and the trained one differs from it.
    assert not np.allclose(leaves[0][0], jax_leaves(nnx.state(model, nnx.Param))[0])
    assert pl.remove_layers(ft.host_model(whole), [0]).encoder.num_layers == 1


def test_old_layers_config_fields_name_their_successors():
    old = layers_config.get_config()
    old.unlock()
    old.corpus = {"num_calibration": 64}
    old.glue.epochs = 3
    with pytest.raises(ValueError) as error:
        config_schema.check_fields(old, layers_config.get_config())
    assert "config.corpus.num_calibration is now config.data.num_calibration" in str(error.value)
    assert "config.glue.epochs is now config.glue.train.epochs" in str(error.value)
    for preset in ("smoke", "glue"):
        config_schema.check_fields(layers_config.get_config(preset), layers_config.get_config())


def test_glue_epoch_statistics_survive_a_sigterm(tmp_path, monkeypatch):
    """Per-epoch R_l, block influence, knowledge entropy and space-time redundancy of a GLUE
    fine-tune stopped by SIGTERM in epoch 2 of 3 and resumed equal those of an uninterrupted one
    (the pooled states of epoch 1 come back from disk), and the pruning statistics match."""
    config = layers_config.get_config("glue")
    config.data.batch_size = 8
    config.run.progress = False
    split = _split(24, 7, 2)
    model = bert.SequenceClassifier(TINY, 2, rngs=nnx.Rngs(0))
    probe = [{k: v[:6] for k, v in split.items() if k != "label"}] * 2
    plain = glue.split_batches
    signal_at = {"step": None}

    def signalling_batches(*args):  # SIGTERM while fetching batch `signal_at`
        it = plain(*args)
        fetch = it.fetch

        def fetch_and_signal(idx):
            if it.step == signal_at["step"]:
                os.kill(os.getpid(), signal.SIGTERM)
            return fetch(idx)

        it.fetch = fetch_and_signal
        return it

    monkeypatch.setattr(glue, "split_batches", signalling_batches)

    def run(rundir):
        stats = glue.EpochStatistics(probe, 3, "mean", rundir)
        state = glue.finetune(
            model, split, "mrpc", epochs=3, config=config, mesh=mesh_lib.make_data_mesh(),
            rundir=rundir, desc="t", evaluators={"epoch": loop.Evaluator(stats, 3)},
        )  # fmt: skip
        return state, stats

    _, whole = run(tmp_path / "whole")
    signal_at["step"] = 4  # during epoch 2 (steps 4..6): saved at step 5
    try:
        stopped, _ = run(tmp_path / "split")
        assert stopped is None
    finally:
        failures.reset_preempted()
    signal_at["step"] = None
    _, resumed = run(tmp_path / "split")
    assert sorted(resumed.records) == [1, 2, 3] and "spacetime_redundancy" in resumed.records[2]
    assert resumed.records == whole.records
    a, b = whole.final_statistics(), resumed.final_statistics()
    np.testing.assert_array_equal(a.redundancy, b.redundancy)
    np.testing.assert_array_equal(a.knowledge_entropy, b.knowledge_entropy)
