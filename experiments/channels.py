"""Two-axis channel information and FLOPs-matched pruning (Safaai et al.): train, measure, intervene.

    python -m experiments.channels --config configs/channels.py --workdir runs/channels

For every architecture and seed: train data-parallel on the engine (`redundax.prune.recovery`:
`redundax.train` loop, checkpoints, `optim.build`); stream the two-axis metrics over a fixed
calibration subset of the training split, sharded over the devices (indices saved to
`calibration_indices.json`); summarise weak alignment (within-layer Spearman, local/target ARI vs
permutation null), propagation (eq. 13) and higher-order structure; run single-channel lesions with
peer replacement (`redundax.prune.lesion`); score every pruning method (`redundax.prune.methods`),
prune at the sparsities under one global threshold, fine-tune with the pruned channels kept at zero
and integrate accuracy retention over the common FLOPs-pruned interval (`redundax.prune.curves`). On
the first seed (`latency.all_seeds` for all), every curve point's physically shrunk network is also
timed on the CPU. Writes `results.json`, `results.md` (`redundax.prune.report`), `metrics.jsonl`,
`runs/<arch>_seed<seed>/` (training metrics, checkpoints, `recovery.json`, `run.json`) and figures.

Resuming: a rerun with the same workdir skips finished (arch, seed) runs and recorded fine-tunes, and
continues an interrupted base training or fine-tune from its checkpoint; a finished run only
rebuilds the tables and figures.
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx

from configs import channels as channels_config
from redundax import data, prune
from redundax.analysis import channels as ana
from redundax.models.mobilenet import MobileNetV2
from redundax.models.resnet import ResNet
from redundax.models.vgg import VGG, VGG16_CFG
from redundax.plots import channels as plots
from redundax.prune import flops as fl
from redundax.prune import graph as G
from redundax.prune import recovery, report
from redundax.train import checkpoint, cli, config_schema, metrics
from redundax.train import mesh as mesh_lib

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "channels.py")
METRIC_FIELDS = ("m", "hull_eps", "hull_cap", "triplet_top", "max_triplets", "top_fraction")
ARCH_LABELS = {"resnet18": "ResNet-18", "vgg16": "VGG-16", "mobilenetv2": "MobileNetV2"}


def build_model(arch, num_classes: int, in_channels: int, seed: int):
    rngs = nnx.Rngs(seed)
    if arch.name == "resnet18":
        widths = tuple(max(1, round(w * arch.width)) for w in arch.widths)
        return ResNet(num_classes, in_channels=in_channels, widths=widths,
                      blocks=tuple(arch.blocks), rngs=rngs)  # fmt: skip
    if arch.name == "vgg16":
        cfg = tuple(arch.cfg) if "cfg" in arch else VGG16_CFG
        return VGG(num_classes, in_channels=in_channels, cfg=cfg, width=arch.width, rngs=rngs)
    if arch.name == "mobilenetv2":
        kw = {"settings": tuple(tuple(x) for x in arch.settings)} if "settings" in arch else {}
        return MobileNetV2(num_classes, in_channels=in_channels, width=arch.width,
                           last_channels=arch.last_channels, rngs=rngs, **kw)  # fmt: skip
    raise ValueError(
        f"config.archs: unknown architecture {arch.name!r}; use resnet18, vgg16 or mobilenetv2."
    )


def _clean(x):
    """JSON-ready: NumPy and JAX values as Python ones, non-finite floats as None."""
    return metrics.strict_json(x)[0]


class _PhaseClock:
    """Logs the wall time of each phase of one (architecture, seed) run."""

    def __init__(self, tag: str):
        self.tag, self.t = tag, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        logging.info("%s: %s took %.1f s", self.tag, phase, now - self.t)
        self.t = now


def train_base(config, arch, ctx, seed: int, rundir: pathlib.Path):
    """The base network trained on the engine (resumable); None when preempted."""
    steps_per_epoch = max(1, ctx["n_train"] // config.data.batch_size)
    steps = config.train.steps or steps_per_epoch * config.train.epochs
    batches = data.make_iterator(ctx["source"], global_batch_size=config.data.batch_size,
                                 seed=seed, augment=config.data.augment)  # fmt: skip
    ckpt_dir = rundir / checkpoint.CHECKPOINT_DIR
    done = checkpoint.finished_steps(ckpt_dir)
    model = build_model(arch, ctx["spec"].num_classes, ctx["spec"].image_shape[-1], seed)
    with metrics.Writer(rundir, resume_step=max(done) if done else 0) as writer:
        state = recovery.train(
            model, batches, steps=steps, optim_section={**config.optim.to_dict(), "lr": arch.lr},
            mesh=ctx["mesh"], seed=seed, checkpoint_dir=ckpt_dir,
            checkpoint_every=config.checkpoint.every_steps, config=config, writer=writer,
            log_every=config.run.log_every, progress=config.run.progress,
            desc=f"{arch.name}/seed{seed} train",
        )  # fmt: skip
    if state is None:
        return None
    params, other = jax.device_put(mesh_lib.to_host((state.params, state.other)))
    model = nnx.merge(state.graphdef, params, other)
    model.eval()
    return model


def run_one(config, arch, seed: int, ctx, workdir: pathlib.Path) -> dict[str, Any] | None:
    """Train, measure, lesion, score and prune one (arch, seed); None when preempted."""
    tag = f"{arch.name}/seed{seed}"
    rundir = workdir / "runs" / f"{arch.name}_seed{seed}"
    if (rundir / "run.json").is_file():
        logging.info("%s: complete (%s); not retrained.", tag, rundir / "run.json")
        return metrics.loads_json_file(rundir / "run.json")
    clock, mesh, test = _PhaseClock(tag), ctx["mesh"], ctx["test"]
    logging.info("%s: training, then metrics, alignment, lesions, scores, pruning", tag)
    model = train_base(config, arch, ctx, seed, rundir)
    if model is None:
        return None
    graph = G.channel_graph(model)
    base = recovery.evaluate(model, *test, batch_size=config.eval.batch_size, mesh=mesh)
    clock("train")
    stats = ana.extract_stats(model, graph, *ctx["calib"], batch_size=config.calib.batch_size,
                              mesh=mesh, desc=f"{tag} metrics")  # fmt: skip
    per, summ = ana.compute_metrics(model, graph, stats, ctx["metric_config"])
    clock("metrics")
    m = config.metrics
    align = ana.alignment_summary(per, k=m.kmeans_k, n_perm=m.n_perm, seed=seed)
    prop = ana.propagation(model, graph, per)
    clock("alignment")
    les = config.lesion
    lesion = prune.lesion_probe(
        model, graph, per, *test, layers=les.layers, channels=les.channels, peers=les.peers,
        threshold=les.threshold, rng=np.random.default_rng(seed), mesh=mesh,
    )  # fmt: skip
    clock("lesions")
    image_shape = tuple(ctx["spec"].image_shape)
    fm = fl.flops_model(model, graph, image_shape)
    p = config.prune
    inputs = prune.ScoreInputs(model, graph, per, ctx["calib"], seed=seed, alpha=p.alpha,
                               gamma=p.gamma, taylor_batches=p.taylor_batches,
                               batch_size=config.calib.batch_size, mesh=mesh)  # fmt: skip
    scores = prune.method_scores(list(p.methods), inputs)
    clock("scores")
    steps_per_epoch = max(1, ctx["n_train"] // config.data.batch_size)
    recover = prune.Recoveries(
        model, graph, ctx["train"], test, steps=min(p.finetune_batches, p.finetune_epochs *
        steps_per_epoch), optim_section=p.optim, batch_size=config.data.batch_size, seed=seed + 7,
        mesh=mesh, eval_batch_size=config.eval.batch_size, directory=rundir / "recovery",
        checkpoint_every=config.checkpoint.every_steps,
    )  # fmt: skip
    lat = config.latency
    timed = lat.enabled and (lat.all_seeds or seed == config.seeds[0])
    latency = lambda masks: prune.latency_fields(
        model, graph, masks, image_shape, batch_sizes=lat.batch_sizes, repeats=lat.repeats,
        warmup=lat.warmup, min_seconds=lat.min_seconds,
    )  # fmt: skip
    curves = prune.pruning_curves(
        model, graph, fm, scores, sparsities=p.sparsities, recover=recover,
        base_accuracy=base["accuracy"], min_keep=p.min_keep, latency=latency if timed else None,
        desc=f"seed {seed} pruning curves",
    )  # fmt: skip
    if curves is None:
        return None
    clock("pruning" + (" and latency" if timed else ""))
    result = {
        "seed": seed,
        "test_accuracy": base["accuracy"],
        "macs": fl.count_macs(fm, graph)["total"],
        "params": fl.count_params(model),
        "alignment": align,
        "propagation": _clean(prop),
        "layers": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in summ.items()},
        "lesion": {k: v for k, v in lesion.items() if k != "rows"},
        "curves": curves,
        "scatter": {
            u: {"ix": per[u]["ix"].tolist(), "task_mi": per[u]["task_mi"].tolist()}
            for u in graph.names
        },
    }
    logging.info("%s: acc %.3f, rho(I_X, I_T) %.3f, ARI %.3f", tag, base["accuracy"],
                 align.get("rho_ix_taskmi_mean", math.nan), align.get("ari_mean", math.nan))  # fmt: skip
    result = _clean(result)
    if jax.process_index() == 0:
        metrics.write_json(rundir / "run.json", result)
    return result


def run(config, workdir: pathlib.Path) -> dict | None:
    """Every (arch, seed) run, then the tables and figures; None when preempted."""
    config_schema.check_fields(config, channels_config.get_config())
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    d = config.data
    train = data.load_arrays(d.name, "train", d.data_dir)
    n_train = len(train[1])
    idx = ana.calibration_indices(n_train, min(config.calib.size, n_train), config.calib.seed)
    if jax.process_index() == 0:
        ana.save_indices(workdir / "calibration_indices.json", idx, dataset=d.name,
                         split="train", seed=config.calib.seed)  # fmt: skip
    m = config.metrics
    ctx = {
        "mesh": mesh_lib.make_data_mesh(),
        "spec": data.dataset_info(d.name),
        "source": data.get_source(d.name, "train", d.data_dir),
        "train": train,
        "test": data.load_arrays(d.name, "test", d.data_dir),
        "n_train": n_train,
        "calib": (train[0][idx], train[1][idx]),
        "metric_config": ana.MetricConfig(
            hull_pool=m.hull_pool or None, **{k: m[k] for k in METRIC_FIELDS}
        ),
    }
    results: dict[str, Any] = {"dataset": d.name, "devices": jax.device_count(),
                               "processes": jax.process_count(), "archs": {}}  # fmt: skip
    accuracies = {}
    for arch in config.archs:
        runs = []
        for seed in config.seeds:
            result = run_one(config, arch, int(seed), ctx, workdir)
            if result is None:
                return None  # preempted: rerun the same command to resume
            runs.append(result)
            accuracies[f"{arch.name}/seed{seed}/test_accuracy"] = result["test_accuracy"]
        results["archs"][ARCH_LABELS.get(arch.name, arch.name)] = prune.summarise(
            runs, config.prune.methods, n_boot=config.prune.n_boot,
            latency_batch_sizes=config.latency.batch_sizes,
        )  # fmt: skip
        results["elapsed_s"] = time.time() - t0
        if jax.process_index() == 0:  # after every architecture: a long run leaves tables behind
            metrics.write_json(workdir / "results.json", _clean(results), indent=1)
            (workdir / "results.md").write_text(report.results_markdown(results, config))
    if jax.process_index() == 0:
        with metrics.Writer(workdir, resume_step=-1) as writer:
            writer.write(0, accuracies)
        plots.write_all(results, workdir)
    return results


def main(argv=None):
    cli.main(run, DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    main()
