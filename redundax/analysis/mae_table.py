"""Table 2 of the MAE redundancy sweep: member rows, per-lambda summaries and the markdown table.

Bi, Zhu & Calhoun (2025), Table 2: per lambda_red, the spectral redundancy R_spec of Z ("the mean
value over the final training epochs"), the validation loss, linear-probe top-1 and the regime. Here
with the other redundancy measures of Z (effective rank, R_chi2, Gaussian total correlation; Def. 2,
Props. 4-5), mean ± std over seeds, the refinement round each lambda came from, and two baselines;
:func:`report` adds the R* verdict and the best member's margins over the baselines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from redundax.analysis.lambda_grid import mean_by_lambda, saturated
from redundax.analysis.margins import baseline_margins, beaten_by, margin_statement
from redundax.analysis.r_star import estimate_r_star, regime

ROW_METRICS = (
    "spectral_redundancy",
    "effective_rank",
    "chi2_redundancy",
    "gaussian_total_correlation",
)
SUMMARY_METRICS = (*ROW_METRICS, "val_loss", "train_loss", "probe_top1", "probe_train_top1")


def member_row(result: Mapping, final_epochs: int) -> dict:
    """One member's row: Z metrics averaged over its last ``final_epochs`` whole-epoch evaluations
    (Table 2's "mean value over the final training epochs"); losses at the end; probe top-1.

    Args:
      result: a finished sweep member (``value``, ``seed``, ``history`` of evaluation records with
        ``epoch``, ``val/<metric>``, ``train/recon_loss``; ``probe_top1``, ``probe_train_top1``).
      final_epochs: how many of the last epochs to average.
    """
    if final_epochs < 1:
        raise ValueError(f"`final_epochs` must be >= 1; got {final_epochs}.")
    epochs = [h for h in result["history"] if float(h["epoch"]).is_integer()]
    last = epochs[-final_epochs:]
    row = {"lambda_red": result["value"], "seed": result["seed"]}
    for k in ROW_METRICS:
        row[k] = float(np.mean([h[f"val/{k}"] for h in last]))
    row["val_loss"] = float(epochs[-1]["val/recon_loss"])
    row["train_loss"] = float(epochs[-1]["train/recon_loss"])
    row["probe_top1"] = float(result["probe_top1"])
    row["probe_train_top1"] = float(result["probe_train_top1"])
    return row


def mean_std(rows: Sequence[Mapping], keys: Sequence[str]) -> dict[str, float]:
    """``{key_mean, key_std}`` over rows (std with ddof=1; 0 for a single row)."""
    out = {}
    for k in keys:
        v = np.asarray([r[k] for r in rows], np.float64)
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def summarise(rows: Sequence[Mapping]) -> list[dict]:
    """Per lambda (ascending): seeds, refinement round, and mean/std of every row metric."""
    out = []
    for lam in sorted({r["lambda_red"] for r in rows}):
        group = [r for r in rows if r["lambda_red"] == lam]
        out.append(
            {
                "lambda_red": lam,
                "num_seeds": len(group),
                "round": min(r.get("round", 0) for r in group),
                **mean_std(group, SUMMARY_METRICS),
            }
        )
    return out


def _pm(s: Mapping, key: str, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    return f"{fmt.format(s[key + '_mean'] * scale)} ± {fmt.format(s[key + '_std'] * scale)}"


def _measures(s: Mapping) -> str:
    return " | ".join(
        [
            _pm(s, "spectral_redundancy"),
            _pm(s, "effective_rank", "{:.2f}"),
            _pm(s, "chi2_redundancy", "{:.3g}"),
            _pm(s, "gaussian_total_correlation", "{:.3g}"),
            _pm(s, "val_loss", "{:.4f}"),
            _pm(s, "probe_top1", "{:.1f}", 100),
        ]
    )


def results_markdown(
    summary: Sequence[Mapping],
    baselines: Mapping,
    r_star: Mapping,
    *,
    title: str,
    caption: str,
    headline: str,
    warning: str | None = None,
) -> str:
    """Table 2 (lambda, round, R_spec, r_eff, R_chi2, TC, validation loss, top-1, regime) with the
    baselines as extra rows, then the headline and the R* verdict.

    Args:
      summary: :func:`summarise` output.
      baselines: ``{"random_init": {<metric>_mean/_std ...}, "raw_pixels": {"probe_top1",
        "num_features"}}``.
      r_star: :func:`redundax.analysis.r_star.estimate_r_star` output.
      title, caption: the heading and the sentence under it.
      headline: the best member against the baselines.
      warning: when given (a baseline beats every member), the table's first line.
    """
    lines = [f"**{warning}**", ""] if warning else []
    lines += [
        f"# {title}",
        "",
        caption,
        "",
        "| λ_red | round | R_spec | r_eff | R_χ² | TC (nats) | Validation loss | Top-1 (%) | Regime |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['lambda_red']:g} | {s['round']} | {_measures(s)} | "
            f"{regime(s['spectral_redundancy_mean'], r_star)} |"
        )
    ri, raw = baselines["random_init"], baselines["raw_pixels"]
    lines.append(f"| random-init encoder (baseline) | - | {_measures(ri)} | - |")
    lines.append(
        f"| raw pixels (baseline, {raw['num_features']} features) | - | - | - | - | - "
        f"| - | {100 * raw['probe_top1']:.1f} | - |"
    )
    lines += ["", f"**Headline.** {headline}", "", f"**R\\*.** {r_star['statement']}", ""]
    return "\n".join(lines)


BASELINE_LABELS = {"raw_pixels": "raw pixels", "random_init": "the random-init encoder"}


def report(
    rows: Sequence[Mapping],
    baselines: Mapping,
    *,
    r_star: Mapping,
    tol: float,
    title: str,
    caption: str,
) -> dict:
    """Everything Table 2 says about a finished sweep.

    Args:
      rows: :func:`member_row` of every member (with its ``round``).
      baselines: ``{"raw_pixels": {"probe_top1", "num_features"}, "random_init": {"rows": [per
        seed {"seed", "probe_top1", ...}], <metric>_mean/_std}}``.
      r_star: keyword arguments of :func:`redundax.analysis.r_star.estimate_r_star` (``bootstrap``,
        ``seed``, ``level``, ``alpha``, ``resolution``); ``level`` also sets the margins' intervals.
      tol: R_spec tolerance of saturation (:func:`redundax.analysis.lambda_grid.saturated`).
      title, caption: the table's heading and the sentence under it.

    Returns:
      ``{"summary", "r_star", "margins", "headline", "warning", "saturated", "markdown"}``.
    """
    summary = summarise(rows)
    star = estimate_r_star(rows, **r_star)
    init = {r["seed"]: r["probe_top1"] for r in baselines["random_init"]["rows"]}
    margins = baseline_margins(
        rows,
        {"raw_pixels": baselines["raw_pixels"]["probe_top1"], "random_init": init},
        level=r_star["level"],
    )
    headline = margin_statement(margins, BASELINE_LABELS)
    warning = beaten_by(margins, BASELINE_LABELS)
    markdown = results_markdown(
        summary, baselines, star, title=title, caption=caption, headline=headline, warning=warning
    )
    return {
        "summary": summary,
        "r_star": star,
        "margins": margins,
        "headline": headline,
        "warning": warning,
        "saturated": saturated(*mean_by_lambda(rows), tol),
        "markdown": markdown,
    }


__all__ = [
    "BASELINE_LABELS",
    "ROW_METRICS",
    "mean_std",
    "member_row",
    "report",
    "results_markdown",
    "summarise",
]
