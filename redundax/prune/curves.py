"""Pruning curves and their FLOPs-matched (and latency-matched) accuracy-retention AUC.

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (Sec. 4, App. C, F).

- `pruning_curves(model, graph, flops_model, scores, *, sparsities, recover, base_accuracy, ...)`:
  for every method's scores and every sparsity, one global-threshold mask set
  (`redundax.prune.channels.global_threshold_masks`), its fraction of MACs pruned
  (`redundax.prune.flops.count_macs`), and the accuracy retention after a recovery fine-tune
  (`recover(key, masks) -> accuracy`, e.g. `redundax.prune.recovery.Recoveries`) relative to the
  unpruned accuracy; optionally `latency(masks_seq) -> fields` adds measured latency.
- `latency_fields(model, graph, masks_seq, image_shape, ...)`: the CPU latency of every mask set's
  physically shrunk network (`redundax.prune.latency.pruned_latency`) as curve fields.
- `summarise(runs, methods, ...)`: per architecture, AUC mean and SEM over seeds, best local vs
  best target (paired bootstrap over seeds), the latency summary and alignment means.
- `latency_summary(runs, methods, batch_sizes)`: AUC against latency saved per batch size, and how
  latency saved tracks MACs saved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from scipy import stats as sstats

from redundax.analysis import channels as ana
from redundax.prune import channels as pc
from redundax.prune import flops as fl
from redundax.prune import latency as lat
from redundax.prune.graph import ChannelGraph
from redundax.train.progress import track

Recover = Callable[[str, Mapping[str, np.ndarray]], "float | None"]


def pruning_curves(
    model,
    graph: ChannelGraph,
    flops_model,
    scores: Mapping[str, Mapping[str, np.ndarray]],
    *,
    sparsities: Sequence[float],
    recover: Recover,
    base_accuracy: float,
    min_keep: int = 1,
    latency: Callable[[list], dict[str, Any]] | None = None,
    desc: str = "pruning curves",
) -> dict[str, dict[str, list]] | None:
    """`{method: {"flops_pruned", "retention", "channel_sparsity", "macs", ...}}` (module doc).

    `recover(key, masks)` gets the key `<method>_s<sparsity>`; when it returns None (stopped by a
    preemption) this returns None at once.
    """
    if not sparsities:
        raise ValueError("`sparsities` must list at least one channel sparsity.")
    full = fl.count_macs(flops_model, graph)["total"]
    curves = {}
    for meth, sc in track(scores.items(), desc=desc):
        masks = [pc.global_threshold_masks(graph, sc, s, min_keep=min_keep) for s in sparsities]
        macs = [fl.count_macs(flops_model, graph, m)["total"] for m in masks]
        accs = []
        for s, m in zip(sparsities, masks, strict=True):
            acc = recover(f"{meth}_s{s}", m)
            if acc is None:
                return None
            accs.append(acc)
        ys = [acc / base_accuracy if base_accuracy > 0 else 0.0 for acc in accs]
        curves[meth] = {
            "flops_pruned": [1.0 - m / full for m in macs],
            "retention": ys,
            "channel_sparsity": [pc.channel_sparsity(m) for m in masks],
            "macs": macs,
        }
        if latency is not None:
            curves[meth].update(latency(masks))
        logging.info("  %-14s retention %s", meth, " ".join(f"{y:.2f}" for y in ys))
    return curves


def latency_fields(
    model,
    graph: ChannelGraph,
    masks: list,
    image_shape: tuple[int, int, int],
    *,
    batch_sizes: Sequence[int],
    repeats: int,
    warmup: int,
    min_seconds: float,
) -> dict[str, Any]:
    """`latency_b{b}_ms`, `latency_pruned_b{b}` (1 - ratio to the unpruned network timed in the
    same round-robin), the reference `latency_full_b{b}_ms` and `xla_flops`."""
    t0 = time.perf_counter()
    res = lat.pruned_latency(
        model, graph, masks, image_shape, tuple(batch_sizes),
        repeats=repeats, warmup=warmup, min_time_s=min_seconds,
    )  # fmt: skip
    logging.info("  latency of %d shrunk networks: %.1f s", len(masks), time.perf_counter() - t0)
    out: dict[str, Any] = {"xla_flops": res["xla_flops"]}
    for b in res["ms"]:
        out[f"latency_b{b}_ms"] = res["ms"][b]
        out[f"latency_pruned_b{b}"] = [1.0 - r for r in res["ratio"][b]]
        out[f"latency_full_b{b}_ms"] = res["full_ms"][b]
    return out


def _finite_mean(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


ALIGNMENT_KEYS = (
    "rho_ix_taskmi_mean",
    "ari_mean",
    "ari_null_mean",
    "ari_null_p95_mean",
    "frac_layers_p_gt_005",
    "rho_taskmi_redt_mean",
)


def summarise(
    runs: list[dict[str, Any]],
    methods: Sequence[str],
    *,
    n_boot: int = 10000,
    latency_batch_sizes: Sequence[int] = (),
) -> dict[str, Any]:
    """One architecture's runs (one per seed) -> AUC table, paired differences, alignment means.

    Adds `auc` and `interval` to every run in place (and the latency AUCs, see
    `latency_summary`).
    """
    methods = list(methods)
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
    paired = lambda a, b: ana.paired_bootstrap(
        [x - y for x, y in zip(aucs[a], aucs[b], strict=True)], n_boot=n_boot
    )
    if local and target:
        bl = max(local, key=lambda m: mean[m])
        bt = max(target, key=lambda m: mean[m])
        out["best_local"], out["best_target"] = bl, bt
        out["local_minus_target"] = paired(bl, bt)
        if "magnitude" in methods:
            out["local_minus_magnitude"] = paired(bl, "magnitude")
        base = [m for m in methods if m in pc.BASELINE_METHODS]
        if base:
            bb = max(base, key=lambda m: mean[m])
            out["best_baseline"] = bb
            out["local_minus_best_baseline"] = paired(bl, bb)
    lat_summary = latency_summary(runs, methods, latency_batch_sizes)
    if lat_summary:
        out["latency"] = lat_summary
    out["alignment"] = {
        k: float(np.nanmean([r["alignment"].get(k, np.nan) for r in runs])) for k in ALIGNMENT_KEYS
    }
    out["test_accuracy"] = float(np.mean([r["test_accuracy"] for r in runs]))
    return out


def latency_summary(
    runs: list[dict[str, Any]], methods: Sequence[str], batch_sizes: Sequence[int]
) -> dict[str, Any]:
    """Over the runs whose curves carry latency: AUC of retention vs latency saved per batch size
    (common interval of each), AUC vs MACs saved on the same runs (`run["auc"]`), and how latency
    tracks MACs (Spearman over all points; fraction of points slower than the unpruned network).
    """
    methods = list(methods)
    bs = [int(b) for b in batch_sizes]
    if not bs:
        return {}
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
