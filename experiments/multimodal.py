"""Multimodal balance: joint training, OGM-GE, RedReg and RedReg ablations on the same footing.

`python -m experiments.multimodal --config configs/multimodal.py[:preset] --workdir DIR`

For every method of `config.methods` and every seed: a concat-fusion classifier with unimodal
heads (`redundax.models.fusion`) trained data-parallel by the engine (`redundax.train`: loop,
checkpoints, `optim.build` with the method's gradient transformation placed before the optimizer,
`evaluate.evaluate_batches`); the pieces live in `redundax.multimodal`:

- `joint`: none (plain joint training);
- `ogm_ge`: `redundax.transforms.ogm_ge` (Peng et al., 2022);
- `redreg`: `redundax.transforms.redreg` (Yang et al., 2025);
- `redreg_no_monitor`, `redreg_no_gate`: RedReg without its redundancy monitor / gate;
- `redreg_no_projection`: the unprojected drift is added (`projection="none"`);
- `redreg_scale`: plain scaling of the dominant gradient, `g / (1 + beta)`.

The per-step signals the transforms read (`p_m`, OGM-GE scores, cross-modal similarity and the
perturbation sensitivity) are computed in the forward pass and reach `tx.update` through the
loss function's `aux["extra_args"]`. Outputs in the workdir: `config.json`, `metrics.jsonl`
(final test metrics of every run), `runs/<method>-seed<k>/` (per-step `metrics.jsonl`,
TensorBoard events, checkpoints, `result.json`), `results.json` and `results.md` (the table),
`timeline_<method>.png`, `accuracy.png`, `accuracy_curves.png`. Re-running with the same
workdir skips finished runs and resumes an interrupted one from its checkpoint.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import ml_collections

import redundax.data as rd
from configs import multimodal as multimodal_config
from redundax import multimodal as mm
from redundax.data import multimodal as mdata
from redundax.data import pipeline
from redundax.plots import multimodal as plots
from redundax.train import checkpoint, cli, config_schema, loop, metrics
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "multimodal.py")


def make_dropout(config: ml_collections.ConfigDict, steps_per_epoch: int):
    """The modality-dropout probability as a function of the step (None when disabled)."""
    d = config.modality_dropout
    if not d.enabled:
        return None
    warm = max(1, int(config.train.epochs * d.warm_fraction))

    def dropout(t: int) -> float:
        ratio = min(1.0, (t // steps_per_epoch) / warm)
        return d.p_start + (d.p_end - d.p_start) * ratio

    return dropout


def run_one(config, rundir: pathlib.Path, method: str, seed: int, mesh, sources, steps, evaluate):
    """Train and evaluate one (method, seed); None when stopped by a preemption."""
    done = rundir / "result.json"
    if done.exists():
        return metrics.loads_json_file(done)
    spec = sources["train"].spec
    steps_per_epoch = pipeline.steps_per_epoch(len(sources["train"]), config.data.batch_size)
    num_steps = config.train.epochs * steps_per_epoch
    batches = mdata.make_iterator(
        sources["train"],
        global_batch_size=config.data.batch_size,
        seed=seed,
        augment=config.data.augment,
        modality_dropout=make_dropout(config, steps_per_epoch),
    )
    tx, _ = mm.make_optimizer(config, method, steps_per_epoch, seed)
    state = mesh_lib.replicate(
        state_lib.create(mm.make_model(config.model, spec, seed), tx, seed), mesh
    )
    ckpt = checkpoint.Checkpointer(
        rundir / checkpoint.CHECKPOINT_DIR,
        every=config.checkpoint.every_epochs * steps_per_epoch,
        keep=1,
        config=config,
    )
    state = ckpt.restore(state, batches)
    resumed_from = int(mesh_lib.to_host(state.step))
    train_step, eval_step = steps
    start = time.time()
    with metrics.Writer(rundir, resume_step=resumed_from) as writer, ckpt:
        state = loop.train(
            state,
            train_step,
            batches,
            num_steps=num_steps,
            mesh=mesh,
            writer=writer,
            checkpointer=ckpt,
            eval_fn=lambda s: evaluate(eval_step, s),
            eval_every=steps_per_epoch,
            log_every=config.run.log_every,
            progress=config.run.progress,
        )
    if int(mesh_lib.to_host(state.step)) < num_steps:
        return None
    result = {
        "method": method,
        "seed": seed,
        **evaluate(eval_step, state),
        "steps": num_steps,
        "resumed_from_step": resumed_from,
        "train_seconds": time.time() - start,
    }
    if jax.process_index() == 0:
        metrics.write_json(done, result)
    return result


def write_figures(workdir, config, results, runs_dir, methods, modalities) -> None:
    seed = int(config.seeds[0])
    curves: dict[str, dict[str, tuple[list, list]]] = {"acc_fused": {}}
    curves.update({f"acc/{m}": {} for m in modalities})
    for method in methods:
        records = metrics.read_jsonl(runs_dir / f"{method}-seed{seed}" / metrics.METRICS_FILE)
        train = [r for r in records if "train/loss" in r]
        series = {}
        for r in train:
            for k, v in r.items():
                if k.startswith("train/"):
                    series.setdefault(k[len("train/") :], []).append(v)
        steps = [r["step"] for r in train]
        if method != "joint" and method != "ogm_ge":
            plots.timeline(
                steps,
                series,
                modalities,
                workdir / f"timeline_{method}.png",
                title=f"{method} (seed {seed})",
                trigger=config.redreg.trigger,
            )
        elif method == "joint":
            plots.timeline(steps, series, modalities, workdir / "timeline_joint.png", title="joint")
        evals = [r for r in records if "test/acc_fused" in r]
        epochs = [r["step"] // max(1, results["steps_per_epoch"]) for r in evals]
        for key in curves:
            curves[key][method] = (epochs, [r[f"test/{key}"] for r in evals])
    columns = ["acc_fused", *(f"acc/{m}" for m in modalities)]
    plots.accuracy_bars(
        results["table"], columns, workdir / "accuracy.png", title=results["dataset"]
    )
    plots.accuracy_curves(curves, workdir / "accuracy_curves.png")


# ---------------------------------------------------------------------------------- run


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any] | None:
    """Every (method, seed) run, then the table and the figures."""
    start = time.time()
    config_schema.check_fields(config, multimodal_config.get_config())
    methods = mm.parse_methods(config.methods)
    if not config.seeds:
        raise ValueError("config.seeds must list at least one seed.")
    mesh = mesh_lib.make_data_mesh()
    d = config.data
    if not rd.is_multimodal(d.name):
        raise ValueError(f"config.data.name must be a multimodal dataset; got {d.name!r}.")
    sources = {s: rd.get_source(d.name, s, d.data_dir, config=d.variant) for s in ("train", "test")}
    spec = sources["train"].spec
    runs_dir = workdir / "runs"
    steps_per_epoch = pipeline.steps_per_epoch(len(sources["train"]), d.batch_size)
    test_batches = mm.eval_batches(sources["test"], config.eval.batch_size)

    def evaluate(eval_step, state):
        return mm.evaluate(
            eval_step, state, test_batches(), spec.modalities,
            batch_size=config.eval.batch_size, mesh=mesh,
        )  # fmt: skip

    results = []
    with metrics.Writer(workdir, tensorboard=True) as summary:
        for i, method in enumerate(methods):
            steps = mm.make_steps(config, method, spec.modalities, mesh, steps_per_epoch)
            for seed in config.seeds:
                rundir = runs_dir / f"{method}-seed{seed}"
                result = run_one(config, rundir, method, int(seed), mesh, sources, steps, evaluate)
                if result is None:
                    return None  # preempted; re-run to resume
                results.append(result)
                tests = {k[len("test/") :]: v for k, v in result.items() if k.startswith("test/")}
                summary.write(i, {f"{method}/seed{seed}/{k}": v for k, v in tests.items()})
    out = {
        "dataset": d.name,
        "modalities": list(spec.modalities),
        "dominant_by_construction": spec.dominant,
        "methods": list(methods),
        "seeds": [int(s) for s in config.seeds],
        "epochs": config.train.epochs,
        "steps_per_epoch": steps_per_epoch,
        "table": mm.summarise(results),
        "runs": results,
        "dominance": (
            mdata.measure_dominance(d.name, d.data_dir) if d.name == "digits_two_view" else None
        ),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "wall_time_sec": time.time() - start,
    }
    if jax.process_index() == 0:
        metrics.write_json(workdir / "results.json", out)
        (workdir / "results.md").write_text(mm.results_markdown(out))
        write_figures(workdir, config, out, runs_dir, methods, spec.modalities)
    return out


def main() -> None:
    cli.main(run, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
