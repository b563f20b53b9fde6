"""The best sweep member against its baselines: margins with intervals over seeds.

Bi, Zhu & Calhoun (2025), Sec. 4-5 read the MAE sweep through linear-probe top-1 (Table 2); a claim
about the best lambda means little unless it also beats what needs no pretraining at all (a probe on
raw pixels, or on the encoder at its random initialisation). :func:`baseline_margins` picks the
lambda with the highest mean top-1 over seeds and gives, for each baseline, its per-seed margin
(paired by seed when the baseline has one value per seed) with a Student-t interval over seeds, and
whether the baseline beats every member.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats


def t_interval(values: Sequence[float], level: float) -> list[float] | None:
    """Central ``level`` Student-t interval of the mean of ``values`` (None for fewer than 2)."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return None
    half = stats.t.ppf((1 + level) / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return [float(v.mean() - half), float(v.mean() + half)]


def baseline_margins(
    rows: Sequence[Mapping],
    baselines: Mapping[str, float | Mapping[int, float]],
    *,
    level: float = 0.9,
) -> dict[str, Any]:
    """The best member's top-1 margin over each baseline.

    Args:
      rows: one mapping per member with ``lambda_red``, ``seed`` and ``probe_top1``.
      baselines: ``{name: top-1}``, a single value (e.g. raw pixels, seed-free) or ``{seed: top-1}``
        (e.g. the encoder at initialisation; margins then pair members and baseline by seed).
      level: level of the intervals over seeds.

    Returns:
      ``{"best_lambda", "best_top1" (per seed), "best_top1_mean", "level", "baselines": {name:
      {"top1" (mean), "margins" (per seed), "margin_mean", "interval", "beats_every_member"}}}``.
    """
    if not rows:
        raise ValueError("`rows` is empty: no member to compare with the baselines.")
    if not 0 < level < 1:
        raise ValueError(f"`level` must lie in (0, 1); got {level}.")
    by_lambda: dict[float, dict[int, float]] = {}
    for r in rows:
        by_lambda.setdefault(float(r["lambda_red"]), {})[int(r["seed"])] = float(r["probe_top1"])
    best = max(sorted(by_lambda), key=lambda lam: np.mean(list(by_lambda[lam].values())))
    top = by_lambda[best]
    every = max(float(r["probe_top1"]) for r in rows)
    out: dict[str, Any] = {
        "best_lambda": best,
        "best_top1": top,
        "level": level,
        "best_top1_mean": float(np.mean(list(top.values()))),
        "baselines": {},
    }
    for name, value in baselines.items():
        if isinstance(value, Mapping):
            missing = set(top) - {int(s) for s in value}
            if missing:
                raise ValueError(
                    f"baseline {name!r} has no value for seed(s) {sorted(missing)}; "
                    "give one per member seed, or a single value."
                )
            base = {int(s): float(v) for s, v in value.items()}
            margins = {s: top[s] - base[s] for s in top}
            mean_base = float(np.mean([base[s] for s in top]))
        else:
            mean_base = float(value)
            margins = {s: t - mean_base for s, t in top.items()}
        out["baselines"][name] = {
            "top1": mean_base,
            "margins": margins,
            "margin_mean": float(np.mean(list(margins.values()))),
            "interval": t_interval(list(margins.values()), level),
            "beats_every_member": mean_base > every,
        }
    return out


def margin_statement(margins: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str:
    """The headline sentence: the best member and its margin over each baseline (in points)."""
    labels = labels or {}
    n = len(margins["best_top1"])
    parts = []
    for name, b in margins["baselines"].items():
        iv = b["interval"]
        span = (
            f" ({margins['level']:.0%} interval over {n} seeds [{100 * iv[0]:+.1f}, "
            f"{100 * iv[1]:+.1f}])"
            if iv is not None
            else " (one seed: no interval)"
        )
        parts.append(
            f"{labels.get(name, name)} ({100 * b['top1']:.1f} %): "
            f"{100 * b['margin_mean']:+.1f} points{span}"
        )
    return (
        f"Best member: λ = {margins['best_lambda']:g}, top-1 "
        f"{100 * margins['best_top1_mean']:.1f} %; its margin over " + "; over ".join(parts) + "."
    )


def beaten_by(margins: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str | None:
    """A sentence naming the baselines that beat every member, or None."""
    labels = labels or {}
    names = [
        f"{labels.get(k, k)} ({100 * b['top1']:.1f} %)"
        for k, b in margins["baselines"].items()
        if b["beats_every_member"]
    ]
    if not names:
        return None
    return (
        f"{' and '.join(names)} beat{'s' if len(names) == 1 else ''} every member "
        f"(best member: λ = {margins['best_lambda']:g}, "
        f"{100 * margins['best_top1_mean']:.1f} %)."
    )


__all__ = ["baseline_margins", "beaten_by", "margin_statement", "t_interval"]
