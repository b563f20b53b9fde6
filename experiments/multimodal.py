"""Multimodal balance: joint training, OGM-GE, RedReg and RedReg ablations on the same footing.

`python -m experiments.multimodal --config configs/multimodal.py[:preset] --workdir DIR`

For every method of `config.methods` and every seed: a concat-fusion classifier with unimodal
heads (`redundax.models.fusion`) trained by the shared platform (`redundax.train`), the method's
gradient transformation placed before the optimizer:

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
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from redundax.data import multimodal as mdata
from redundax.data import pipeline
from redundax.functionals.sensitivity import perturbation_sensitivity
from redundax.models import fusion
from redundax.plots import multimodal as plots
from redundax.train import checkpoint, cli, loop, metrics, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.transforms import OgmGeState, RedRegState, cross_modal_similarity, ogm_ge, redreg

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "multimodal.py")

REDREG_VARIANTS = {
    "redreg": {},
    "redreg_no_monitor": {"use_monitor": False},
    "redreg_no_gate": {"use_gate": False},
    "redreg_no_projection": {"projection": "none"},
    "redreg_scale": {"projection": "scale"},
}
METHODS = ("joint", "ogm_ge", *REDREG_VARIANTS)


# ---------------------------------------------------------------------------------- pieces


def parse_methods(value: str | tuple | list) -> tuple[str, ...]:
    names = tuple(value.split(",")) if isinstance(value, str) else tuple(value)
    names = tuple(n.strip() for n in names if n.strip())
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(
            f"config.methods must list methods among {', '.join(METHODS)} (comma separated); "
            f"got {value!r}."
        )
    return names


def make_model(config: ml_collections.ConfigDict, spec: mdata.MultimodalSpec, seed: int):
    rngs = nnx.Rngs(seed)
    if config.model.kind == "mlp":
        return fusion.mlp_fusion(
            spec.shapes,
            spec.num_classes,
            hidden=config.model.hidden,
            features=config.model.features,
            rngs=rngs,
        )
    if config.model.kind == "resnet18":
        return fusion.resnet18_fusion(spec.shapes, spec.num_classes, rngs=rngs)
    raise ValueError(f"config.model.kind must be 'mlp' or 'resnet18'; got {config.model.kind!r}.")


def make_optimizer(
    config: ml_collections.ConfigDict, method: str, steps_per_epoch: int, seed: int = 0
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`method`'s transform, then L2 weight decay and SGD with momentum (PyTorch order)."""
    o = config.optim
    num_steps = config.num_epochs * steps_per_epoch
    schedule = optax.piecewise_constant_schedule(
        o.lr, {o.decay_epoch * steps_per_epoch: o.decay_factor}
    )
    parts = [optax.add_decayed_weights(o.weight_decay), optax.sgd(schedule, momentum=o.momentum)]
    if method == "ogm_ge":
        g = config.ogm_ge
        parts.insert(
            0,
            ogm_ge(
                fusion.encoder_labels,
                alpha=g.alpha,
                noise=g.noise,
                start_step=g.start_epoch * steps_per_epoch,
                end_step=(g.end_epoch + 1) * steps_per_epoch - 1,
                seed=seed,
                min_ndim=g.min_ndim,
            ),
        )
    elif method in REDREG_VARIANTS:
        r = config.redreg
        options = {"projection": r.projection, **REDREG_VARIANTS[method]}
        parts.insert(
            0,
            redreg(
                fusion.encoder_labels,
                tau=optax.linear_schedule(r.tau_start, r.tau_end, max(num_steps - 1, 1)),
                window=r.window,
                ema_decay=r.ema_decay,
                gamma=r.gamma,
                trigger=r.trigger,
                beta_scale=r.beta_scale,
                reset_every=steps_per_epoch if r.reset_every_epoch else None,
                **options,
            ),
        )
    return optax.chain(*parts), schedule


def _true_class_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.mean(jnp.take_along_axis(probs, labels[:, None], axis=-1))


def make_loss_fn(config: ml_collections.ConfigDict, modalities: tuple[str, ...], method: str):
    """Fused + unimodal cross-entropy; the transforms' signals go out as `extra_args`."""
    weight = config.loss.unimodal_weight
    sigma = config.redreg.sigma
    needs_sensitivity = method in REDREG_VARIANTS

    def loss_fn(model: fusion.FusionClassifier, batch: dict, rng: jax.Array):
        labels = batch["label"]
        inputs = {m: batch[m] for m in modalities}
        fed = dict(inputs)
        if "keep" in batch:  # modality dropout: zero the dropped modality's inputs
            for i, m in enumerate(modalities):
                keep = batch["keep"][:, i].reshape((-1,) + (1,) * (inputs[m].ndim - 1))
                fed[m] = inputs[m] * keep
        out = model(fed)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out.logits, labels))
        ce_m = {
            m: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(lg, labels))
            for m, lg in out.unimodal_logits.items()
        }
        loss = ce + weight * sum(ce_m.values())
        probs = {m: _true_class_prob(out.unimodal_logits[m], labels) for m in modalities}
        scores = {m: _true_class_prob(out.slice_logits[m], labels) for m in modalities}
        sim = cross_modal_similarity(out.features)
        extra = {"probs": probs, "scores": scores, "similarity": sim}
        aux = {
            "ce_fused": ce,
            "accuracy": jnp.mean(jnp.argmax(out.logits, -1) == labels),
            "similarity": sum(sim.values()) / len(sim),
            **{f"ce/{m}": v for m, v in ce_m.items()},
            **{f"p/{m}": v for m, v in probs.items()},
            **{f"s/{m}": v for m, v in scores.items()},
        }
        if needs_sensitivity:
            keys = jax.random.split(rng, len(modalities))
            red = {}
            for key, m in zip(keys, modalities, strict=True):
                encoder = model.encoders[m]
                encoder.eval()  # as the reference code: BatchNorm statistics, no updates
                red[m] = perturbation_sensitivity(encoder, inputs[m], key, sigma)
                encoder.train()
            extra["sensitivity"] = red
            aux.update({f"red/{m}": v for m, v in red.items()})
        aux["extra_args"] = jax.lax.stop_gradient(extra)
        return loss, aux

    return loss_fn


def make_metric_fn(modalities: tuple[str, ...]):
    def metric_fn(model: fusion.FusionClassifier, batch: dict) -> dict[str, jax.Array]:
        out = model({m: batch[m] for m in modalities})
        y = batch["label"]
        values = {"acc_fused": jnp.argmax(out.logits, -1) == y}
        for m in modalities:
            values[f"acc/{m}"] = jnp.argmax(out.unimodal_logits[m], -1) == y
            values[f"acc_slice/{m}"] = jnp.argmax(out.slice_logits[m], -1) == y
        return {k: v.astype(jnp.float32) for k, v in values.items()}

    return metric_fn


def transform_signals(opt_state: Any) -> dict[str, jax.Array]:
    """The logged internals of the RedReg / OGM-GE state inside an optax chain state."""
    found: dict[str, jax.Array] = {}

    def visit(node: Any) -> None:
        if isinstance(node, RedRegState):
            for field in ("growth", "score", "beta"):
                found.update({f"{field}/{m}": v for m, v in getattr(node, field).items()})
            found.update(gate=node.gate, tau=node.tau, dominant=node.dominant)
        elif isinstance(node, OgmGeState):
            found.update({f"ratio/{m}": v for m, v in node.ratio.items()})
            found.update({f"coeff/{m}": v for m, v in node.coeff.items()})
        elif isinstance(node, tuple):
            for child in node:
                visit(child)

    visit(opt_state)
    return found


def make_eval_batches(source, config, mesh, cache_bytes: int = 2**29):
    """A function returning the test split as fixed-size, masked, sharded batches; a split
    smaller than ``cache_bytes`` (float32) is read once and kept in memory."""
    devices = mesh.size
    b = -(-config.data.eval_batch_size // devices) * devices

    def batches():
        it = mdata.make_iterator(
            source, global_batch_size=b, seed=0, shuffle=False, num_epochs=1, drop_remainder=False
        )
        for batch in it:
            n = len(batch["label"])
            if n == 0:
                continue
            padded = {
                k: np.concatenate([v, np.zeros((b - n, *v.shape[1:]), v.dtype)])
                for k, v in batch.items()
            }
            padded["mask"] = np.arange(b) < n
            yield mesh_lib.shard_batch(padded, mesh)

    size = 4 * len(source) * sum(int(np.prod(s)) for s in source.spec.shapes.values())
    if size > cache_bytes:
        return batches
    cached = list(batches())
    return lambda: cached


def evaluate(eval_step, state, eval_batches, spec) -> dict[str, float]:
    """Test accuracies (fused, unimodal heads, fused-head slices) and the imbalance measures."""
    totals = None
    for batch in eval_batches():
        sums = mesh_lib.to_host(eval_step(state, batch))
        totals = sums if totals is None else {k: totals[k] + sums[k] for k in totals}
    count = float(totals.pop("count"))
    out = {f"test/{k}": float(v) / count for k, v in totals.items()}
    accs = [out[f"test/acc/{m}"] for m in spec.modalities]
    slices = [out[f"test/acc_slice/{m}"] for m in spec.modalities]
    out["test/imbalance"] = max(accs) - min(accs)
    out["test/imbalance_slice"] = max(slices) - min(slices)
    return out


# ---------------------------------------------------------------------------------- one run


def make_steps(config: ml_collections.ConfigDict, method: str, spec, mesh, steps_per_epoch: int):
    """The jitted train and eval steps of ``method``, shared by its seeds (one compilation).

    The seed enters the optimizer only through ``init`` (OGM-GE's noise key), so the step built
    from the seed-0 optimizer serves every seed.
    """
    tx, schedule = make_optimizer(config, method, steps_per_epoch, seed=0)
    base_step = step.make_train_step(
        make_loss_fn(config, spec.modalities, method), tx, mesh=mesh, learning_rate=schedule
    )

    def train_step(s, batch):
        s, m = base_step(s, batch)
        return s, {**m, **transform_signals(s.opt_state)}

    return train_step, step.make_eval_step(make_metric_fn(spec.modalities), mesh=mesh)


def run_one(
    config: ml_collections.ConfigDict,
    rundir: pathlib.Path,
    method: str,
    seed: int,
    mesh: Any,
    sources: dict[str, mdata.MultimodalSource],
    steps: tuple,
    eval_batches,
) -> dict[str, Any] | None:
    """Train and evaluate one (method, seed); None when stopped by a preemption."""
    done = rundir / "result.json"
    if done.exists():
        return metrics.loads_json_file(done)
    spec = sources["train"].spec
    steps_per_epoch = pipeline.steps_per_epoch(len(sources["train"]), config.data.batch_size)
    num_steps = config.num_epochs * steps_per_epoch
    d = config.modality_dropout
    dropout = None
    if d.enabled:
        warm = max(1, int(config.num_epochs * d.warm_fraction))

        def dropout(t: int) -> float:
            ratio = min(1.0, (t // steps_per_epoch) / warm)
            return d.p_start + (d.p_end - d.p_start) * ratio

    batches = mdata.make_iterator(
        sources["train"],
        global_batch_size=config.data.batch_size,
        seed=seed,
        augment=config.data.augment,
        modality_dropout=dropout,
    )

    model = make_model(config, spec, seed)
    tx, _ = make_optimizer(config, method, steps_per_epoch, seed)
    state = mesh_lib.replicate(state_lib.create(model, tx, seed), mesh)
    ckpt = checkpoint.Checkpointer(
        rundir / checkpoint.CHECKPOINT_DIR,
        every=config.run.checkpoint_every_epochs * steps_per_epoch,
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
            eval_fn=lambda s: evaluate(eval_step, s, eval_batches, spec),
            eval_every=steps_per_epoch,
            log_every=config.run.log_every,
            progress=config.run.progress,
        )
    if int(mesh_lib.to_host(state.step)) < num_steps:
        return None
    result = {
        "method": method,
        "seed": seed,
        **evaluate(eval_step, state, eval_batches, spec),
        "steps": num_steps,
        "resumed_from_step": resumed_from,
        "train_seconds": time.time() - start,
    }
    if jax.process_index() == 0:
        metrics.write_json(done, result)
    return result


# ---------------------------------------------------------------------------------- summary


def summarise(results: list[dict[str, Any]], modalities: tuple[str, ...]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every test metric, per method."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in results):
        rows = [r for r in results if r["method"] == method]
        keys = [k for k in rows[0] if k.startswith("test/")]
        table[method] = {
            k[len("test/") :]: (
                float(np.mean([r[k] for r in rows])),
                float(np.std([r[k] for r in rows])),
            )
            for k in keys
        }
    return table


def write_results(workdir: pathlib.Path, results: dict[str, Any], modalities) -> None:
    if jax.process_index() != 0:
        return
    metrics.write_json(workdir / "results.json", results)
    cols = ["acc_fused", *(f"acc/{m}" for m in modalities), "imbalance"]
    cols += [*(f"acc_slice/{m}" for m in modalities), "imbalance_slice"]
    seeds = results["seeds"]
    lines = [
        f"# multimodal balance: {results['dataset']}",
        "",
        f"Test accuracy, mean ± std over seeds {seeds} ({results['epochs']} epochs). "
        "`acc/<m>`: unimodal head; `acc_slice/<m>`: the modality's share of the fused head; "
        "imbalance: max - min over modalities.",
        "",
        "| method | " + " | ".join(cols) + " |",
        "| --- | " + " | ".join("---" for _ in cols) + " |",
    ]
    for method, row in results["table"].items():
        cells = [f"{row[c][0]:.4f} ± {row[c][1]:.4f}" for c in cols]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results.get("dominance"):
        lines += [
            "",
            "Linear-classifier test accuracy of each view alone (dominance by construction): "
            + ", ".join(f"{k} {v:.3f}" for k, v in results["dominance"].items()),
        ]
    lines += ["", f"Wall time: {results['wall_time_sec']:.0f} s."]
    (workdir / "results.md").write_text("\n".join(lines) + "\n")


def write_figures(workdir, config, results, runs_dir, methods, modalities) -> None:
    if jax.process_index() != 0:
        return
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
    methods = parse_methods(config.methods)
    if not config.seeds:
        raise ValueError("config.seeds must list at least one seed.")
    mesh = mesh_lib.make_data_mesh()
    sources = {
        split: mdata.get_source(config.data.name, split, config.data.dir, config.data.variant)
        for split in ("train", "test")
    }
    spec = sources["train"].spec
    runs_dir = workdir / "runs"
    steps_per_epoch = pipeline.steps_per_epoch(len(sources["train"]), config.data.batch_size)
    eval_batches = make_eval_batches(sources["test"], config, mesh)
    results = []
    with metrics.Writer(workdir, tensorboard=True) as summary:
        for i, method in enumerate(methods):
            steps = make_steps(config, method, spec, mesh, steps_per_epoch)
            for seed in config.seeds:
                result = run_one(
                    config,
                    runs_dir / f"{method}-seed{seed}",
                    method,
                    int(seed),
                    mesh,
                    sources,
                    steps,
                    eval_batches,
                )
                if result is None:
                    return None  # preempted; re-run to resume
                results.append(result)
                summary.write(
                    i,
                    {
                        f"{method}/seed{seed}/{k[len('test/') :]}": v
                        for k, v in result.items()
                        if k.startswith("test/")
                    },
                )
    out = {
        "dataset": config.data.name,
        "modalities": list(spec.modalities),
        "dominant_by_construction": spec.dominant,
        "methods": list(methods),
        "seeds": [int(s) for s in config.seeds],
        "epochs": config.num_epochs,
        "steps_per_epoch": steps_per_epoch,
        "table": summarise(results, spec.modalities),
        "runs": results,
        "dominance": (
            mdata.measure_dominance(config.data.name, config.data.dir)
            if config.data.name == "digits_two_view"
            else None
        ),
        "devices": jax.device_count(),
        "wall_time_sec": time.time() - start,
    }
    write_results(workdir, out, spec.modalities)
    write_figures(workdir, config, out, runs_dir, methods, spec.modalities)
    return out


def main() -> None:
    cli.main(run, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
