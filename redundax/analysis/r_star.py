"""R*: where probe accuracy peaks against spectral redundancy, and whether the points measure it.

Bi, Zhu & Calhoun (2025), Theorem 2 (an interior optimum R* of the error against redundancy),
Sec. 4-5 (Figure 1: linear-probe top-1 against R_spec; the dashed line is "the fitted optimum R*").

A sweep gives one point (R_spec, top-1) per member. :func:`estimate_r_star` fits a quadratic, takes
its interior maximum as R*, and keeps three separate questions apart:

- *Is there a U?* The fit to all points has an interior maximum, at least ``level`` of the bootstrap
  fits (over seeds) do too, and the two-lines test (Simonsohn, 2018) agrees: split at R*, accuracy
  rises with R_spec below it and falls above it, each slope significant at one-sided ``alpha``. A
  concave quadratic alone is not evidence of a U (a rising, saturating relation gives one too).
- *Is R* measured?* Only when members lie on both sides of the fitted peak within ``resolution``
  (in R_spec). Otherwise the peak sits in a gap between members, its position comes from the
  curve's shape rather than from data, and the verdict is "peak not resolved" with the gap.
- *Where does each member sit?* :func:`regime` (under-redundant, balanced, over-redundant), only
  for a measured R*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

MEASURED = "measured"
NOT_RESOLVED = "peak not resolved"
NO_U = "no U"


def quadratic_max(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """Least-squares ``y = c0 + c1 x + c2 x^2``.

    Returns:
      ``(coefficients (c0, c1, c2), argmax)``; the argmax is None unless the parabola opens
      downwards and its vertex lies strictly inside ``(min x, max x)``; the coefficients are None
      with fewer than three distinct x.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(np.unique(x)) < 3:
        return None, None
    c2, c1, c0 = np.polyfit(x, y, 2)
    coef = np.array([c0, c1, c2])
    if c2 >= 0:
        return coef, None
    r = -c1 / (2 * c2)
    return coef, (float(r) if x.min() < r < x.max() else None)


def one_sided_slope_p(x: np.ndarray, y: np.ndarray, sign: int) -> tuple[float, float]:
    """OLS slope of y on x and the one-sided t-test p-value for ``sign * slope > 0``.

    Returns ``(nan, 1.0)`` with fewer than three points or a single distinct x (no test possible).
    """
    if sign not in (-1, 1):
        raise ValueError(f"`sign` must be +1 (rising) or -1 (falling); got {sign!r}.")
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or len(np.unique(x)) < 2:
        return float("nan"), 1.0
    res = stats.linregress(x, y)
    t = res.slope / res.stderr if res.stderr > 0 else np.inf * np.sign(res.slope)
    return float(res.slope), float(stats.t.sf(sign * t, len(x) - 2))


def _bootstrap_peaks(x, y, seeds, bootstrap: int, seed: int) -> tuple[list[float], float]:
    """R* of fits to resampled seeds (all members of a seed together; members when one seed)."""
    labels = seeds if len(np.unique(seeds)) > 1 else np.arange(len(x))
    units = np.unique(labels)
    rng = np.random.default_rng(seed)
    stars = []
    for _ in range(bootstrap):
        pick = rng.choice(units, size=len(units), replace=True)
        idx = np.concatenate([np.flatnonzero(labels == u) for u in pick])
        r = quadratic_max(x[idx], y[idx])[1]
        if r is not None:
            stars.append(r)
    return stars, (len(stars) / bootstrap if bootstrap else 0.0)


def _u_statement(r_star, c2, frac, two_lines, level, alpha, interval) -> tuple[bool, str]:
    """Whether the points support a U, and the sentence saying why (not)."""
    ok = (
        r_star is not None
        and frac >= level
        and two_lines is not None
        and max(two_lines["p_below"], two_lines["p_above"]) < alpha
    )
    if ok:
        return True, (
            f"The points support a U: {frac:.0%} of the bootstrap fits have an interior maximum "
            f"({level:.0%} interval [{interval[0]:.3f}, {interval[1]:.3f}]); two-lines test: "
            f"rising below the peak (p = {two_lines['p_below']:.3f}), falling above it "
            f"(p = {two_lines['p_above']:.3f})."
        )
    if c2 >= 0:
        why = f"the fitted parabola opens upwards (curvature {c2:.3g})"
    elif r_star is None:
        why = "the fitted maximum lies outside the observed R_spec range"
    elif frac < level:
        why = (
            f"only {frac:.0%} of the bootstrap fits have an interior maximum (needed: {level:.0%})"
        )
    else:
        why = (
            f"the two-lines test split at the fitted peak needs accuracy to rise below it and "
            f"fall above it, each at one-sided p < {alpha}; got p = {two_lines['p_below']:.3f} "
            f"(rise) and p = {two_lines['p_above']:.3f} (fall)"
        )
    return False, f"The points do not support a U: {why}."


def estimate_r_star(
    rows: Sequence[Mapping],
    *,
    bootstrap: int,
    seed: int,
    level: float,
    alpha: float = 0.05,
    resolution: float = 0.1,
) -> dict[str, Any]:
    """Fit R*, test for a U and say whether the peak is measured (see the module docstring).

    Args:
      rows: one mapping per member with ``spectral_redundancy``, ``probe_top1`` and ``seed``.
      bootstrap: number of bootstrap resamples (over seeds; over members when there is one seed).
      seed: the bootstrap's random seed.
      level: bootstrap interval level, and the fraction of bootstrap fits that must have an
        interior maximum for a U.
      alpha: one-sided significance level of each slope of the two-lines test.
      resolution: R* is *measured* only if the nearest member below and the nearest member above
        the fitted peak both lie within this R_spec distance of it.

    Returns:
      A dict: ``r_star`` (the fitted peak or None), ``coefficients``, ``interval``,
      ``interior_fraction``, ``two_lines``, ``supported`` (a U), ``nearest`` (the nearest member
      R_spec below and above the peak), ``gap`` (their distance), ``resolved`` (both within
      ``resolution``), ``verdict`` (``"measured"``, ``"peak not resolved"`` or ``"no U"``) and
      ``statement`` (the verdict in words).
    """
    if bootstrap < 0:
        raise ValueError(f"`bootstrap` must be >= 0; got {bootstrap}.")
    if not 0 < level < 1 or not 0 < alpha < 1:
        raise ValueError(f"`level` and `alpha` must lie in (0, 1); got {level}, {alpha}.")
    if not resolution > 0:
        raise ValueError(f"`resolution` must be a positive R_spec distance; got {resolution}.")
    x = np.asarray([r["spectral_redundancy"] for r in rows], np.float64)
    y = np.asarray([r["probe_top1"] for r in rows], np.float64)
    seeds = np.asarray([r["seed"] for r in rows])
    coef, r_star = quadratic_max(x, y)
    out: dict[str, Any] = {
        "method": "quadratic least squares of probe top-1 on R_spec; bootstrap over "
        + ("seeds" if len(np.unique(seeds)) > 1 else "members")
        + "; two-lines test split at R*",
        "coefficients": None if coef is None else [float(c) for c in coef],
        "r_star": r_star,
        "bootstrap": bootstrap,
        "level": level,
        "alpha": alpha,
        "resolution": resolution,
        "interior_fraction": 0.0,
        "interval": None,
        "two_lines": None,
        "supported": False,
        "nearest": None,
        "gap": None,
        "resolved": False,
        "verdict": NO_U,
    }
    if coef is None:
        out["statement"] = (
            "Fewer than three distinct R_spec values: no curve can be fitted, so "
            "the points do not support a U."
        )
        return out
    stars, frac = _bootstrap_peaks(x, y, seeds, bootstrap, seed)
    interval = None
    if stars:
        interval = [float(q) for q in np.quantile(stars, [(1 - level) / 2, (1 + level) / 2])]
    two_lines = None
    if r_star is not None:
        below, above = x < r_star, x >= r_star
        s_lo, p_lo = one_sided_slope_p(x[below], y[below], +1)
        s_hi, p_hi = one_sided_slope_p(x[above], y[above], -1)
        two_lines = {
            "slope_below": s_lo,
            "p_below": p_lo,
            "n_below": int(below.sum()),
            "slope_above": s_hi,
            "p_above": p_hi,
            "n_above": int(above.sum()),
        }
    supported, u_text = _u_statement(r_star, coef[2], frac, two_lines, level, alpha, interval)
    out.update(interior_fraction=frac, interval=interval, two_lines=two_lines, supported=supported)
    if r_star is None:
        out["statement"] = u_text
        return out
    nearest = [float(x[x < r_star].max()), float(x[x >= r_star].min())]
    resolved = r_star - nearest[0] <= resolution and nearest[1] - r_star <= resolution
    out.update(nearest=nearest, gap=nearest[1] - nearest[0], resolved=bool(resolved))
    where = (
        f"the nearest members lie at R_spec {nearest[0]:.3f} below and {nearest[1]:.3f} above it"
    )
    if resolved and supported:
        out["verdict"] = MEASURED
        out["statement"] = (
            f"R* measured: {r_star:.3f}; {where}, both within {resolution:g}. " + u_text
        )
    elif resolved:
        out["statement"] = (
            u_text + f" (The fitted peak at R_spec {r_star:.3f} is bracketed: {where}.)"
        )
    else:
        out["verdict"] = NOT_RESOLVED
        out["statement"] = (
            f"Peak not resolved: the quadratic fit peaks at R_spec {r_star:.3f}, but no member "
            f"has R_spec between {nearest[0]:.3f} and {nearest[1]:.3f} (gap "
            f"{nearest[1] - nearest[0]:.3f}; measuring R* needs a member within {resolution:g} "
            f"on each side), so its position comes from the curve's shape, not from measured "
            f"points. " + u_text
        )
    return out


def regime(r_spec: float, r_star: Mapping) -> str:
    """Table 2's regime of a member at ``r_spec``: under-redundant below R*'s bootstrap interval,
    over-redundant above it, balanced inside; ``"-"`` unless R* is measured."""
    if r_star.get("verdict") != MEASURED or r_star.get("interval") is None:
        return "-"
    lo, hi = r_star["interval"]
    if r_spec < lo:
        return "under-redundant"
    if r_spec > hi:
        return "over-redundant"
    return "balanced (near R*)"


__all__ = [
    "MEASURED",
    "NOT_RESOLVED",
    "NO_U",
    "estimate_r_star",
    "one_sided_slope_p",
    "quadratic_max",
    "regime",
]
