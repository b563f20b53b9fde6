"""Redundancy of every layer of a model, during training or of a pretrained encoder.

    python -m experiments.monitor --config configs/monitor.py --workdir runs/monitor
    python -m experiments.monitor --config configs/monitor.py:minilm --workdir runs/minilm

Task "classify" (default): trains the classify experiment's ResNet with `redundax.monitor` as an
evaluator of the training loop (`monitor/<layer>/<metric>` in `metrics.jsonl` and TensorBoard),
then draws, per metric of `config.plots.metrics`, a layer x step heatmap and a per-layer profile
with one line per evaluation. Task "minilm": measures the pretrained MiniLM's embeddings and
encoder layers on offline English sentences (padding tokens masked out). Both write
`results.json` and `results.md` (the per-layer table of the last measurement).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from configs import monitor as monitor_config
from experiments import classify
from redundax import monitor, text
from redundax.models import hf_loader
from redundax.plots import monitor as plots
from redundax.train import cli, metrics

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "monitor.py")


def layer_table(results: dict[str, dict[str, float]], title: str, note: str) -> str:
    """Markdown table: one row per layer, one column per metric."""
    names = list(next(iter(results.values())))
    rows = [
        f"| {layer} | " + " | ".join(f"{values[n]:.4g}" for n in names) + " |"
        for layer, values in results.items()
    ]
    header = "| layer | " + " | ".join(names) + " |\n|" + " --- |" * (len(names) + 1)
    return f"# {title}\n\n{note}\n\n{header}\n" + "\n".join(rows) + "\n"


def write(workdir: pathlib.Path, results: dict[str, Any], table: str) -> None:
    if jax.process_index() != 0:
        return
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (workdir / "results.md").write_text(table)


def run_classify(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    trained = classify.run(config, workdir, schema=monitor_config.get_config())
    if trained is None:
        return None  # preempted: re-run to resume
    records = metrics.read_jsonl(workdir / metrics.METRICS_FILE)
    figures = []
    for metric in config.plots.metrics:
        steps, layers, values = monitor.history(records, metric)
        if jax.process_index() == 0:
            figures.append(str(plots.heatmap(steps, layers, values, workdir / f"heatmap_{metric}.png", metric=metric)))  # fmt: skip
            figures.append(str(plots.profile(steps, layers, values, workdir / f"profile_{metric}.png", metric=metric)))  # fmt: skip
    names = (*config.monitor.metrics, "undersampled")
    last = {}
    for metric in names:
        steps, layers, values = monitor.history(records, metric)
        for layer, v in zip(layers, values[:, -1], strict=True):
            last.setdefault(layer, {})[metric] = float(v)
    results = {
        "task": "classify",
        "classify": trained,
        "evaluated_steps": steps,
        "final": last,
        "figures": figures,
    }
    note = (
        f"{config.data.name}, step {steps[-1]}: test accuracy {trained['test_accuracy']:.4f}; "
        f"{config.monitor.num_examples} held-out images, every spatial position a sample."
    )
    write(workdir, results, layer_table(last, "Layer redundancy of the classify ResNet", note))
    return results


def run_minilm(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    c = config.minilm
    model_dir = pathlib.Path(c.path) if c.path else hf_loader.minilm_dir()
    model, model_cfg = hf_loader.load_pretrained(model_dir)
    tok = text.load_tokenizer(model_dir, max_length=c.max_length)
    sentences = text.python_doc_sentences()[: c.num_sentences]
    local = np.array_split(np.arange(len(sentences)), jax.process_count())[jax.process_index()]
    batches = text.token_batches(tok, [sentences[i] for i in local], c.batch_size)
    measured = monitor.measure(
        model,
        batches,
        where=c.where,
        metrics=tuple(c.metrics),
        reduce=c.reduce,
        mask=lambda b: b["attention_mask"],
    )
    layers = list(measured)
    for metric in ("spectral_redundancy", "rankme"):
        if metric in c.metrics and jax.process_index() == 0:
            values = np.array([[measured[layer][metric]] for layer in layers])
            plots.profile([0], layers, values, workdir / f"profile_{metric}.png", metric=metric,
                          title=f"{metric} of the pretrained MiniLM, per layer")  # fmt: skip
    results = {
        "task": "minilm",
        "model": str(model_dir),
        "hidden_size": model_cfg.hidden_size,
        "num_sentences": len(sentences),
        "layers": measured,
    }
    note = (
        f"all-MiniLM-L6-v2 (d = {model_cfg.hidden_size}), {len(sentences)} sentences of the "
        "offline corpus; every non-padding token a sample."
    )
    write(workdir, results, layer_table(measured, "Layer redundancy of MiniLM", note))
    return results


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any] | None:
    if config.task == "classify":
        return run_classify(config, workdir)
    if config.task == "minilm":
        return run_minilm(config, workdir)
    raise ValueError(f"config.task must be 'classify' or 'minilm'; got {config.task!r}.")


def main() -> None:
    cli.main(run, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
