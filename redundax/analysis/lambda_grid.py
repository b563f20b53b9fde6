"""Adaptive lambda grids: place new sweep members where R_spec is not yet measured.

Bi, Zhu & Calhoun (2025), Sec. 4 (eq. 2): lambda_red moves the spectral redundancy R_spec of Z, and
"the relationship between lambda_red and redundancy is markedly non-linear" (Figure 2): a grid fixed
in advance leaves wide R_spec gaps (exactly where an interior optimum R* may lie) and spends members
on saturated values (strong penalties that all reach the same R_spec). :func:`refine` is one round of
a bisection in log lambda: given the members so far (lambda and mean R_spec over seeds), it returns
the geometric midpoints of the neighbouring lambda pairs whose mean R_spec differ by more than
``gap``, largest R_spec differences first, within a budget, never repeating a lambda.

lambda = 0 has no logarithm. The rule used here (and by the figures, :func:`log_positions`): on a log
axis lambda = 0 stands ``ZERO_DECADES`` decades below the smallest positive lambda, so the geometric
midpoint of ``(0, b)`` is ``b / 10`` (one decade below ``b``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

ZERO_DECADES = 2  # lambda = 0 sits this many decades below the smallest positive lambda


def _check(lambdas: Sequence[float], r_spec: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(lambdas, np.float64)
    r = np.asarray(r_spec, np.float64)
    if lam.ndim != 1 or r.shape != lam.shape:
        raise ValueError(
            f"`lambdas` and `r_spec` must be 1-D of equal length; got shapes "
            f"{lam.shape} and {r.shape}."
        )
    if not (np.isfinite(lam).all() and (lam >= 0).all()):
        raise ValueError(f"`lambdas` must be finite and >= 0; got {lam.tolist()}.")
    if len(np.unique(lam)) != len(lam):
        raise ValueError(f"`lambdas` must be distinct (one mean R_spec each); got {lam.tolist()}.")
    if not np.isfinite(r).all():
        raise ValueError(f"`r_spec` must be finite; got {r.tolist()}.")
    order = np.argsort(lam)
    return lam[order], r[order]


def mean_by_lambda(
    rows: Sequence[Mapping], key: str = "spectral_redundancy"
) -> tuple[list[float], list[float]]:
    """The distinct ``lambda_red`` of ``rows`` (ascending) and the mean of ``key`` over each one's
    members (seeds): the input of :func:`refine` and :func:`saturated`."""
    lams = sorted({float(r["lambda_red"]) for r in rows})
    return lams, [float(np.mean([r[key] for r in rows if r["lambda_red"] == lam])) for lam in lams]


def log_positions(lambdas: Sequence[float]) -> np.ndarray:
    """Where each lambda stands on a log axis: itself, or for lambda = 0 the smallest positive
    lambda divided by ``10**ZERO_DECADES`` (1 when there is no positive lambda)."""
    lam = np.asarray(lambdas, np.float64)
    positive = lam[lam > 0]
    zero_at = positive.min() / 10**ZERO_DECADES if positive.size else 1.0
    return np.where(lam > 0, lam, zero_at)


def geometric_midpoint(a: float, b: float, digits: int = 3) -> float:
    """``sqrt(a b)`` rounded to ``digits`` significant digits; for ``a = 0``, ``b / 10`` (lambda =
    0 stands two decades below ``b``, see the module docstring)."""
    if not 0 <= a < b:
        raise ValueError(f"need 0 <= a < b; got a={a}, b={b}.")
    mid = math.sqrt(a * b) if a > 0 else b / 10 ** (ZERO_DECADES / 2)
    return float(f"{mid:.{digits}g}")


def saturated(lambdas: Sequence[float], r_spec: Sequence[float], tol: float) -> list[float]:
    """The lambdas whose mean R_spec equals the next smaller lambda's within ``tol``: they measure
    the same place as that neighbour (a penalty too weak to move R_spec yet, or one past the point
    where R_spec stops falling), so refinement places nothing beside them on that side."""
    if tol < 0:
        raise ValueError(f"`tol` must be >= 0; got {tol}.")
    lam, r = _check(lambdas, r_spec)
    return [float(lam[i]) for i in range(1, len(lam)) if abs(r[i] - r[i - 1]) <= tol]


def refine(
    lambdas: Sequence[float],
    r_spec: Sequence[float],
    *,
    gap: float,
    max_new: int,
    tol: float = 0.01,
    min_ratio: float = 1.5,
    digits: int = 3,
) -> list[float]:
    """One refinement round: new lambdas at the R_spec gaps of the members so far.

    Args:
      lambdas: the distinct lambdas trained so far (any order).
      r_spec: their mean R_spec (over seeds), in the same order.
      gap: split a pair of neighbouring lambdas when their mean R_spec differ by more than this.
      max_new: at most this many new lambdas (the round's share of the member budget divided by
        the number of seeds); the pairs with the largest R_spec differences go first (ties: the
        smaller lambda first).
      tol: saturation: pairs whose R_spec differ by at most ``tol`` are never split (they measure
        one place; see :func:`saturated`), whatever ``gap``.
      min_ratio: a pair of positive lambdas is split only if ``b / a >= min_ratio`` (a jump in
        R_spec that bisection cannot narrow further stops consuming the budget).
      digits: significant digits of the new lambdas (readable tables and stable member names).

    Returns:
      The new lambdas, sorted; none equals an existing one or another new one.
    """
    if not gap > 0:
        raise ValueError(f"`gap` must be a positive R_spec difference; got {gap}.")
    if not isinstance(max_new, int) or max_new < 0:
        raise ValueError(f"`max_new` must be an integer >= 0; got {max_new!r}.")
    if tol < 0:
        raise ValueError(f"`tol` must be >= 0; got {tol}.")
    if not min_ratio > 1:
        raise ValueError(f"`min_ratio` must be > 1; got {min_ratio}.")
    lam, r = _check(lambdas, r_spec)
    pairs = []
    for i in range(len(lam) - 1):
        a, b, diff = lam[i], lam[i + 1], abs(r[i + 1] - r[i])
        if diff > max(gap, tol) and (a == 0 or b / a >= min_ratio):
            pairs.append((-diff, a, b))
    new: list[float] = []
    taken = lam.tolist()
    for _, a, b in sorted(pairs):
        if len(new) == max_new:
            break
        mid = geometric_midpoint(float(a), float(b), digits)
        if a < mid < b and not any(math.isclose(mid, t, rel_tol=1e-9) for t in taken):
            new.append(mid)
            taken.append(mid)
    return sorted(new)


__all__ = [
    "ZERO_DECADES",
    "geometric_midpoint",
    "log_positions",
    "mean_by_lambda",
    "refine",
    "saturated",
]
