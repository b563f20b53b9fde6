"""The monitor as an evaluator of the training loop, and experiments/monitor.py (smoke, MiniLM)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import monitor as monitor_config
from experiments import monitor as monitor_experiment
from redundax import monitor, text
from redundax.models import hf_loader
from redundax.train import loop, metrics, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from tests.test_monitor import numpy_metrics


class TwoLayer(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(3, 6, rngs=rngs)
        self.out = nnx.Linear(6, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def _batches(n_steps):
    rng = np.random.default_rng(0)
    for _ in range(n_steps):
        yield {"x": rng.normal(size=(8, 3)).astype(np.float32),
               "y": rng.normal(size=(8, 1)).astype(np.float32)}  # fmt: skip


def _loss(model, batch, rng):
    del rng
    return jnp.mean((model(batch["x"]) - batch["y"]) ** 2), {}


def test_loop_logs_monitor_layer_metrics_every_k_steps_and_at_the_end(tmp_path):
    held_out = [np.random.default_rng(1).normal(size=(40, 3)).astype(np.float32)] * 2
    fn = monitor.evaluator(held_out, where=r"hidden", metrics=("effective_rank", "num_samples"))
    with pytest.raises(ValueError, match="every"):
        loop.Evaluator(fn, every=0)
    tx = optax.sgd(0.05)
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(state_lib.create(TwoLayer(nnx.Rngs(0)), tx, 0), mesh)
    with metrics.Writer(tmp_path, tensorboard=False) as writer:
        state = loop.train(state, step.make_train_step(_loss, tx), _batches(7), num_steps=7,
                           mesh=mesh, writer=writer, log_every=10, progress=False,
                           evaluators={"monitor": loop.Evaluator(fn, every=3)})  # fmt: skip
    records = [r for r in metrics.read_jsonl(tmp_path / "metrics.jsonl") if "monitor/hidden/effective_rank" in r]  # fmt: skip
    assert [r["step"] for r in records] == [3, 6, 7]
    assert set(records[-1]) == {"step", *(f"monitor/hidden/{k}" for k in ("effective_rank", "num_samples", "undersampled"))}  # fmt: skip
    assert records[-1]["monitor/hidden/num_samples"] == 80
    # the final record is the final model's value: NumPy on its hidden activations
    model = state.model()
    x = np.concatenate(held_out).astype(np.float64)
    h = x @ np.asarray(model.hidden.kernel[...]) + np.asarray(model.hidden.bias[...])
    np.testing.assert_allclose(
        records[-1]["monitor/hidden/effective_rank"], numpy_metrics(h)["effective_rank"], rtol=1e-4
    )
    steps, layers, values = monitor.history(records, "effective_rank")
    assert steps == [3, 6, 7] and layers == ["hidden"] and values.shape == (1, 3)


def test_monitor_experiment_smoke_writes_heatmaps(tmp_path):
    config = monitor_config.get_config("smoke")
    results = monitor_experiment.run(config, tmp_path)
    steps = results["evaluated_steps"]
    assert steps == [10, 20, 30, 40, 50, 60, 66]
    assert sorted(results["final"]) == sorted(
        ["stem.conv", "stages.0.0.conv1.conv", "stages.0.0.conv2.conv", "stages.1.0.conv1.conv",
         "stages.1.0.conv2.conv", "stages.1.0.shortcut.conv"]
    )  # fmt: skip
    for layer, v in results["final"].items():
        width = 8 if ".0.0." in layer or layer == "stem.conv" else 16
        assert 0 <= v["spectral_redundancy"] <= 1 - 1 / width + 1e-6, layer
        assert 1 <= v["effective_rank"] <= width + 1e-4 and v["undersampled"] == 0.0
    for metric in config.plots.metrics:
        assert (tmp_path / f"heatmap_{metric}.png").stat().st_size > 10_000
        assert (tmp_path / f"profile_{metric}.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["task"] == "classify"
    assert "| stem.conv |" in (tmp_path / "results.md").read_text()


def test_minilm_task_masks_padding_and_matches_numpy_on_the_hidden_states(tmp_path):
    config = monitor_config.get_config("minilm")
    config.minilm.num_sentences = 24
    config.minilm.batch_size = 10  # 3 batches of different padded lengths
    config.minilm.metrics = ("spectral_redundancy", "rankme", "num_samples")
    results = monitor_experiment.run(config, tmp_path)["layers"]
    assert list(results) == ["embeddings", *(f"layers.{i}" for i in range(6))]
    # reference: the encoder's own hidden states (L+1, B, T, d), non-padding tokens concatenated
    model, _ = hf_loader.load_pretrained(hf_loader.minilm_dir())
    tok = text.load_tokenizer(hf_loader.minilm_dir(), max_length=config.minilm.max_length)
    sentences = text.python_doc_sentences()[:24]
    hidden = [[] for _ in range(7)]
    for b in text.token_batches(tok, sentences, 10):
        h = np.asarray(model(b["input_ids"], b["attention_mask"], b["token_type_ids"]))
        for i in range(7):
            hidden[i].append(h[i][b["attention_mask"] > 0])
    for i, layer in enumerate(results):
        ref = numpy_metrics(np.concatenate(hidden[i]))
        assert results[layer]["num_samples"] == ref["num_samples"] > 384  # more tokens than units
        for name in ("spectral_redundancy", "rankme"):
            np.testing.assert_allclose(results[layer][name], ref[name], rtol=2e-3, err_msg=layer)
