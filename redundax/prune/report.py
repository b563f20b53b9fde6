"""Markdown tables of the channels experiment (Safaai et al., Tables 8-9 style).

- `results_markdown(results, config) -> str`: the FLOPs-matched AUC table (mean ± SEM over seeds),
  the paired differences (best local vs best target, magnitude and the best baseline), the weak
  alignment summary, the latency-verified AUCs and the lesion summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from redundax.prune import channels as pc


def results_markdown(results: Mapping[str, Any], config: Any) -> str:
    """The tables of `results` (`summarise` per architecture); `config` is the run's config
    (`prune.methods`, `prune.sparsities`, `prune.finetune_batches`, `seeds`, `latency.*`)."""
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
    lines += latency_markdown(results, config)
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


def latency_markdown(results: Mapping[str, Any], config: Any) -> list[str]:
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
