"""Figures of the MAE redundancy sweep (Bi, Zhu & Calhoun, 2025, Sec. 5, Figs. 1-2).

Figure 1: linear-probe top-1 against spectral redundancy R_spec, one small point per member and a
mean ± std marker per lambda_red (colour and marker shape per lambda, so overlapping lambdas stay
apart), the quadratic fit, R* with its bootstrap interval and the under-, balanced and over-redundant
regimes when R* is measured, the unresolved gap hatched when it is not, and the baselines as labelled
horizontal lines inside the axes.

Figure 2: effective rank (solid, left axis) and R_spec (dashed, right axis) of Z on the held-out
batch against epoch, one colour and marker per lambda_red (mean over seeds, band = min..max over
seeds).

Figure 3: top-1 (upper panel) and R_spec (lower panel) against lambda_red on a log axis, lambda = 0
drawn at the left edge (``redundax.analysis.lambda_grid.log_positions``) behind an axis break and
labelled "0"; marker shape = the refinement round that added the lambda; baselines as labelled lines.

Legends sit outside the axes, so they never cover data.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from redundax.analysis.lambda_grid import log_positions

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8")
ROUND_MARKERS = ("o", "s", "^", "D", "v")
BASELINE_STYLE = {
    "raw_pixels": ("tab:red", ":", "raw pixels"),
    "random_init": ("tab:purple", "-.", "random-init encoder"),
}


def _styles(lambdas: Sequence[float]) -> dict[float, tuple[tuple, str]]:
    """(colour, marker) per distinct lambda, in ascending order."""
    cmap = plt.get_cmap("viridis")
    ordered = sorted(set(lambdas))
    n = max(len(ordered) - 1, 1)
    return {lam: (cmap(0.9 * i / n), MARKERS[i % len(MARKERS)]) for i, lam in enumerate(ordered)}


def _baseline_values(baselines: Mapping) -> dict[str, float]:
    return {
        "raw_pixels": 100 * baselines["raw_pixels"]["probe_top1"],
        "random_init": 100 * baselines["random_init"]["probe_top1_mean"],
    }


def _draw_baselines(ax, values: Mapping[str, float]) -> None:
    """Horizontal lines across the axes, each labelled in the right margin at its height (labels
    never cover data; labels closer than a line height are nudged apart)."""
    lo, hi = ax.get_ylim()
    placed: list[float] = []
    for name, v in sorted(values.items(), key=lambda kv: kv[1]):
        colour, ls, label = BASELINE_STYLE[name]
        ax.axhline(v, color=colour, ls=ls, lw=1.6, zorder=1)
        y = (v - lo) / (hi - lo)
        if placed and y - placed[-1] < 0.07:
            y = placed[-1] + 0.07
        placed.append(y)
        ax.annotate(
            f"{label}\n{v:.1f} %",
            xy=(1.0, y),
            xycoords="axes fraction",
            xytext=(4, 0),
            textcoords="offset points",
            color=colour,
            fontsize=7.5,
            va="center",
            ha="left",
            annotation_clip=False,
        )


def _ylim_with(ax, values: Sequence[float]) -> None:
    """Extend the y limits so every value (the baselines) lies inside, with a margin."""
    lo, hi = ax.get_ylim()
    lo, hi = min(lo, *values), max(hi, *values)
    pad = 0.08 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


def _save(fig, path) -> pathlib.Path:
    path = pathlib.Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def figure1(
    rows: Sequence[Mapping],
    summary: Sequence[Mapping],
    baselines: Mapping,
    r_star: Mapping,
    path: str | pathlib.Path,
) -> pathlib.Path:
    """Accuracy vs R_spec: members, per-lambda means, the fit, R* or its unresolved gap,
    baselines."""
    styles = _styles([r["lambda_red"] for r in rows])
    fig, ax = plt.subplots(figsize=(8.4, 4.8), dpi=150)
    xs = np.asarray([r["spectral_redundancy"] for r in rows])
    lo_x, hi_x = float(xs.min()), float(xs.max())
    pad = 0.05 * max(hi_x - lo_x, 1e-3)
    measured = r_star.get("verdict") == "measured"
    if measured:
        lo, hi = r_star["interval"]
        ax.axvspan(lo_x - pad, lo, color="tab:blue", alpha=0.07, label="under-redundant")
        ax.axvspan(lo, hi, color="tab:green", alpha=0.15, label="balanced (R* interval)")
        ax.axvspan(hi, hi_x + pad, color="tab:red", alpha=0.07, label="over-redundant")
        ax.axvline(
            r_star["r_star"],
            color="k",
            ls="--",
            lw=1.2,
            label=f"R* = {r_star['r_star']:.3f} (measured)",
        )
    elif r_star.get("r_star") is not None:
        g0, g1 = r_star["nearest"]
        ax.axvspan(
            g0,
            g1,
            facecolor="none",
            edgecolor="0.55",
            hatch="//",
            lw=0,
            label=f"no member: {g0:.2f}-{g1:.2f}",
        )
        ax.axvline(
            r_star["r_star"],
            color="0.4",
            ls="--",
            lw=1,
            label=f"fitted peak {r_star['r_star']:.3f} (not resolved)",
        )
    if r_star.get("coefficients") is not None:
        c0, c1, c2 = r_star["coefficients"]
        grid = np.linspace(lo_x, hi_x, 200)
        ax.plot(
            grid, 100 * (c0 + c1 * grid + c2 * grid**2), color="0.3", lw=1, label="quadratic fit"
        )
    for r in rows:
        colour, marker = styles[r["lambda_red"]]
        ax.scatter(
            r["spectral_redundancy"],
            100 * r["probe_top1"],
            s=16,
            alpha=0.45,
            color=colour,
            marker=marker,
            edgecolors="none",
        )
    for s in summary:
        colour, marker = styles[s["lambda_red"]]
        ax.errorbar(
            s["spectral_redundancy_mean"],
            100 * s["probe_top1_mean"],
            xerr=s["spectral_redundancy_std"],
            yerr=100 * s["probe_top1_std"],
            fmt=marker,
            ms=7,
            capsize=3,
            color=colour,
            markeredgecolor="k",
            label=f"λ = {s['lambda_red']:g}" + (f" (round {s['round']})" if s.get("round") else ""),
        )
    ax.set_xlim(lo_x - pad, hi_x + pad)
    values = _baseline_values(baselines)
    _ylim_with(ax, list(values.values()))
    _draw_baselines(ax, values)
    ax.set_xlabel(r"spectral redundancy $\mathcal{R}_{spec}$ (held-out Z)")
    ax.set_ylabel("linear-probe top-1 (%)")
    title = {"measured": "R* measured", "peak not resolved": "peak not resolved"}.get(
        r_star.get("verdict"), "no U"
    )
    title += "; U supported" if r_star.get("supported") else "; U not supported"
    ax.set_title(f"Accuracy vs redundancy ({title})", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
    return _save(fig, path)


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
        by_lambda.setdefault(lam, []).append([h for h in hist if float(h["epoch"]).is_integer()])
    styles = _styles(list(by_lambda))
    fig, ax = plt.subplots(figsize=(8.4, 4.6), dpi=150)
    ax2 = ax.twinx()
    for lam in sorted(by_lambda):
        runs = by_lambda[lam]
        n = min(len(h) for h in runs)
        epochs = np.asarray([h["epoch"] for h in runs[0][:n]])
        rank = np.asarray([[h["val/effective_rank"] for h in r[:n]] for r in runs])
        red = np.asarray([[h["val/spectral_redundancy"] for h in r[:n]] for r in runs])
        colour, marker = styles[lam]
        every = max(n // 8, 1)
        ax.plot(
            epochs,
            rank.mean(0),
            color=colour,
            lw=1.5,
            marker=marker,
            ms=4,
            markevery=every,
            label=f"λ = {lam:g}",
        )
        ax.fill_between(epochs, rank.min(0), rank.max(0), color=colour, alpha=0.12, lw=0)
        ax2.plot(
            epochs,
            red.mean(0),
            color=colour,
            lw=1.2,
            ls="--",
            marker=marker,
            ms=3,
            markevery=(every // 2, every),
            mfc="none",
        )
        ax2.fill_between(epochs, red.min(0), red.max(0), color=colour, alpha=0.08, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(r"effective rank $r_{eff}$ (solid)")
    ax2.set_ylabel(r"spectral redundancy $\mathcal{R}_{spec}$ (dashed)")
    ax2.set_ylim(0, 1)
    ax.set_title("Effective rank and spectral redundancy of Z during pretraining", fontsize=10)
    ax.legend(
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.12, 1.0),
        borderaxespad=0,
        title="mean over seeds\n(band: min..max)",
        title_fontsize=7,
    )
    return _save(fig, path)


def figure3(
    rows: Sequence[Mapping],
    summary: Sequence[Mapping],
    baselines: Mapping,
    path: str | pathlib.Path,
) -> pathlib.Path:
    """Top-1 and R_spec against lambda (log axis, lambda = 0 at the left edge)."""
    lams = [s["lambda_red"] for s in summary]
    pos = dict(zip(lams, log_positions(lams), strict=True))
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(8.4, 6.4), dpi=150, sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    rounds = sorted({r.get("round", 0) for r in rows})
    for ax, key, scale in ((top, "probe_top1", 100), (bottom, "spectral_redundancy", 1)):
        for part in (
            [s for s in summary if s["lambda_red"] > 0],  # no line across the break
            [s for s in summary if s["lambda_red"] == 0],
        ):
            if part:
                ax.errorbar(
                    [pos[s["lambda_red"]] for s in part],
                    [scale * s[f"{key}_mean"] for s in part],
                    yerr=[scale * s[f"{key}_std"] for s in part],
                    color="0.25",
                    lw=1,
                    marker="_",
                    ms=12,
                    capsize=3,
                    zorder=2,
                    label="mean ± std over seeds" if part[0]["lambda_red"] else None,
                )
        for k in rounds:
            pts = [r for r in rows if r.get("round", 0) == k]
            ax.scatter(
                [pos[r["lambda_red"]] for r in pts],
                [scale * r[key] for r in pts],
                marker=ROUND_MARKERS[k % len(ROUND_MARKERS)],
                s=22,
                alpha=0.7,
                color=plt.get_cmap("tab10")(k),
                zorder=3,
                label="grid (round 0)" if k == 0 else f"refinement round {k}",
            )
        ax.set_xscale("log")
        ax.grid(True, which="major", alpha=0.3)
    values = _baseline_values(baselines)
    _ylim_with(top, list(values.values()))
    _draw_baselines(top, values)
    top.set_ylabel("linear-probe top-1 (%)")
    bottom.set_ylabel(r"$\mathcal{R}_{spec}$ (held-out Z)")
    bottom.set_xlabel(r"$\lambda_{red}$ (log scale)")
    top.set_title("Accuracy and redundancy against the penalty weight", fontsize=10)
    bottom.legend(
        *top.get_legend_handles_labels(),
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0,
    )
    if 0.0 in pos:
        positive = sorted(p for lam, p in pos.items() if lam > 0)
        zero = pos[0.0]
        bottom.set_xlim(zero / 3, (positive[-1] if positive else zero) * 3)
        decades = []
        if positive:
            decades = list(
                range(
                    int(np.floor(np.log10(positive[0]))), int(np.ceil(np.log10(positive[-1]))) + 1
                )
            )
        bottom.set_xticks([zero, *[10.0**e for e in decades]])
        bottom.set_xticklabels(["0", *[f"$10^{{{e}}}$" for e in decades]])
        bottom.minorticks_off()
        if positive:  # an axis break between lambda = 0 and the positive lambdas
            brk = np.sqrt(zero * positive[0])
            for ax in (top, bottom):
                ax.axvline(brk, color="0.5", lw=0.8, ls=(0, (2, 2)))
            bottom.annotate(
                "λ = 0 (no penalty)\ndrawn at the left edge",
                xy=(zero, 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 4),
                textcoords="offset points",
                fontsize=6.5,
                ha="left",
                va="bottom",
                color="0.3",
            )
    return _save(fig, path)


__all__ = ["figure1", "figure2", "figure3"]
