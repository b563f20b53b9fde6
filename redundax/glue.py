"""GLUE fine-tunes of BERT-family classifiers on the training engine, and the layer-pruning
protocol of Liang (2025, Table 1) built on them.

- `encode_split(tokenizer, a, b, labels, *, max_length, limit)`: a split as fixed-length token
  arrays plus `label`.
- `classification_loss(num_labels)`: cross-entropy (mean squared error for a regression task
  such as STS-B) in the engine's `loss_fn(model, batch, rng)` form, dropout on.
- `metric_fn(num_labels)`: per-example sufficient statistics of the task metrics, so that
  `redundax.train.evaluate` (sharded, padded and masked batches, sums over devices and hosts)
  yields them as means: correctness and the binary confusion-matrix cells (accuracy, F1 of the
  positive class, Matthews correlation), or the first and second moments of prediction and
  label (Pearson correlation).
- `scores_from_means(task, means)`: the metrics of `redundax.text.glue_metric` from those means.
- `evaluate(state, split, task, *, batch_size, mesh)`: the task metric of a (replicated) train
  state on a split.
- `finetune(model, split, *, epochs, ...)`: `redundax.prune.finetune.finetune` over shuffled
  epochs of the split (resumable; None when preempted).
- `EpochStatistics`: an evaluator (`redundax.train.loop.Evaluator`) recording R_l (eq. 25),
  block influence, knowledge entropy and the space-time redundancy between consecutive epochs'
  pooled states after every epoch; its records survive a resume.
- `run_protocol(config, workdir, *, mesh, load_split)`: per task, fine-tune, record the per-epoch
  scores, remove `k` layers by each criterion, recover, score on the validation split; a task's
  result is kept in `workdir/glue/<task>/result.json` and reused by a rerun.
- `results_markdown(results)`, `write_figures(workdir, results)`.

The metrics are sums of float32 values over the split: they equal `glue_metric` on the argmax
predictions up to float32 rounding of the sums (about 1e-6 relative for Pearson's moments).
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from redundax import text
from redundax.functionals import entropy_rate as er
from redundax.models import hf_loader
from redundax.models.bert import SequenceClassifier, make_hidden_fn, mean_pool
from redundax.plots import layers as plots
from redundax.prune import finetune as ft
from redundax.prune import layer_study
from redundax.prune import layers as pl
from redundax.train import loop, step
from redundax.train import mesh as mesh_lib
from redundax.train import metrics as metrics_lib
from redundax.train.state import TrainState


def encode_split(
    tokenizer, a, b, labels, *, max_length: int, limit: int = 0
) -> dict[str, np.ndarray]:
    """Token arrays of length `max_length` and `label` of the first `limit` examples (0: all)."""
    if limit:
        a, labels = a[:limit], labels[:limit]
        b = None if b is None else b[:limit]
    if not len(a):
        raise ValueError("a GLUE split is empty.")
    enc = text.tokenize(tokenizer, a, b, length=max_length)
    enc["label"] = np.asarray(labels)
    return enc


def _logits(model: SequenceClassifier, batch, *, deterministic: bool) -> jax.Array:
    return model(
        batch["input_ids"],
        batch["attention_mask"],
        batch["token_type_ids"],
        deterministic=deterministic,
    )


@functools.lru_cache(maxsize=8)
def classification_loss(num_labels: int) -> step.LossFn:
    """The fine-tuning loss (one function object per head size, so compilations are shared)."""

    def loss_fn(model, batch, rng):
        del rng
        logits = _logits(model, batch, deterministic=False)
        if num_labels == 1:
            return jnp.mean((logits[:, 0] - batch["label"]) ** 2), {}
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    return loss_fn


def metric_fn(num_labels: int) -> step.MetricFn:
    """Per-example sufficient statistics of the task metrics (module docstring)."""

    def fn(model, batch) -> dict[str, jax.Array]:
        logits = _logits(model, batch, deterministic=True).astype(jnp.float32)
        y = batch["label"]
        if num_labels == 1:
            p, y = logits[:, 0], y.astype(jnp.float32)
            return {"p": p, "y": y, "pp": p * p, "yy": y * y, "py": p * y}
        p = jnp.argmax(logits, -1)
        out = {"correct": (p == y).astype(jnp.float32)}
        if num_labels == 2:
            for name, (pv, yv) in {"tp": (1, 1), "tn": (0, 0), "fp": (1, 0), "fn": (0, 1)}.items():
                out[name] = ((p == pv) & (y == yv)).astype(jnp.float32)
        return out

    return fn


def scores_from_means(task: str, means: Mapping[str, float]) -> dict[str, float]:
    """`redundax.text.glue_metric`'s metrics from the means of `metric_fn`'s values."""
    spec = text.glue_task(task)
    if spec.num_labels == 1:
        var_p = means["pp"] - means["p"] ** 2
        var_y = means["yy"] - means["y"] ** 2
        cov = means["py"] - means["p"] * means["y"]
        den = np.sqrt(max(var_p, 0.0) * max(var_y, 0.0))
        pearson = float(cov / den) if den > 0 else 0.0
        return {"pearson": pearson, "score": pearson}
    out = {"accuracy": float(means["correct"])}
    if spec.metric in ("mcc", "f1"):
        tp, tn, fp, fn = (float(means[k]) for k in ("tp", "tn", "fp", "fn"))
        if spec.metric == "mcc":
            den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
            out["mcc"] = float((tp * tn - fp * fn) / den) if den > 0 else 0.0
        else:
            out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    out["score"] = out[spec.metric]
    return out


@functools.lru_cache(maxsize=16)
def _eval_step(num_labels: int, mesh: Mesh):
    return step.make_eval_step(metric_fn(num_labels), mesh=mesh)


def evaluate(
    state: TrainState, split: Mapping[str, np.ndarray], task: str, *, batch_size: int, mesh: Mesh
) -> dict[str, float]:
    """The task metric of `state`'s classifier on `split` (module docstring)."""
    num_labels = text.glue_task(task).num_labels
    means = loop.evaluate(
        _eval_step(num_labels, mesh), state, split, batch_size=batch_size, mesh=mesh
    )
    return scores_from_means(task, means)


def split_batches(split: Mapping[str, np.ndarray], batch_size: int, seed: int):
    """Shuffled epochs of `split` in global batches of `batch_size` (`ShuffledBatches`)."""
    n = len(split["input_ids"])
    return ft.ShuffledBatches(
        n, batch_size, seed, lambda idx: {k: v[idx] for k, v in split.items()}
    )


def _pooled(model: SequenceClassifier, batches, pooling: str) -> list[np.ndarray]:
    fn, state = make_hidden_fn(model.encoder)
    out = []
    for b in batches:
        h = fn(state, b["input_ids"], b["attention_mask"], b["token_type_ids"])
        if pooling == "first":
            out.append(np.asarray(h[:, :, 0]))
        else:
            out.append(np.asarray(mean_pool(h, b["attention_mask"])))
    return out


class EpochStatistics:
    """Per-epoch layer scores of a fine-tune, as a `loop.Evaluator` (module docstring).

    After every epoch: R_l, block influence and knowledge entropy of the encoder on `batches`
    (fixed training batches), and from the second epoch on the space-time redundancy of the
    pooled states of this epoch against the previous one (`RedundancyAccumulator.update`). The
    values go to the fine-tune's `metrics.jsonl` as `epoch/<score>/<layer>`, and the pooled
    states to `rundir/pooled_<epoch>.npy`, so a resumed fine-tune reads the epochs it ran before.
    """

    SCORES = ("redundancy", "block_influence", "knowledge_entropy", "spacetime_redundancy")

    def __init__(self, batches, steps_per_epoch: int, pooling: str, rundir: pathlib.Path):
        self.batches, self.steps_per_epoch, self.pooling = batches, steps_per_epoch, pooling
        self.rundir = pathlib.Path(rundir)
        self.records: dict[int, dict[str, Any]] = {}
        self._pooled: dict[int, np.ndarray] = {}
        for r in metrics_lib.read_jsonl(self.rundir / metrics_lib.METRICS_FILE):
            if "epoch/redundancy/1" in r:
                self.records[int(r["step"]) // steps_per_epoch] = self._record(r)

    def _record(self, flat: Mapping[str, Any]) -> dict[str, Any]:
        rec: dict[str, Any] = {"epoch": int(flat["step"]) // self.steps_per_epoch}
        for score in self.SCORES:
            layers = sorted(
                int(k.rsplit("/", 1)[1]) for k in flat if k.startswith(f"epoch/{score}/")
            )
            if layers:
                rec[score] = [float(flat[f"epoch/{score}/{i}"]) for i in layers]
        return rec

    def __call__(self, state: TrainState) -> dict[str, float]:
        epoch = int(mesh_lib.to_host(state.step)) // self.steps_per_epoch
        model = ft.host_model(state)
        stats = pl.collect_statistics(model.encoder, self.batches, pooling=self.pooling)
        pooled = _pooled(model, self.batches, self.pooling)
        flat = {"step": epoch * self.steps_per_epoch}
        for score in self.SCORES[:3]:
            flat.update(
                {f"epoch/{score}/{i + 1}": float(v) for i, v in enumerate(getattr(stats, score))}
            )
        old = self._pooled.get(epoch - 1)
        path = self.rundir / f"pooled_{epoch - 1}.npy"
        if old is None and path.is_file():  # resumed: the previous epoch ran before
            old = np.load(path)
        if old is not None:
            acc = er.RedundancyAccumulator.zeros(model.encoder.num_layers)
            for new, prev in zip(pooled, old, strict=True):
                acc = acc.update(new, previous=prev)
            flat.update(
                {
                    f"epoch/spacetime_redundancy/{i + 1}": float(v)
                    for i, v in enumerate(np.asarray(acc.scores()))
                }
            )
        if jax.process_index() == 0:
            self.rundir.mkdir(parents=True, exist_ok=True)
            np.save(self.rundir / f"pooled_{epoch}.npy", np.stack(pooled))
        self._pooled = {epoch: np.stack(pooled)}
        self.records[epoch] = self._record(flat)
        return {k[len("epoch/") :]: v for k, v in flat.items() if k != "step"}

    def final_statistics(self) -> pl.LayerStatistics:
        """The last epoch's scores as `LayerStatistics` (for `select_layers`)."""
        last = self.records[max(self.records)]
        return pl.LayerStatistics(
            redundancy=np.asarray(last["redundancy"]),
            block_influence=np.asarray(last["block_influence"]),
            knowledge_entropy=np.asarray(last["knowledge_entropy"]),
            num_batches=len(self.batches),
            num_pairs=0,
            num_tokens=0,
        )


def finetune(
    model: SequenceClassifier,
    split: Mapping[str, np.ndarray],
    task: str,
    *,
    epochs: int,
    config: Any,
    mesh: Mesh,
    rundir: pathlib.Path,
    desc: str,
    evaluators: Mapping[str, loop.Evaluator] | None = None,
) -> TrainState | None:
    """`epochs` epochs of `config.glue.optim` on `split` (batches of `config.data.batch_size`,
    shuffled with `config.seed`); None when preempted."""
    batches = split_batches(split, config.data.batch_size, config.seed)
    return ft.finetune(
        model,
        classification_loss(text.glue_task(task).num_labels),
        batches,
        num_steps=epochs * batches.per_epoch,
        optim_config=config.glue.optim,
        mesh=mesh,
        rundir=rundir,
        config=config,
        checkpoint_every=config.checkpoint.every_steps,
        log_every=config.run.log_every,
        progress=config.run.progress,
        desc=desc,
        seed=config.seed,
        evaluators=evaluators,
    )


def _run_task(config, task, tok, model_dir, taskdir, mesh, load_split) -> dict | None:
    spec = text.glue_task(task)
    d = config.data
    kw = {"max_length": config.model.max_length}
    a, b, y = load_split(task, "train", d.data_dir or None)
    train = encode_split(tok, a, b, y, limit=d.max_train_examples, **kw)
    a, b, y = load_split(task, spec.eval_split, d.data_dir or None)
    evalset = encode_split(tok, a, b, y, limit=d.max_eval_examples, **kw)
    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[config.glue.dtype]
    model, _ = hf_loader.load_classifier(model_dir, spec.num_labels, dtype=dtype, seed=config.seed)
    scoring = split_batches(train, config.scores.batch_size, config.seed + 7)
    num = config.scores.num_batches or scoring.per_epoch
    score_batches = [scoring.fetch(scoring.indices(i)) for i in range(min(num, scoring.per_epoch))]
    per_epoch = len(train["input_ids"]) // config.data.batch_size
    epochs = EpochStatistics(score_batches, per_epoch, config.scores.pooling, taskdir / "finetune")
    state = finetune(
        model, train, task, epochs=config.glue.train.epochs, config=config, mesh=mesh,
        rundir=taskdir / "finetune", desc=f"{task}/finetune",
        evaluators={"epoch": loop.Evaluator(epochs, per_epoch)},
    )  # fmt: skip
    if state is None:
        return None
    ev = {"batch_size": config.eval.batch_size, "mesh": mesh}
    rows = [{"criterion": "none", "k": 0, "removed": [], **evaluate(state, evalset, task, **ev)}]
    stats = epochs.final_statistics()
    tuned = ft.host_model(state)
    for criterion in config.prune.criteria:
        for k in config.prune.ks:
            drop = pl.select_layers(criterion, k, tuned.encoder.num_layers, stats, seed=config.seed)
            name = f"{criterion}_k{k}"
            pruned = finetune(
                pl.remove_layers(tuned, drop), train, task,
                epochs=config.glue.train.recovery_epochs, config=config, mesh=mesh,
                rundir=taskdir / name, desc=f"{task}/{name}",
            )  # fmt: skip
            if pruned is None:
                return None
            metric = evaluate(pruned, evalset, task, **ev)
            rows.append(
                {"criterion": criterion, "k": k, "removed": [i + 1 for i in drop], **metric}
            )
    records = [epochs.records[e] for e in sorted(epochs.records)]
    return {"metric": spec.metric, "epochs": records, "rows": rows}


def run_protocol(
    config: Any, workdir: pathlib.Path, *, mesh: Mesh, load_split: Callable = text.load_glue
) -> dict[str, Any] | None:
    """Liang (2025), Table 1 (module docstring); None when preempted (rerun to resume)."""
    g = config.glue
    if not g.model_path:
        raise ValueError(
            "config.glue.model_path is empty: point it at an HF-format RoBERTa-base directory "
            "(config.json, model.safetensors, tokenizer.json), e.g. one written by transformers' "
            "save_pretrained(safe_serialization=True) plus tokenizer.save_pretrained."
        )
    if g.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"config.glue.dtype must be 'float32' or 'bfloat16'; got {g.dtype!r}.")
    model_dir = pathlib.Path(g.model_path)
    hf_loader.load_config(model_dir)  # clear error when the directory is not a checkpoint
    tok = text.load_tokenizer(model_dir, max_length=config.model.max_length)
    results: dict[str, Any] = {"task": "glue", "model": str(model_dir), "tasks": {}}
    for task in config.data.tasks:
        taskdir = workdir / "glue" / task
        done = taskdir / "result.json"
        if done.is_file():
            results["tasks"][task] = metrics_lib.loads_json_file(done)
            continue
        result = _run_task(config, task, tok, model_dir, taskdir, mesh, load_split)
        if result is None:
            return None
        if jax.process_index() == 0:
            metrics_lib.write_json(done, result)
        results["tasks"][task] = result
    return results


def results_markdown(results: Mapping[str, Any]) -> str:
    """`results.md`: the task metric of every criterion (rows) on every task (columns)."""
    tasks = list(results["tasks"])
    keys = list(
        dict.fromkeys((r["criterion"], r["k"]) for t in tasks for r in results["tasks"][t]["rows"])
    )
    rows = []
    for c, k in keys:
        row = [c if c == "none" else f"{c} (k={k})"]
        for t in tasks:
            match = [r for r in results["tasks"][t]["rows"] if (r["criterion"], r["k"]) == (c, k)]
            row.append(match[0]["score"] if match else "-")
        rows.append(row)
    header = ["criterion", *[f"{t} ({results['tasks'][t]['metric']})" for t in tasks]]
    md = ["# Layer pruning on GLUE (Liang, 2025, Table 1 protocol)", ""]
    return "\n".join([*md, layer_study.md_table(header, rows), ""])


def write_figures(workdir: pathlib.Path, results: Mapping[str, Any]) -> None:
    """R_l per layer after the last fine-tuning epoch, one curve per task."""
    profiles = {
        t: r["epochs"][-1]["redundancy"] for t, r in results["tasks"].items() if r["epochs"]
    }
    if profiles:
        plots.redundancy_profile(
            profiles, workdir / "redundancy_profile.png", title="R_l per layer after fine-tuning"
        )


__all__ = [
    "EpochStatistics",
    "classification_loss",
    "encode_split",
    "evaluate",
    "finetune",
    "metric_fn",
    "results_markdown",
    "run_protocol",
    "scores_from_means",
    "split_batches",
    "write_figures",
]
