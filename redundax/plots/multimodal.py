"""Figures of the multimodal-balance experiment (RedReg, Yang et al., 2025): Agg backend, PNG.

- :func:`timeline`: per training step, ``p_m``, the redundancy score ``r_m`` (with the trigger
  ``R``), the suppression strength ``beta_m`` and the co-information gate with its threshold.
- :func:`accuracy_bars`: fused and per-modality test accuracy of every method (mean and
  standard deviation over seeds).
- :func:`accuracy_curves`: test accuracies per epoch for every method.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

Series = Mapping[str, Sequence[float]]


def timeline(
    steps: Sequence[int],
    series: Series,
    modalities: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
    trigger: float | None = None,
) -> None:
    """Four panels over training steps from ``series`` keys ``p/<m>``, ``score/<m>``,
    ``beta/<m>``, ``gate``, ``tau`` and ``similarity`` (missing keys are skipped)."""
    steps = np.asarray(steps)
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    panels = [("p", "p_m (true-class prob.)"), ("score", "r_m"), ("beta", "beta_m")]
    for ax, (key, label) in zip(axes[:3], panels, strict=True):
        for m in modalities:
            values = series.get(f"{key}/{m}")
            if values is not None:
                ax.plot(steps, values, lw=0.9, label=m)
        if key == "score" and trigger is not None:
            ax.axhline(trigger, color="k", ls="--", lw=0.7, label="trigger R")
        ax.set_ylabel(label, fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    ax = axes[3]
    for key, style in (("similarity", "-"), ("tau", "--"), ("gate", ":")):
        values = series.get(key)
        if values is not None:
            ax.plot(steps, values, ls=style, lw=0.9, label=key)
    ax.set_ylabel("gate", fontsize=8)
    ax.set_xlabel("step")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best")
    if title:
        axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_bars(
    table: Mapping[str, Mapping[str, tuple[float, float]]],
    columns: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "",
) -> None:
    """Grouped bars: for each method (rows of ``table``) the ``(mean, std)`` of each column."""
    methods = list(table)
    x = np.arange(len(methods))
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(methods)), 3.6))
    for j, col in enumerate(columns):
        means = [table[m][col][0] for m in methods]
        stds = [table[m][col][1] for m in methods]
        ax.bar(x + (j - (len(columns) - 1) / 2) * width, means, width, yerr=stds, label=col)
    ax.set_xticks(x, methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=len(columns))
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def accuracy_curves(
    curves: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]],
    path: str | os.PathLike,
) -> None:
    """One panel per quantity; ``curves[quantity][method] = (epochs, accuracies)``."""
    keys = list(curves)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for method, (xs, ys) in curves[key].items():
            ax.plot(xs, ys, lw=1, label=method)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
