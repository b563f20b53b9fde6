"""Figures of the two-axis channel experiment (Safaai et al., Figs. 2, 5, 6) and the measured
latency of the pruned networks against their MACs: Agg backend, PNG."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

FAMILY_COLORS = {"local": "tab:blue", "target": "tab:orange", "baseline": "tab:gray"}
LOCAL = ("ix", "composite_ix", "local_rx", "local_compact")
TARGET = ("task_mi", "composite_pid", "pid_no_red")


def _family(method: str) -> str:
    return "local" if method in LOCAL else "target" if method in TARGET else "baseline"


def two_axis_scatter(results: Mapping[str, Any], path, max_layers: int = 6) -> None:
    """I_X vs I(T;Y) per layer for the first seed of every architecture (Fig. 1C / 13B style)."""
    archs = list(results["archs"])
    fig, axes = plt.subplots(
        len(archs), max_layers, figsize=(2.4 * max_layers, 2.4 * len(archs)), squeeze=False
    )
    for r, a in enumerate(archs):
        scatter = results["archs"][a]["runs"][0]["scatter"]
        names = list(scatter)
        pick = [
            names[i]
            for i in np.unique(np.round(np.linspace(0, len(names) - 1, max_layers)).astype(int))
        ]
        for c in range(max_layers):
            ax = axes[r, c]
            if c >= len(pick):
                ax.axis("off")
                continue
            d = scatter[pick[c]]
            ax.scatter(d["ix"], d["task_mi"], s=6, alpha=0.6)
            ax.set_title(f"{a}\n{pick[c]}", fontsize=6)
            ax.tick_params(labelsize=6)
            if c == 0:
                ax.set_ylabel("I(T;Y) [nats]", fontsize=7)
            if r == len(archs) - 1:
                ax.set_xlabel("I_X [nats]", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pruning_curves(results: Mapping[str, Any], path) -> None:
    """Accuracy retention vs FLOPs pruned, mean over seeds, common interval shaded (Fig. 6)."""
    archs = list(results["archs"])
    fig, axes = plt.subplots(1, len(archs), figsize=(4.5 * len(archs), 3.6), squeeze=False)
    for ax, a in zip(axes[0], archs, strict=True):
        runs = results["archs"][a]["runs"]
        for m in runs[0]["curves"]:
            xs = np.mean([r["curves"][m]["flops_pruned"] for r in runs], 0)
            ys = np.mean([r["curves"][m]["retention"] for r in runs], 0)
            fam = _family(m)
            ax.plot(
                xs,
                ys,
                marker="o",
                ms=3,
                lw=1.2,
                color=FAMILY_COLORS[fam],
                ls="-" if fam == "local" else "--" if fam == "target" else ":",
                label=m,
            )
        lo = max(r["interval"][0] for r in runs)
        hi = min(r["interval"][1] for r in runs)
        ax.axvspan(lo, hi, color="0.92", zorder=0)
        ax.axhline(1.0, color="k", lw=0.6, ls="--")
        ax.set_title(a)
        ax.set_xlabel("fraction of FLOPs pruned")
        ax.set_ylabel("accuracy retention")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def latency_vs_macs(results: Mapping[str, Any], path) -> bool:
    """Measured latency vs MACs of the shrunk networks, per method (first timed seed).

    One column per architecture, one row per batch size; both axes relative to the unpruned network
    (latency timed round-robin with it), so the diagonal is "latency proportional to MACs".
    Returns False (and writes nothing) when no run carries latency.
    """
    archs = [a for a in results["archs"] if "latency" in results["archs"][a]]
    if not archs:
        return False
    sizes = results["archs"][archs[0]]["latency"]["batch_sizes"]
    fig, axes = plt.subplots(
        len(sizes), len(archs), figsize=(4.2 * len(archs), 3.6 * len(sizes)), squeeze=False
    )
    for c, a in enumerate(archs):
        seed = results["archs"][a]["latency"]["seeds"][0]
        run = next(r for r in results["archs"][a]["runs"] if r["seed"] == seed)
        for r, b in enumerate(sizes):
            ax = axes[r, c]
            for i, (m, cur) in enumerate(run["curves"].items()):
                fam = _family(m)
                macs = 1.0 - np.asarray(cur["flops_pruned"])
                latency = 1.0 - np.asarray(cur[f"latency_pruned_b{b}"])
                order = np.argsort(macs)
                # one colour per method; line style by family (local -, target --, baseline :)
                ax.plot(
                    macs[order],
                    latency[order],
                    marker="o",
                    ms=3,
                    lw=1.0,
                    color=f"C{i % 10}",
                    ls="-" if fam == "local" else "--" if fam == "target" else ":",
                    label=m,
                )
            ax.plot([0, 1], [0, 1], color="k", lw=0.6, ls="--")
            ax.axhline(1.0, color="0.5", lw=0.6)
            ax.set_title(
                f"{a}, batch {b} (unpruned "
                f"{results['archs'][a]['latency']['full_ms'][f'b{b}']:.3g} ms)",
                fontsize=9,
            )
            ax.set_xlabel("MACs / unpruned MACs")
            ax.set_ylabel("latency / unpruned latency")
    axes[0, -1].legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def lesion_summary(results: Mapping[str, Any], path) -> None:
    """Spearman of safer-to-remove scores with lower lesion damage per architecture (Fig. 5A)."""
    archs = list(results["archs"])
    keys = sorted(
        {
            k
            for a in archs
            for r in results["archs"][a]["runs"]
            for k in r["lesion"].get("spearman_with_lower_damage", {})
        }
    )
    fig, ax = plt.subplots(figsize=(1.2 + 1.6 * len(archs), 3.2))
    width = 0.8 / max(len(keys), 1)
    for i, k in enumerate(keys):
        vals = [
            np.nanmean(
                [
                    r["lesion"].get("spearman_with_lower_damage", {}).get(k, np.nan)
                    for r in results["archs"][a]["runs"]
                ]
            )
            for a in archs
        ]
        ax.bar(np.arange(len(archs)) + i * width, vals, width, label=k)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(np.arange(len(archs)) + 0.4 - width / 2)
    ax.set_xticklabels(archs)
    ax.set_ylabel("Spearman with lower damage")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(results: Mapping[str, Any], workdir) -> list[pathlib.Path]:
    workdir = pathlib.Path(workdir)
    out = [
        workdir / "two_axis_scatter.png",
        workdir / "pruning_curves.png",
        workdir / "lesion_summary.png",
    ]
    two_axis_scatter(results, out[0])
    pruning_curves(results, out[1])
    lesion_summary(results, out[2])
    if latency_vs_macs(results, workdir / "latency_vs_macs.png"):
        out.append(workdir / "latency_vs_macs.png")
    return out
