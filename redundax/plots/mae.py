"""Figures 1 and 2 of the MAE redundancy sweep (Bi, Zhu & Calhoun, 2025, Sec. 5).

Figure 1: linear-probe top-1 against spectral redundancy R_spec, one point per member (colour =
lambda_red), per-lambda mean with standard-deviation error bars in both axes, the fitted curve and
R* with its bootstrap interval when the points support an interior maximum (the under-, balanced and
over-redundant regimes shaded), and the baselines as horizontal lines.

Figure 2: effective rank (solid, left axis) and R_spec (dashed, right axis) of Z on the held-out
batch against epoch, one colour per lambda_red (mean over seeds, band = min..max over seeds).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def _lambda_colours(lambdas: Sequence[float]) -> dict[float, tuple]:
    cmap = plt.get_cmap("viridis")
    ordered = sorted(set(lambdas))
    n = max(len(ordered) - 1, 1)
    return {lam: cmap(i / n) for i, lam in enumerate(ordered)}


def figure1(
    rows: Sequence[Mapping],
    summary: Sequence[Mapping],
    baselines: Mapping,
    r_star: Mapping,
    path: str | pathlib.Path,
) -> pathlib.Path:
    """Accuracy vs R_spec with per-seed points, error bars, fitted R*, regimes and baselines."""
    colours = _lambda_colours([r["lambda_red"] for r in rows])
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    xs = np.asarray([r["spectral_redundancy"] for r in rows])
    lo_x, hi_x = float(xs.min()), float(xs.max())
    pad = 0.05 * max(hi_x - lo_x, 1e-3)
    if r_star.get("supported"):
        lo, hi = r_star["interval"]
        ax.axvspan(lo_x - pad, lo, color="tab:blue", alpha=0.08, label="under-redundant")
        ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label="balanced band (R* interval)")
        ax.axvspan(hi, hi_x + pad, color="tab:red", alpha=0.08, label="over-redundant")
        ax.axvline(r_star["r_star"], color="k", ls="--", lw=1.2,
                   label=f"R* = {r_star['r_star']:.3f}")
    gap = r_star.get("data_gap")
    if gap is not None and gap[1] - gap[0] > 0.25 * max(hi_x - lo_x, 1e-9):
        ax.axvspan(gap[0], gap[1], facecolor="none", edgecolor="0.6", hatch="//", lw=0,
                   label="no members here")
    if r_star.get("coefficients") is not None:
        c0, c1, c2 = r_star["coefficients"]
        grid = np.linspace(lo_x, hi_x, 200)
        ax.plot(grid, 100 * (c0 + c1 * grid + c2 * grid**2), color="0.3", lw=1,
                label="quadratic fit")
    for r in rows:
        ax.scatter(r["spectral_redundancy"], 100 * r["probe_top1"], s=14, alpha=0.55,
                   color=colours[r["lambda_red"]], edgecolors="none")
    for s in summary:
        ax.errorbar(s["spectral_redundancy_mean"], 100 * s["probe_top1_mean"],
                    xerr=s["spectral_redundancy_std"], yerr=100 * s["probe_top1_std"],
                    fmt="o", ms=6, capsize=3, color=colours[s["lambda_red"]],
                    markeredgecolor="k", label=f"λ = {s['lambda_red']:g}")
    raw = baselines["raw_pixels"]["probe_top1"]
    ax.axhline(100 * raw, color="tab:orange", ls=":", lw=1.5, label="raw pixels")
    ri = baselines["random_init"]
    ax.axhline(100 * ri["probe_top1_mean"], color="tab:purple", ls="-.", lw=1.5,
               label="random-init encoder")
    ax.set_xlim(lo_x - pad, hi_x + pad)
    ax.set_xlabel(r"spectral redundancy $\mathcal{R}_{spec}$ (held-out Z)")
    ax.set_ylabel("linear-probe top-1 (%)")
    title = "U supported" if r_star.get("supported") else "points do not support a U"
    if gap is not None and gap[0] < (r_star.get("r_star") or -1) < gap[1]:
        title += "; fitted peak lies where no member is"
    ax.set_title(f"Accuracy vs redundancy ({title})", fontsize=10)
    ax.legend(fontsize=6.5, ncol=2, loc="best")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def figure2(
    histories: Mapping[str, tuple[float, int, Sequence[Mapping]]],
    path: str | pathlib.Path,
) -> pathlib.Path:
    """Effective rank (solid) and R_spec (dashed) trajectories per lambda, over epochs.

    Args:
      histories: ``{member tag: (lambda_red, seed, evaluation records)}``; records carry
        ``epoch``, ``val/effective_rank`` and ``val/spectral_redundancy``.
    """
    by_lambda: dict[float, list[Sequence[Mapping]]] = {}
    for lam, _, hist in histories.values():
        by_lambda.setdefault(lam, []).append(
            [h for h in hist if float(h["epoch"]).is_integer()]
        )
    colours = _lambda_colours(list(by_lambda))
    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=150)
    ax2 = ax.twinx()
    for lam in sorted(by_lambda):
        runs = by_lambda[lam]
        n = min(len(h) for h in runs)
        epochs = np.asarray([h["epoch"] for h in runs[0][:n]])
        rank = np.asarray([[h["val/effective_rank"] for h in r[:n]] for r in runs])
        red = np.asarray([[h["val/spectral_redundancy"] for h in r[:n]] for r in runs])
        c = colours[lam]
        ax.plot(epochs, rank.mean(0), color=c, lw=1.5, label=f"λ = {lam:g}")
        ax.fill_between(epochs, rank.min(0), rank.max(0), color=c, alpha=0.12, lw=0)
        ax2.plot(epochs, red.mean(0), color=c, lw=1.2, ls="--")
        ax2.fill_between(epochs, red.min(0), red.max(0), color=c, alpha=0.08, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"effective rank $r_{eff}$ (solid)")
    ax2.set_ylabel(r"spectral redundancy $\mathcal{R}_{spec}$ (dashed)")
    ax2.set_ylim(0, 1)
    ax.set_title("Effective rank and spectral redundancy of Z during pretraining", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


__all__ = ["figure1", "figure2"]
