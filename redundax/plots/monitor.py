"""Figures of `redundax.monitor`: a layer x step heatmap and per-layer profiles (Agg backend, PNG).

Both take the output of `redundax.monitor.history(records, metric)`: evaluation `steps`, `layers`
(dotted module paths) and `values` shaped `(layers, steps)`.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _check(steps: Sequence[int], layers: Sequence[str], values) -> np.ndarray:
    values = np.asarray(values, float)
    if values.shape != (len(layers), len(steps)):
        raise ValueError(
            f"`values` must be (layers, steps) = ({len(layers)}, {len(steps)}); got {values.shape}."
        )
    return values


def heatmap(
    steps: Sequence[int],
    layers: Sequence[str],
    values,
    path,
    *,
    metric: str,
    title: str | None = None,
) -> pathlib.Path:
    """One row per layer (in model order, top to bottom), one column per evaluation step."""
    values = _check(steps, layers, values)
    path = pathlib.Path(path)
    fig, ax = plt.subplots(
        figsize=(min(3 + 0.45 * len(steps), 14), min(1.5 + 0.32 * len(layers), 12))
    )
    im = ax.imshow(values, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(np.arange(len(layers)), labels=list(layers), fontsize=7)
    stride = max(1, len(steps) // 12)
    ticks = np.arange(0, len(steps), stride)
    ax.set_xticks(ticks, labels=[str(steps[i]) for i in ticks], fontsize=7, rotation=45)
    ax.set_xlabel("training step")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{metric} per layer during training", fontsize=9)
    fig.colorbar(im, ax=ax, label=metric)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def profile(
    steps: Sequence[int],
    layers: Sequence[str],
    values,
    path,
    *,
    metric: str,
    title: str | None = None,
) -> pathlib.Path:
    """`metric` against layer (x axis, model order), one line per evaluation (colour = step)."""
    values = _check(steps, layers, values)
    path = pathlib.Path(path)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(layers) + 2), 4.0))
    norm = plt.Normalize(min(steps), max(max(steps), min(steps) + 1))
    x = np.arange(len(layers))
    for j, step in enumerate(steps):
        color = plt.cm.viridis(norm(step))
        ax.plot(x, values[:, j], marker="o", ms=3, color=color, label=f"step {step}")
    ax.set_xticks(x, labels=list(layers), rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per layer, one line per evaluation", fontsize=9)
    ax.grid(alpha=0.3)
    if len(steps) <= 12:
        ax.legend(fontsize=7, loc="best")
    else:
        fig.colorbar(plt.cm.ScalarMappable(norm, plt.cm.viridis), ax=ax, label="training step")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
