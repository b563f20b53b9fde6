"""Nearest-neighbour (Kraskov-Stoegbauer-Grassberger) estimator of total correlation.

Reference: Kraskov, Stoegbauer & Grassberger, "Estimating mutual information", Phys. Rev. E 69,
066138 (2004), eq. 9 (estimator 1, m variables). For samples x_1..x_N of X = (X_1, ..., X_d), with
eps_i the max-norm distance from x_i to its k-th nearest neighbour in the joint space and
n_j(i) = #{l != i : |x_lj - x_ij| < eps_i} the neighbours of x_i strictly inside eps_i along unit j,

    TC_hat = psi(k) + (d - 1) psi(N) - (1/N) sum_i sum_j psi(n_j(i) + 1)          (nats),

a consistent estimator of TC(X) = R_KL(X) (Def. 1 with the KL kernel) for any continuous law.

Algorithm and cost. Units are standardised first (the max-norm compares all units on one scale, so
a unit with a larger spread would otherwise decide every neighbourhood). The
joint k-NN is exact: queries are processed in blocks of `block_size` rows against all N samples
(`jax.lax.map` over blocks, `jax.lax.top_k` per row), so the largest temporary is
`block_size x N x d` coordinate differences (fused by XLA into the max-norm and the marginal
counts, which reuse the very differences the radius came from) and no N x N matrix is ever held.
Time O(N^2 d), memory O(block_size N d); jit-compiled once per (N, d, k, block_size).

Ties and duplicate samples. The sample itself is always one of the k + 1 nearest points returned by
`top_k` (distance 0), and the k-th neighbour distance is taken from the k + 1 smallest distances, so
exact duplicates of x_i count as neighbours at distance 0 (they are neither dropped nor double counted).
When at least k points coincide with x_i (eps_i = 0), eps_i is raised to the smallest positive
normal float, so the duplicates count in every marginal as well (n_j(i) >= k): the estimate stays
finite, but heavily tied data (discrete or quantised units) still bias it, as for any KSG estimator.
Pass `jitter` > 0 to add `jitter * std` Gaussian noise per unit (the usual remedy, as in
scikit-learn's `mutual_info_regression`), which needs a `key`. Marginal ties at exactly eps_i are
excluded by the strict inequality, as in the paper.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from redundax.functionals import _checks

Array = jax.Array

_BLOCK_ELEMENTS = 1 << 22


def _default_block(n: int, d: int) -> int:
    return int(max(1, min(n, _BLOCK_ELEMENTS // (n * d))))


def _standardise(x: Array) -> Array:
    xc = x - jnp.mean(x, axis=0)
    std = jnp.std(xc, axis=0)
    return xc / jnp.where(std > 0, std, 1.0)


def knn_radii_and_counts(x: Array, k: int, block_size: int) -> tuple[Array, Array]:
    """k-th neighbour max-norm radius `(n,)` and strict marginal counts `(n, d)` of samples `(n, d)`.

    radius_i: distance from x_i to its k-th nearest other sample (duplicates count at distance 0),
    floored at the smallest positive normal float. counts_ij = #{l != i : |x_lj - x_ij| < radius_i}.
    Exact and blocked: `block_size` query rows against all n samples at a time, so the largest
    temporary is `block_size x n x d` (XLA fuses it into the two reductions). The marginal
    differences are the very numbers the radius was computed from, so a neighbour at exactly the
    radius along unit j is excluded (strict inequality) without round-off ambiguity.
    """
    n, d = x.shape
    pad = (-n) % block_size
    queries = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block_size, d)
    tiny = jnp.finfo(x.dtype).tiny

    def block(q):
        diff = jnp.abs(q[:, None, :] - x[None, :, :])  # (block, n, d)
        neg, _ = jax.lax.top_k(-jnp.max(diff, axis=-1), k + 1)  # self is among the k + 1 smallest
        radius = jnp.maximum(-neg[:, k], tiny)
        counts = jnp.sum(diff < radius[:, None, None], axis=1, dtype=jnp.int32) - 1
        return radius, counts

    radius, counts = jax.lax.map(block, queries)
    return radius.reshape(-1)[:n], counts.reshape(-1, d)[:n]


@functools.partial(jax.jit, static_argnames=("k", "block_size", "standardise"))
def _ksg(x: Array, k: int, block_size: int, standardise: bool) -> Array:
    if standardise:
        x = _standardise(x)
    # Materialise x once: a recomputed (fused) copy could differ in the last bit, and then a sample
    # would sit at a tiny nonzero distance from itself (duplicates would stop counting).
    x = jax.lax.optimization_barrier(x)
    n, d = x.shape
    _, counts = knn_radii_and_counts(x, k, block_size)
    dt = x.dtype
    return (
        digamma(jnp.asarray(k, dt))
        + (d - 1) * digamma(jnp.asarray(n, dt))
        - jnp.mean(jnp.sum(digamma(counts.astype(dt) + 1), axis=-1))
    )


def ksg_total_correlation(
    x,
    *,
    k: int = 3,
    block_size: int | None = None,
    standardise: bool = True,
    jitter: float = 0.0,
    key: Array | None = None,
) -> Array:
    """KSG estimate of the total correlation TC = R_KL of samples `x` `(n, d)`, in nats.

    Kraskov et al. (2004), eq. 9, with each unit as one variable (module docstring for the algorithm,
    the handling of ties and duplicates, and the cost: time O(n^2 d), memory O(block_size n d)).
    jit-compiled; batch axes are not supported (use `jax.vmap` over `ksg_total_correlation` on traced
    arrays, or a loop). Differentiable almost nowhere (counts): an estimator, not a loss.

    Args:
      x: samples `(n, d)`, d >= 2 units.
      k: neighbours (3-10 is usual: larger k lowers variance and raises bias).
      block_size: query rows per block; default keeps a block at about 4M coordinate differences.
      standardise: z-score each unit first (recommended; the estimate is then scale-invariant).
      jitter: if > 0, add `jitter * std_j` Gaussian noise to unit j to break ties (needs `key`).
      key: PRNG key for `jitter`.

    Raises:
      ValueError: wrong shape, d < 2, k < 1, n <= k (too few samples for k neighbours), jitter
        without a key.
    """
    x = _checks.check_samples(x, "x")
    if x.ndim != 2:
        raise ValueError(f"`x` must be one sample matrix (n, d); got shape {x.shape}.")
    n, d = x.shape
    if d < 2:
        raise ValueError(f"`x` needs d >= 2 units for a total correlation; got shape {x.shape}.")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"`k` (number of neighbours) must be a positive int; got {k!r}.")
    if n <= k:
        raise ValueError(
            f"`x` has {n} samples, too few for k = {k} neighbours (need n > k; n >= 10 k is sensible)."
        )
    if block_size is None:
        block_size = _default_block(n, d)
    if block_size < 1:
        raise ValueError(f"`block_size` must be >= 1; got {block_size}.")
    if jitter < 0:
        raise ValueError(f"`jitter` must be >= 0; got {jitter}.")
    if jitter > 0:
        if key is None:
            raise ValueError("`jitter` > 0 needs a PRNG `key` (jax.random.key(0)).")
        x = x + jitter * jnp.std(x, axis=0) * jax.random.normal(key, x.shape, x.dtype)
    return _ksg(x, k, min(block_size, n), standardise)


__all__ = ["knn_radii_and_counts", "ksg_total_correlation"]
