"""Figure of the functionals demo: several estimates of one quantity with their intervals (PNG)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def estimates_with_intervals(
    groups: Mapping[str, Sequence[Mapping[str, float]]],
    path,
    *,
    ylabel: str = "total correlation (nats)",
    title: str = "",
) -> pathlib.Path:
    """Grouped points with error bars: `groups[group] = [{"estimator", "estimate", "low", "high"}]`.

    One cluster per group (e.g. a unit set), one colour per estimator (e.g. Gaussian, KSG, variational).
    """
    path = pathlib.Path(path)
    names = list(dict.fromkeys(r["estimator"] for rows in groups.values() for r in rows))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(groups), 3.4))
    for j, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for g, rows in enumerate(groups.values()):
            for r in rows:
                if r["estimator"] == name:
                    xs.append(g - 0.4 + width * (j + 0.5))
                    ys.append(r["estimate"])
                    lo.append(max(r["estimate"] - r["low"], 0.0))
                    hi.append(max(r["high"] - r["estimate"], 0.0))
        ax.errorbar(xs, ys, yerr=np.array([lo, hi]), fmt="o", capsize=3, label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set_ylabel(ylabel)
    ax.axhline(0.0, color="0.7", lw=0.8)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
