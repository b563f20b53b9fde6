"""Figures of the layer-redundancy experiment (Liang, 2025, Fig. 1 and Table 1): Agg backend, PNG."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

CRITERION_STYLE = {
    "redundancy": ("tab:red", "o", "R_l (entropy rate)"),
    "block_influence": ("tab:blue", "s", "block influence"),
    "knowledge_entropy": ("tab:green", "^", "knowledge entropy"),
    "random": ("tab:gray", "x", "random LayerDrop"),
    "last": ("tab:purple", "v", "last-k"),
}


def redundancy_profile(
    profiles: Mapping[str, Sequence[float]],
    path,
    *,
    title: str = "Redundancy score per layer",
    secondary: Mapping[str, Sequence[float]] | None = None,
    secondary_label: str = "block influence",
) -> pathlib.Path:
    """R_l against layer l = 1..L (Fig. 1 style), one line per profile (model, task or epoch).

    `secondary` profiles (e.g. ShortGPT block influence) are drawn dashed on a right-hand axis.
    """
    path = pathlib.Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, values in profiles.items():
        v = np.asarray(values, float)
        ax.plot(np.arange(1, v.size + 1), v, marker="o", label=name)
    ax.set_xlabel("layer l")
    ax.set_ylabel("redundancy score R_l (eq. 25)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if secondary:
        ax2 = ax.twinx()
        for name, values in secondary.items():
            v = np.asarray(values, float)
            ax2.plot(
                np.arange(1, v.size + 1),
                v,
                ls="--",
                marker="s",
                color="0.35",
                alpha=0.8,
                label=f"{name} ({secondary_label})",
            )
        ax2.set_ylabel(secondary_label)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    n = max(len(v) for v in profiles.values())
    ax.set_xticks(np.arange(1, n + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def pruning_curves(
    table: Sequence[Mapping],
    metric: str,
    path,
    *,
    baseline: float | None = None,
    ylabel: str | None = None,
) -> pathlib.Path:
    """`metric` against the number of removed layers k, one line per criterion.

    `table` rows need `criterion`, `k` and `metric`; rows of the same (criterion, k) are averaged
    (random seeds) and their spread drawn as error bars.
    """
    path = pathlib.Path(path)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    criteria = list(dict.fromkeys(r["criterion"] for r in table))
    for c in criteria:
        ks = sorted({int(r["k"]) for r in table if r["criterion"] == c})
        vals = [
            [float(r[metric]) for r in table if r["criterion"] == c and int(r["k"]) == k]
            for k in ks
        ]
        mean = [np.mean(v) for v in vals]
        err = [np.std(v) if len(v) > 1 else 0.0 for v in vals]
        color, marker, label = CRITERION_STYLE.get(c, (None, "o", c))
        ax.errorbar(ks, mean, yerr=err, marker=marker, color=color, label=label, capsize=3)
    if baseline is not None:
        ax.axhline(baseline, color="k", ls=":", lw=1, label="unpruned")
    all_ks = sorted({int(r["k"]) for r in table})
    ax.set_xticks(all_ks)
    ax.set_xlabel("layers removed k")
    ax.set_ylabel(ylabel or metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


__all__ = ["CRITERION_STYLE", "pruning_curves", "redundancy_profile"]
