"""Resampling intervals for any sample functional: bootstrap, subsampling and jackknife.

References: Efron & Tibshirani, "An Introduction to the Bootstrap" (1993): percentile interval (eq.
13.5), basic (reverse-percentile) interval and normal interval with the bootstrap standard error
(eq. 6.6); the jackknife standard error se = sqrt((n - 1)/n sum_i (theta_(i) - theta_(.))^2) (eq.
11.5). Politis & Romano (1994), subsampling: m-out-of-n draws without replacement, roots scaled by
sqrt(m / n).

Every helper takes `statistic(x) -> array` and samples `x` whose leaves carry the n samples on axis
0 (`(n, d)` arrays as everywhere in `redundax.functionals`; a tuple `(x, y)` of paired samples
works too). The resamples are index arrays; `statistic` is `jax.vmap`-ed over them and evaluated in
chunks of `chunk_size` resamples (`jax.lax.map` with `batch_size`), so memory is
O(chunk_size * n * d) whatever the number of resamples. `statistic` must be traceable (any
jnp function; all functionals of this package are).

Which interval for which estimator:
- Gaussian and plug-in functionals (`gaussian_total_correlation`, `gaussian_higher_order`, ...): the
  ordinary bootstrap (`bootstrap_interval`, with replacement).
- KSG (`ksg_total_correlation`): a bootstrap resample repeats samples, and duplicates are nearest
  neighbours at distance 0, which biases KSG upward. Use subsampling without replacement
  (`bootstrap_interval(..., subsample_size=m)`), e.g. m = n // 2.
- The variational estimator builds its interval from per-sample critic values (see `variational`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

_METHODS = ("percentile", "basic", "normal")


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval and a standard error (same shapes)."""

    estimate: Array
    low: Array
    high: Array
    std: Array


def _num_samples(x: Any) -> int:
    leaves = jax.tree_util.tree_leaves(x)
    if not leaves:
        raise ValueError("`x` has no arrays; pass samples shaped (n, d) (or a tuple of them).")
    ns = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(ns) != 1 or None in ns:
        raise ValueError(
            "Every array in `x` must carry the same number of samples on axis 0; got shapes "
            f"{[jnp.shape(leaf) for leaf in leaves]}."
        )
    n = ns.pop()
    if n < 2:
        raise ValueError(f"`x` has {n} sample(s) on axis 0; resampling needs at least 2.")
    return n


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), e.g. 0.95; got {confidence}.")


def resampled_statistics(
    statistic: Callable[[Any], Array], x: Any, indices: Array, *, chunk_size: int | None = None
) -> Array:
    """`statistic` on `x` resampled along axis 0 by each row of `indices` `(b, m)`: `(b, ...)`."""
    b = indices.shape[0]
    chunk = b if chunk_size is None else max(1, min(int(chunk_size), b))
    return _resampled(statistic, x, indices, chunk)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _resampled(statistic, x, indices, chunk):
    # `x` is an argument (not a closed-over constant): no data baked into the compiled program.
    def one(idx):
        return statistic(jax.tree_util.tree_map(lambda a: jnp.take(a, idx, axis=0), x))

    return jax.lax.map(one, indices, batch_size=chunk)


def bootstrap_interval(
    statistic: Callable[[Any], Array],
    x: Any,
    *,
    key: Array,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    method: str = "percentile",
    subsample_size: int | None = None,
    chunk_size: int | None = 256,
) -> Interval:
    """Bootstrap (or subsampling) confidence interval of `statistic(x)`, vectorised over resamples.

    Args:
      statistic: traceable function of samples, returning an array of any shape.
      x: samples with n on axis 0 of every leaf.
      key: PRNG key for the resample indices.
      num_resamples: number of resamples B.
      confidence: two-sided level 1 - a.
      method: with replacement, `"percentile"` [q_{a/2}, q_{1-a/2}] of theta*, `"basic"`
        [2 theta - q_{1-a/2}, 2 theta - q_{a/2}] or `"normal"` theta +- z se* (se* the standard
        deviation of theta*).
      subsample_size: m < n to draw m-out-of-n without replacement instead (subsampling; for
        estimators that duplicates break, such as KSG). The interval is then
        [theta - r q_{1-a/2}(R), theta - r q_{a/2}(R)] with roots R = theta*_m - mean(theta*_m) and
        r = sqrt(m / n), and `std` = r se*; `method` must stay at its default. The roots are
        centred at the subsample mean rather than at theta (the textbook choice) because
        estimators such as KSG have a bias that changes with the sample size: the interval then
        reflects the variability at size n, not the difference between the biases at m and at n.
      chunk_size: resamples evaluated per step (memory bound); None evaluates all at once.

    Returns:
      `Interval(estimate=statistic(x), low, high, std)`.
    """
    _check_confidence(confidence)
    if method not in _METHODS:
        raise ValueError(f"Unknown `method` {method!r}; use one of {_METHODS}.")
    if num_resamples < 2:
        raise ValueError(f"`num_resamples` must be >= 2; got {num_resamples}.")
    n = _num_samples(x)
    if subsample_size is not None:
        if not 2 <= subsample_size < n:
            raise ValueError(
                f"`subsample_size` must be in [2, n) = [2, {n}) for subsampling; got "
                f"{subsample_size}. Use None for the ordinary bootstrap."
            )
        if method != "percentile":
            raise ValueError("Subsampling intervals are root-based; leave `method` at its default.")
    chunk = num_resamples if chunk_size is None else max(1, min(int(chunk_size), num_resamples))
    return _bootstrap(
        statistic, x, key, n, num_resamples, float(confidence), method, subsample_size, chunk
    )


@functools.partial(jax.jit, static_argnums=(0, 3, 4, 5, 6, 7, 8))
def _bootstrap(statistic, x, key, n, num_resamples, confidence, method, subsample_size, chunk):
    estimate = statistic(x)
    alpha = 1.0 - confidence
    if subsample_size is None:
        indices = jax.random.randint(key, (num_resamples, n), 0, n)
    else:
        u = jax.random.uniform(key, (num_resamples, n))
        indices = jnp.argsort(u, axis=1)[:, :subsample_size]
    stats = _resampled(statistic, x, indices, chunk)
    q_lo, q_hi = jnp.quantile(stats, jnp.asarray([alpha / 2, 1 - alpha / 2]), axis=0)
    spread = jnp.std(stats, axis=0, ddof=1)
    if subsample_size is not None:
        r = math.sqrt(subsample_size / n)
        centre = jnp.mean(stats, axis=0)
        return Interval(
            estimate, estimate - r * (q_hi - centre), estimate - r * (q_lo - centre), r * spread
        )
    if method == "percentile":
        return Interval(estimate, q_lo, q_hi, spread)
    if method == "basic":
        return Interval(estimate, 2 * estimate - q_hi, 2 * estimate - q_lo, spread)
    z = jax.scipy.stats.norm.ppf(1 - alpha / 2)
    return Interval(estimate, estimate - z * spread, estimate + z * spread, spread)


def jackknife_interval(
    statistic: Callable[[Any], Array],
    x: Any,
    *,
    confidence: float = 0.95,
    chunk_size: int | None = 256,
) -> Interval:
    """Jackknife normal interval theta +- z se_jack from the n leave-one-out values (vectorised).

    se_jack = sqrt((n - 1)/n sum_i (theta_(i) - mean_i theta_(i))^2) (Efron & Tibshirani, eq. 11.5).
    Costs n evaluations of `statistic` on n - 1 samples; memory O(chunk_size n d).
    """
    _check_confidence(confidence)
    n = _num_samples(x)
    chunk = n if chunk_size is None else max(1, min(int(chunk_size), n))
    return _jackknife(statistic, x, n, float(confidence), chunk)


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _jackknife(statistic, x, n, confidence, chunk):
    estimate = statistic(x)
    base = jnp.arange(n - 1)
    indices = base[None, :] + (base[None, :] >= jnp.arange(n)[:, None])
    stats = _resampled(statistic, x, indices, chunk)
    dev = stats - jnp.mean(stats, axis=0)
    se = jnp.sqrt((n - 1) / n * jnp.sum(dev * dev, axis=0))
    z = jax.scipy.stats.norm.ppf(1 - (1.0 - confidence) / 2)
    return Interval(estimate, estimate - z * se, estimate + z * se, se)


__all__ = ["Interval", "bootstrap_interval", "jackknife_interval", "resampled_statistics"]
