"""Two-axis channel information and FLOPs-matched pruning (Safaai et al.): train, measure, intervene.

    python -m experiments.channels --config configs/channels.py --workdir runs/channels

For every architecture and seed: train; stream the two-axis metrics over a fixed calibration subset of
the training split (indices saved to `calibration_indices.json`); summarise weak alignment (within-
layer Spearman, local/target ARI vs permutation null), propagation (eq. 13) and higher-order
structure; run single-channel lesions with peer replacement; prune with every method at the 10
sparsities under one global threshold, fine-tune, and integrate accuracy retention over the common
FLOPs-pruned interval. On the first seed (`latency.all_seeds` for all), every curve point's physically
shrunk network is also timed on the CPU at batch 1 and a large batch (`redundax.prune.latency`), and
retention is integrated against latency saved too. Writes `results.json`, `results.md` (tables like
the paper's Tables 8-9, the alignment summary, AUC against MACs and against latency),
`metrics.jsonl`, TensorBoard events, model checkpoints and figures (`latency_vs_macs.png`).
"""

from __future__ import annotations

import math
import pathlib
import time
from typing import Any

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx
from scipy import stats as sstats

from redundax import data
from redundax.analysis import channels as ana
from redundax.models.mobilenet import MobileNetV2
from redundax.models.resnet import ResNet
from redundax.models.vgg import VGG, VGG16_CFG
from redundax.plots import channels as plots
from redundax.prune import channels as pc
from redundax.prune import flops as fl
from redundax.prune import graph as G
from redundax.prune import latency as lat
from redundax.train import cli
from redundax.train import metrics as metrics_lib
from redundax.train.progress import Progress, track

ARCH_LABELS = {"resnet18": "ResNet-18", "vgg16": "VGG-16", "mobilenetv2": "MobileNetV2"}


def build_model(arch, num_classes: int, in_channels: int, seed: int):
    rngs = nnx.Rngs(seed)
    if arch.name == "resnet18":
        widths = tuple(max(1, round(w * arch.width)) for w in arch.widths)
        return ResNet(
            num_classes,
            in_channels=in_channels,
            widths=widths,
            blocks=tuple(arch.blocks),
            rngs=rngs,
        )
    if arch.name == "vgg16":
        cfg = tuple(arch.cfg) if "cfg" in arch else VGG16_CFG
        return VGG(num_classes, in_channels=in_channels, cfg=cfg, width=arch.width, rngs=rngs)
    if arch.name == "mobilenetv2":
        kw = {"settings": tuple(tuple(x) for x in arch.settings)} if "settings" in arch else {}
        return MobileNetV2(
            num_classes,
            in_channels=in_channels,
            width=arch.width,
            last_channels=arch.last_channels,
            rngs=rngs,
            **kw,
        )
    raise ValueError(
        f"config.archs: unknown architecture {arch.name!r}; use resnet18, vgg16 or mobilenetv2."
    )


def batch_stream(images, labels, batch_size: int, seed: int):
    """Endless shuffled minibatches of in-memory arrays (drop remainder)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    bs = min(batch_size, n)
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - bs + 1, bs):
            idx = perm[i : i + bs]
            yield images[idx], labels[idx]


def train_model(config, arch, model, train_source, n_train: int, seed: int, writer, tag: str):
    steps_per_epoch = max(1, n_train // config.train.batch_size)
    total = steps_per_epoch * config.train.epochs
    sched = optax.cosine_decay_schedule(arch.lr, max(total, 1))
    tx = optax.chain(
        optax.add_decayed_weights(config.train.weight_decay),
        optax.sgd(sched, config.train.momentum),
    )
    it = data.make_iterator(
        train_source,
        global_batch_size=config.train.batch_size,
        seed=seed,
        augment=config.train.augment,
    )

    def callback(i: int, loss: float) -> None:
        writer.write(i, {f"{tag}/train_loss": loss})
        progress.update(i, {"loss": loss})

    with Progress(total, desc=f"{tag} train") as progress:
        model = pc.train_steps(
            model, it, steps=total, tx=tx, log_every=config.train.log_every, callback=callback
        )
    return model


def lesion_probe(config, model, graph, per, test, rng) -> dict[str, Any]:
    """Single-channel lesions, peer replacement and score/damage rank agreement (Sec. 4.1, App. K.2)."""
    units = [u for u in graph.units if not u.depthwise and graph.spaces[u.dst].width >= 4]
    picks = [
        units[i]
        for i in np.unique(
            np.round(np.linspace(0, len(units) - 1, config.lesion.layers)).astype(int)
        )
    ]
    rows = []
    for u in picks:
        width = graph.spaces[u.dst].width
        chans = np.sort(rng.choice(width, min(config.lesion.channels, width), replace=False))
        dmg = pc.lesion_damage(model, graph, u.name, chans, *test)
        m = per[u.name]
        cov, mean = m["cov"], m["conv_mean"]
        base = pc.evaluate(model, *test)["loss"]
        for c, d in zip(chans, dmg, strict=True):
            rep, r2 = pc.peer_replacement(
                model, graph, u.name, int(c), cov, mean, peers=config.lesion.peers
            )
            d_rep = pc.evaluate(rep, *test)["loss"] - base
            rows.append(
                {
                    "unit": u.name,
                    "channel": int(c),
                    "damage": float(d),
                    "replace_damage": float(d_rep),
                    "peer_r2": r2,
                    "ix": float(m["ix"][c]),
                    "task_mi": float(m["task_mi"][c]),
                    "compact": float(m["compact"][c]),
                    "rx": float(m["rx"][c]),
                }
            )
    out: dict[str, Any] = {"rows": rows}

    # rank agreement of safer-to-remove scores with lower damage, within unit, then averaged
    def score_sets(sub):
        z = lambda v: (v - v.mean()) / (v.std() or 1)
        ix, h = np.array([r["ix"] for r in sub]), np.array([r["compact"] for r in sub])
        return {
            "-I_X": -ix,
            "H": h,
            "-I_X+H": z(-ix) + z(h),
            "peer": np.array([r["rx"] for r in sub]),
            "-task_MI": -np.array([r["task_mi"] for r in sub]),
        }

    agree: dict[str, list] = {}
    for u in picks:
        sub = [r for r in rows if r["unit"] == u.name]
        neg = -np.array([r["damage"] for r in sub])
        for k, v in score_sets(sub).items():
            if np.ptp(v) > 0 and np.ptp(neg) > 0:
                agree.setdefault(k, []).append(sstats.spearmanr(v, neg).statistic)
    out["spearman_with_lower_damage"] = {k: float(np.mean(v)) for k, v in agree.items()}
    nontriv = [r for r in rows if r["damage"] > config.lesion.threshold]
    if nontriv:
        rec = np.array([(r["damage"] - r["replace_damage"]) / r["damage"] for r in nontriv])
        out["replacement"] = {
            "n": len(nontriv),
            "median_recovery": float(np.median(rec)),
            "peer_helps": float(np.mean(rec > 0)),
        }
        if len(nontriv) >= 3:
            out["replacement"]["rho_peer_r2_recovery"] = float(
                sstats.spearmanr([r["peer_r2"] for r in nontriv], rec).statistic
            )
            out["replacement"]["rho_task_mi_recovery"] = float(
                sstats.spearmanr([r["task_mi"] for r in nontriv], rec).statistic
            )
    return out


def method_scores(config, model, graph, per, calib, seed) -> dict[str, dict]:
    info = pc.information_scores(per, alpha=config.prune.alpha, gamma=config.prune.gamma)
    out = {}
    for meth in config.prune.methods:
        if meth == "magnitude":
            out[meth] = pc.magnitude_scores(model, graph)
        elif meth == "fpgm":
            out[meth] = pc.fpgm_scores(model, graph)
        elif meth == "bn_scale":
            out[meth] = pc.bn_scale_scores(model, graph)
        elif meth == "random":
            out[meth] = pc.random_scores(graph, seed)
        elif meth == "act_rms":
            out[meth] = pc.activation_rms_scores(
                model,
                graph,
                {k: v["conv_mean"] for k, v in per.items()},
                {k: v["conv_second"] for k, v in per.items()},
            )
        elif meth == "taylor":
            bs = config.calib.batch_size
            n = min(config.prune.taylor_batches, max(1, len(calib[1]) // bs))
            out[meth] = pc.taylor_scores(
                model,
                graph,
                [
                    (calib[0][i * bs : (i + 1) * bs], calib[1][i * bs : (i + 1) * bs])
                    for i in range(n)
                ],
            )
        elif meth in info:
            out[meth] = info[meth]
        else:
            raise ValueError(f"config.prune.methods: unknown method {meth!r}.")
    return out


def pruning_curves(
    config, model, graph, fm, scores, train, test, base_acc, seed, n_train, image_shape=None
):
    """Retention at every sparsity for every method; with `image_shape`, also the measured latency
    of each physically shrunk network (`redundax.prune.latency.pruned_latency`)."""
    full = fl.count_macs(fm, graph)["total"]
    steps = min(
        config.prune.finetune_batches,
        config.prune.finetune_epochs * max(1, n_train // config.train.batch_size),
    )
    curves = {}
    for meth, sc in track(scores.items(), desc=f"seed {seed} pruning curves"):
        masks = [
            pc.global_threshold_masks(graph, sc, s, min_keep=config.prune.min_keep)
            for s in config.prune.sparsities
        ]
        xs = [1.0 - fl.count_macs(fm, graph, m)["total"] / full for m in masks]
        sp = [pc.channel_sparsity(m) for m in masks]
        accs = pc.recovery_accuracies(
            model,
            graph,
            masks,
            lambda: batch_stream(*train, config.train.batch_size, seed + 7),
            *test,
            steps=steps,
            lr=config.prune.lr,
            momentum=config.prune.momentum,
            weight_decay=config.prune.weight_decay,
            batch_size=config.eval_batch_size,
        )
        ys = [acc / base_acc if base_acc > 0 else 0.0 for acc in accs]
        curves[meth] = {
            "flops_pruned": xs,
            "retention": ys,
            "channel_sparsity": sp,
            "macs": [fl.count_macs(fm, graph, m)["total"] for m in masks],
        }
        if image_shape is not None:
            curves[meth].update(latency_fields(config, model, graph, masks, image_shape))
        logging.info("  %-14s retention %s", meth, " ".join(f"{y:.2f}" for y in ys))
    return curves


def latency_fields(config, model, graph, masks, image_shape) -> dict[str, Any]:
    """`latency_b{b}_ms`, `latency_pruned_b{b}` (1 - ratio to the unpruned network timed in the same
    round-robin) and the reference `latency_full_b{b}_ms` for every configured batch size."""
    t0 = time.perf_counter()
    res = lat.pruned_latency(
        model,
        graph,
        masks,
        image_shape,
        tuple(config.latency.batch_sizes),
        repeats=config.latency.repeats,
        warmup=config.latency.warmup,
        min_time_s=config.latency.min_seconds,
    )
    logging.info("  latency of %d shrunk networks: %.1f s", len(masks), time.perf_counter() - t0)
    out: dict[str, Any] = {"xla_flops": res["xla_flops"]}
    for b in res["ms"]:
        out[f"latency_b{b}_ms"] = res["ms"][b]
        out[f"latency_pruned_b{b}"] = [1.0 - r for r in res["ratio"][b]]
        out[f"latency_full_b{b}_ms"] = res["full_ms"][b]
    return out


def run(config, workdir: pathlib.Path) -> dict:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    data_dir = config.data_dir or None
    spec = data.dataset_info(config.dataset)
    train = data.load_arrays(config.dataset, "train", data_dir)
    test = data.load_arrays(config.dataset, "test", data_dir)
    train_source = data.get_source(config.dataset, "train", data_dir)
    n_train = len(train[1])
    h, w, cin = spec.image_shape
    idx = ana.calibration_indices(n_train, min(config.calib.size, n_train), config.calib.seed)
    ana.save_indices(
        workdir / "calibration_indices.json",
        idx,
        dataset=config.dataset,
        split="train",
        seed=config.calib.seed,
    )
    calib = (train[0][idx], train[1][idx])
    writer = metrics_lib.Writer(workdir)
    mcfg = ana.MetricConfig(
        m=config.metrics.m,
        hull_eps=config.metrics.hull_eps,
        hull_cap=config.metrics.hull_cap,
        hull_pool=config.metrics.hull_pool or None,
        triplet_top=config.metrics.triplet_top,
        max_triplets=config.metrics.max_triplets,
        top_fraction=config.metrics.top_fraction,
    )
    results: dict[str, Any] = {"dataset": config.dataset, "archs": {}}
    for arch in config.archs:
        label = ARCH_LABELS.get(arch.name, arch.name)
        runs = []
        for seed in config.seeds:
            tag = f"{arch.name}/seed{seed}"
            clock = _PhaseClock(tag)
            logging.info("%s: training, then metrics, alignment, lesions, scores, pruning", tag)
            model = build_model(arch, spec.num_classes, cin, seed)
            graph = G.channel_graph(model)
            model = train_model(config, arch, model, train_source, n_train, seed, writer, tag)
            base = pc.evaluate(model, *test, batch_size=config.eval_batch_size)
            clock("train")
            stats = ana.extract_stats(model, graph, *calib, batch_size=config.calib.batch_size)
            per, summ = ana.compute_metrics(model, graph, stats, mcfg)
            clock("metrics")
            align = ana.alignment_summary(
                per, k=config.metrics.kmeans_k, n_perm=config.metrics.n_perm, seed=seed
            )
            prop = ana.propagation(model, graph, per)
            clock("alignment")
            lesion = lesion_probe(config, model, graph, per, test, np.random.default_rng(seed))
            clock("lesions")
            fm = fl.flops_model(model, graph, (h, w, cin))
            scores = method_scores(config, model, graph, per, calib, seed)
            clock("scores")
            timed = config.latency.enabled and (config.latency.all_seeds or seed == config.seeds[0])
            curves = pruning_curves(
                config,
                model,
                graph,
                fm,
                scores,
                train,
                test,
                base["accuracy"],
                seed,
                n_train,
                image_shape=(h, w, cin) if timed else None,
            )
            clock("pruning" + (" and latency" if timed else ""))
            _save_checkpoint(workdir / "checkpoints" / f"{arch.name}_seed{seed}", model)
            writer.write(0, {f"{tag}/test_accuracy": base["accuracy"]})
            runs.append(
                {
                    "seed": seed,
                    "test_accuracy": base["accuracy"],
                    "macs": fl.count_macs(fm, graph)["total"],
                    "params": fl.count_params(model),
                    "alignment": align,
                    "propagation": _jsonable(prop),
                    "layers": {k: {kk: float(vv) for kk, vv in v.items()} for k, v in summ.items()},
                    "lesion": {k: v for k, v in lesion.items() if k != "rows"},
                    "curves": curves,
                    "scatter": {
                        u: {"ix": per[u]["ix"].tolist(), "task_mi": per[u]["task_mi"].tolist()}
                        for u in graph.names
                    },
                }
            )
            logging.info(
                "%s: acc %.3f, rho(I_X, I_T) %.3f, ARI %.3f",
                tag,
                base["accuracy"],
                align.get("rho_ix_taskmi_mean", math.nan),
                align.get("ari_mean", math.nan),
            )
        results["archs"][label] = summarise_arch(config, runs)
        results["elapsed_s"] = time.time() - t0
        # written after every architecture, so a long run leaves finished tables behind
        metrics_lib.write_json(workdir / "results.json", _jsonable(results), indent=1)
        (workdir / "results.md").write_text(results_markdown(config, results))
    plots.write_all(results, workdir)
    writer.close()
    return results


class _PhaseClock:
    """Logs the wall time of each phase of one (architecture, seed) run."""

    def __init__(self, tag: str):
        self.tag, self.t = tag, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        logging.info("%s: %s took %.1f s", self.tag, phase, now - self.t)
        self.t = now


def _save_checkpoint(path: pathlib.Path, model) -> None:
    import orbax.checkpoint as ocp

    path = path.absolute()
    if path.exists():
        import shutil

        shutil.rmtree(path)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(path, nnx.state(model))
    ckpt.wait_until_finished()


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, np.floating | np.integer):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def summarise_arch(config, runs) -> dict[str, Any]:
    methods = list(config.prune.methods)
    aucs = {m: [] for m in methods}
    for r in runs:
        curves = {m: (r["curves"][m]["flops_pruned"], r["curves"][m]["retention"]) for m in methods}
        a, interval = pc.flops_matched_auc(curves)
        r["auc"], r["interval"] = a, interval
        for m in methods:
            aucs[m].append(a[m])
    mean = {m: float(np.nanmean(v)) for m, v in aucs.items()}
    sem = {m: float(np.nanstd(v) / math.sqrt(max(len(v), 1))) for m, v in aucs.items()}
    local = [m for m in methods if m in pc.LOCAL_METHODS]
    target = [m for m in methods if m in pc.TARGET_METHODS]
    out: dict[str, Any] = {"auc_mean": mean, "auc_sem": sem, "auc_per_seed": aucs, "runs": runs}
    if local and target:
        bl = max(local, key=lambda m: mean[m])
        bt = max(target, key=lambda m: mean[m])
        diffs = [a - b for a, b in zip(aucs[bl], aucs[bt], strict=True)]
        out["best_local"], out["best_target"] = bl, bt
        out["local_minus_target"] = ana.paired_bootstrap(diffs, n_boot=config.prune.n_boot)
        if "magnitude" in methods:
            out["local_minus_magnitude"] = ana.paired_bootstrap(
                [a - b for a, b in zip(aucs[bl], aucs["magnitude"], strict=True)],
                n_boot=config.prune.n_boot,
            )
        base = [m for m in methods if m in pc.BASELINE_METHODS]
        if base:
            bb = max(base, key=lambda m: mean[m])
            out["best_baseline"] = bb
            out["local_minus_best_baseline"] = ana.paired_bootstrap(
                [a - b for a, b in zip(aucs[bl], aucs[bb], strict=True)], n_boot=config.prune.n_boot
            )
    lat_summary = latency_summary(config, runs)
    if lat_summary:
        out["latency"] = lat_summary
    keys = (
        "rho_ix_taskmi_mean",
        "ari_mean",
        "ari_null_mean",
        "ari_null_p95_mean",
        "frac_layers_p_gt_005",
        "rho_taskmi_redt_mean",
    )
    out["alignment"] = {
        k: float(np.nanmean([r["alignment"].get(k, np.nan) for r in runs])) for k in keys
    }
    out["test_accuracy"] = float(np.mean([r["test_accuracy"] for r in runs]))
    return out


def latency_summary(config, runs) -> dict[str, Any]:
    """Over the runs whose curves carry latency: AUC of retention vs latency saved per batch size
    (common interval of each), AUC vs MACs saved on the same runs, and how latency tracks MACs
    (Spearman over all points; fraction of points slower than the unpruned network)."""
    methods = list(config.prune.methods)
    bs = [int(b) for b in config.latency.batch_sizes]
    timed = [r for r in runs if all(f"latency_pruned_b{bs[0]}" in r["curves"][m] for m in methods)]
    if not timed:
        return {}
    out: dict[str, Any] = {
        "seeds": [r["seed"] for r in timed],
        "batch_sizes": bs,
        "auc_macs": {m: float(np.nanmean([r["auc"][m] for r in timed])) for m in methods},
        "auc_latency": {},
        "interval": {},
        "full_ms": {},
        "rho_latency_macs": {},
        "slower_fraction": {},
    }
    flops_x = np.concatenate([r["curves"][m]["flops_pruned"] for r in timed for m in methods])
    for b in bs:
        key = f"b{b}"
        per = []
        for r in timed:
            a, iv = pc.flops_matched_auc(
                {
                    m: (r["curves"][m][f"latency_pruned_b{b}"], r["curves"][m]["retention"])
                    for m in methods
                }
            )
            r.setdefault("auc_latency", {})[key], r.setdefault("latency_interval", {})[key] = a, iv
            per.append(a)
        out["auc_latency"][key] = {m: _finite_mean([a[m] for a in per]) for m in methods}
        out["interval"][key] = [
            float(np.mean([r["latency_interval"][key][i] for r in timed])) for i in (0, 1)
        ]
        out["full_ms"][key] = float(
            np.median([r["curves"][m][f"latency_full_b{b}_ms"] for r in timed for m in methods])
        )
        lat_x = np.concatenate(
            [r["curves"][m][f"latency_pruned_b{b}"] for r in timed for m in methods]
        )
        out["rho_latency_macs"][key] = float(sstats.spearmanr(flops_x, lat_x).statistic)
        out["slower_fraction"][key] = float(np.mean(lat_x < 0))
    return out


def _finite_mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


def results_markdown(config, results) -> str:
    archs = list(results["archs"])
    methods = list(config.prune.methods)
    fam = {
        m: (
            "local" if m in pc.LOCAL_METHODS else "target" if m in pc.TARGET_METHODS else "baseline"
        )
        for m in methods
    }
    lines = [
        f"# Two-axis channel information: {results['dataset']}",
        "",
        f"Seeds: {list(config.seeds)}; sparsities: {list(config.prune.sparsities)}; "
        f"recovery: {config.prune.finetune_batches} batches.",
        "",
        "## FLOPs-matched accuracy-retention AUC (mean ± SEM over seeds)",
        "",
        "| axis | method | " + " | ".join(archs) + " |",
        "| --- | --- |" + " --- |" * len(archs),
    ]
    for m in methods:
        cells = []
        for a in archs:
            r = results["archs"][a]
            cells.append(f"{r['auc_mean'][m]:.3f} ± {r['auc_sem'][m]:.3f}")
        lines.append(f"| {fam[m]} | {m} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Paired differences (AUC points ×100, bootstrap 95% CI over seeds)",
        "",
        "| model | best local | best target | local − target | local − magnitude | "
        "local − best baseline |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    fmt = lambda d: (
        f"{100 * d['mean']:+.1f} [{100 * d['lo']:+.1f}, {100 * d['hi']:+.1f}]"
        if d and d.get("n")
        else "n/a"
    )
    for a in archs:
        r = results["archs"][a]
        if "best_local" not in r:
            continue
        lines.append(
            f"| {a} | {r['best_local']} | {r['best_target']} | "
            f"{fmt(r['local_minus_target'])} | {fmt(r.get('local_minus_magnitude'))} | "
            f"{fmt(r.get('local_minus_best_baseline'))} ({r.get('best_baseline')}) |"
        )
    lines += [
        "",
        "## Weak alignment (within-layer, mean over layers and seeds)",
        "",
        "| model | test acc | rho(I_X, I(T;Y)) | rho(I(T;Y), Red_T) | ARI | ARI null mean | "
        "ARI null p95 | layers p>0.05 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for a in archs:
        al = results["archs"][a]["alignment"]
        lines.append(
            f"| {a} | {results['archs'][a]['test_accuracy']:.3f} | "
            f"{al['rho_ix_taskmi_mean']:.3f} | {al['rho_taskmi_redt_mean']:.3f} | "
            f"{al['ari_mean']:.3f} | {al['ari_null_mean']:.3f} | "
            f"{al['ari_null_p95_mean']:.3f} | {al['frac_layers_p_gt_005']:.2f} |"
        )
    lines += latency_markdown(config, results)
    lines += ["", "## Lesions and peer replacement (first seed)", ""]
    for a in archs:
        les = results["archs"][a]["runs"][0]["lesion"]
        lines.append(
            f"- {a}: Spearman with lower damage "
            + ", ".join(
                f"{k} {v:+.3f}" for k, v in les.get("spearman_with_lower_damage", {}).items()
            )
            + (f"; replacement {les['replacement']}" if "replacement" in les else "")
        )
    lines.append("")
    return "\n".join(lines)


def _num(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def latency_markdown(config, results) -> list[str]:
    archs = [a for a in results["archs"] if "latency" in results["archs"][a]]
    if not archs:
        return []
    first = results["archs"][archs[0]]["latency"]
    bs = [f"b{b}" for b in first["batch_sizes"]]
    lines = [
        "",
        f"## Latency-verified pruning (seeds {first['seeds']}; CPU)",
        "",
        "Every point's network is physically shrunk, its eval forward pass compiled once per "
        f"batch size ({', '.join(bs)}) and timed round-robin with the unpruned network "
        f"(median of at least {config.latency.repeats} calls, more until "
        f"{config.latency.min_seconds} s per batch size, after {config.latency.warmup} "
        "warm-up); "
        "latency saved = 1 - latency / unpruned latency. AUC: mean retention over the common "
        "interval of MACs saved, or of latency saved."
        + (
            ""
            if config.latency.all_seeds
            else " Latency is measured on the first seed only; the "
            "MACs column is the AUC of the same seed(s)."
        )
        + " n/a: the methods' ranges of "
        "latency saved do not overlap (no common interval).",
        "",
        "| model | unpruned ms "
        + " | ".join(bs)
        + " | Spearman(MACs saved, latency saved) "
        + " | ".join(bs)
        + " | points slower than unpruned "
        + " | ".join(bs)
        + " |",
        "| --- |" + " --- |" * (3 * len(bs)),
    ]
    for a in archs:
        la = results["archs"][a]["latency"]
        lines.append(
            f"| {a} | "
            + " | ".join(f"{la['full_ms'][k]:.3g}" for k in bs)
            + " | "
            + " | ".join(f"{la['rho_latency_macs'][k]:.2f}" for k in bs)
            + " | "
            + " | ".join(f"{la['slower_fraction'][k]:.0%}" for k in bs)
            + " |"
        )
    head = [f"{a} {x}" for a in archs for x in ("MACs", *(f"latency {k}" for k in bs))]
    lines += ["", "| method | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(head)]
    for m in config.prune.methods:
        cells = []
        for a in archs:
            la = results["archs"][a]["latency"]
            cells += [_num(la["auc_macs"][m])] + [_num(la["auc_latency"][k][m]) for k in bs]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    cli.main(run, "configs/channels.py", argv)


if __name__ == "__main__":
    main()
