"""Higher-order information: dual total correlation, O-information and S-information.

References: Rosas, Mediano, Gastpar & Jensen, "Quantifying high-order interdependencies via
multivariate extensions of the mutual information", Phys. Rev. E 100, 032305 (2019), eqs. (4)-(7) and
(13) (the per-unit gradient); Bi, Zhu & Calhoun (2025), Prop. 4 (Gaussian TC = R_KL). In nats.

For X = (X_1, ..., X_d) with X_{-i} all units but i:

    TC(X)  = sum_i H(X_i) - H(X)                                  (total correlation, = R_KL)
    DTC(X) = H(X) - sum_i H(X_i | X_{-i}) = sum_i H(X_{-i}) - (d - 1) H(X)   (dual total correlation)
    O(X)   = TC(X) - DTC(X)                                       (O-information)
    S(X)   = TC(X) + DTC(X) = sum_i I(X_i; X_{-i})                (S-information)

Sign convention: O > 0 means the dependencies are redundancy-dominated (the same information is
shared by many units, e.g. copies of one variable), O < 0 synergy-dominated (information only in the
joint state, e.g. X_3 = X_1 XOR X_2). For d = 2, DTC = TC = I(X_1; X_2) and O = 0.

Gaussian closed forms. With C the correlation matrix and P = C^{-1}, log det C_{-i} = log det C +
log P_ii and H(X_i | X_{-i}) = 1/2 log(2 pi e / P_ii) for unit-variance X_i, so

    TC = -1/2 log det C,   DTC = 1/2 (log det C + sum_i log P_ii),
    O  = -log det C - 1/2 sum_i log P_ii,   S = 1/2 sum_i log P_ii.

Per-unit contributions (leave-one-out, Rosas et al. eq. 13): delta_i M = M(X) - M(X_{-i}). The
inverse of C_{-i} is the Schur complement P_{-i} - P_{-i,i} P_{i,-i} / P_ii, so all d leave-one-out
values come from one Cholesky factor in O(d^3) (no d sub-factorisations).

Singular correlations follow `gaussian_total_correlation`'s policy: every log-determinant and inverse
is taken of the shrunk correlation (1 - eps) C + eps I (eps = `shrinkage`, default 1e-4), which is
positive definite, so values and gradients stay finite for collapsed or duplicated units (the measures
then grow like log(1/eps)); its principal sub-blocks are the shrunk sub-correlations, so subset values
are consistent with the full one. `shrinkage=0.0` gives the raw values (C must be nonsingular).

Multiplets. `gaussian_multiplets` evaluates the four measures on many unit subsets of one correlation
matrix at once: the k x k sub-correlations are gathered on device and factorised in chunks of
`chunk_size` subsets (`jax.lax.map` with `batch_size`), so memory is O(chunk_size k^2) whatever the
number of subsets (all 4845 quadruplets of 20 units, all 91390 of 40).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from redundax.functionals import _checks
from redundax.functionals.fdiv import _check_joint
from redundax.functionals.gaussian import DEFAULT_SHRINKAGE
from redundax.functionals.moments import correlation

Array = jax.Array

_MAX_SUBSETS = 50_000_000


class HigherOrder(NamedTuple):
    """Total correlation, dual total correlation, O- and S-information (nats), same shapes."""

    tc: Array
    dtc: Array
    o: Array
    s: Array


def _check_shrinkage(shrinkage: float) -> None:
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"`shrinkage` must be in [0, 1]; got {shrinkage}.")


def _shrunk(corr: Array, shrinkage: float) -> Array:
    eye = jnp.eye(corr.shape[-1], dtype=corr.dtype)
    return (1.0 - shrinkage) * corr + shrinkage * eye


def _chol_logdet_and_precision(corr: Array) -> tuple[Array, Array]:
    """(log det C, P = C^{-1}) of positive definite `(..., d, d)` through one Cholesky factor."""
    chol = jnp.linalg.cholesky(corr)
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    eye = jnp.broadcast_to(jnp.eye(corr.shape[-1], dtype=corr.dtype), corr.shape)
    linv = jax.scipy.linalg.solve_triangular(chol, eye, lower=True)
    return logdet, jnp.einsum("...ki,...kj->...ij", linv, linv)


def _measures(logdet: Array, sum_log_pii: Array) -> HigherOrder:
    tc = -0.5 * logdet
    dtc = 0.5 * (logdet + sum_log_pii)
    return HigherOrder(tc=tc, dtc=dtc, o=tc - dtc, s=tc + dtc)


def _higher_order_pd(corr: Array) -> HigherOrder:
    logdet, prec = _chol_logdet_and_precision(corr)
    pii = jnp.diagonal(prec, axis1=-2, axis2=-1)
    return _measures(logdet, jnp.sum(jnp.log(pii), axis=-1))


def gaussian_higher_order_from_corr(corr, *, shrinkage: float = DEFAULT_SHRINKAGE) -> HigherOrder:
    """TC, DTC, O- and S-information of a Gaussian with correlation matrices `corr` `(..., d, d)`.

    Closed forms in the module docstring (Rosas et al. 2019, eqs. 4-7; Prop. 4 for TC). Values are in
    nats, shaped `(...)`; O > 0 is redundancy-dominated, O < 0 synergy-dominated.

    Args:
      corr: correlation matrices `(..., d, d)` (a covariance works too: every measure is invariant to
        unit scales, but shrinkage assumes a unit diagonal).
      shrinkage: eps of the shrunk correlation (1 - eps) C + eps I (module docstring).
    """
    _check_shrinkage(shrinkage)
    corr = _checks.check_square(corr, "corr")
    return _higher_order_pd(_shrunk(corr, shrinkage))


def gaussian_higher_order(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> HigherOrder:
    """TC, DTC, O- and S-information of samples `x` `(..., n, d)` under a Gaussian model (nats).

    The sample correlation (`correlation`) goes into `gaussian_higher_order_from_corr`.
    """
    _check_shrinkage(shrinkage)
    x = _checks.check_samples(x, "x")
    return gaussian_higher_order_from_corr(correlation(x), shrinkage=shrinkage)


def gaussian_dual_total_correlation(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> Array:
    """Gaussian dual total correlation 1/2 (log det C + sum_i log (C^{-1})_ii) of samples (nats)."""
    return gaussian_higher_order(x, shrinkage=shrinkage).dtc


def gaussian_o_information(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> Array:
    """Gaussian O-information TC - DTC of samples `(..., n, d)` (nats; > 0: redundancy-dominated)."""
    return gaussian_higher_order(x, shrinkage=shrinkage).o


def gaussian_s_information(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> Array:
    """Gaussian S-information TC + DTC = sum_i I(X_i; X_{-i}) of samples (nats)."""
    return gaussian_higher_order(x, shrinkage=shrinkage).s


def gaussian_unit_contributions_from_corr(
    corr, *, shrinkage: float = DEFAULT_SHRINKAGE
) -> HigherOrder:
    """Leave-one-out contributions M(X) - M(X_{-i}) of every unit, each field `(..., d)`.

    Rosas et al. (2019), eq. 13 (the "gradient" of the O-information): unit i raises the redundancy
    of the set when delta_i O > 0 and its synergy when delta_i O < 0. All d values come from one
    factorisation through the Schur complement (module docstring). For d = 1 every contribution is 0.
    """
    _check_shrinkage(shrinkage)
    corr = _checks.check_square(corr, "corr")
    d = corr.shape[-1]
    full = gaussian_higher_order_from_corr(corr, shrinkage=shrinkage)
    if d == 1:
        zero = jnp.zeros(corr.shape[:-1], corr.dtype)
        return HigherOrder(zero, zero, zero, zero)
    logdet, prec = _chol_logdet_and_precision(_shrunk(corr, shrinkage))
    pii = jnp.diagonal(prec, axis1=-2, axis2=-1)  # (..., d)
    logdet_minus = logdet[..., None] + jnp.log(pii)  # log det C_{-i}
    # diag of (C_{-i})^{-1}: P_jj - P_ji^2 / P_ii for j != i (row i of the array is unused).
    pjj_minus = pii[..., None, :] - prec * prec / pii[..., :, None]
    off = ~jnp.eye(d, dtype=bool)
    safe = jnp.where(off, pjj_minus, 1.0)
    sum_log_minus = jnp.sum(jnp.where(off, jnp.log(safe), 0.0), axis=-1)
    sub = _measures(logdet_minus, sum_log_minus)
    return HigherOrder(*(f[..., None] - s for f, s in zip(full, sub, strict=True)))


def gaussian_unit_contributions(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> HigherOrder:
    """`gaussian_unit_contributions_from_corr` of the sample correlation of `x` `(..., n, d)`."""
    _check_shrinkage(shrinkage)
    x = _checks.check_samples(x, "x")
    return gaussian_unit_contributions_from_corr(correlation(x), shrinkage=shrinkage)


def all_subsets(d: int, k: int) -> np.ndarray:
    """All `comb(d, k)` subsets of size k of range(d), lexicographic, as an int32 array `(m, k)`."""
    if not isinstance(d, int | np.integer) or d < 1:
        raise ValueError(f"`d` must be a positive number of units; got {d!r}.")
    if not isinstance(k, int | np.integer) or not 1 <= k <= d:
        raise ValueError(
            f"`k` must be a subset size in [1, d] = [1, {d}]; got {k!r}. A subset cannot hold more "
            "units than there are."
        )
    m = math.comb(d, k)
    if m > _MAX_SUBSETS:
        raise ValueError(
            f"comb({d}, {k}) = {m} subsets is more than {_MAX_SUBSETS}; pass an explicit `subsets` "
            "array (e.g. a random sample of subsets) instead."
        )
    flat = np.fromiter(itertools.chain.from_iterable(itertools.combinations(range(d), k)), np.int32)
    return flat.reshape(m, k)


def check_subsets(subsets, d: int) -> np.ndarray:
    """Validate an index array `(m, k)` of unit subsets of range(d) (concrete, host-side)."""
    arr = np.asarray(subsets)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"`subsets` must be an integer array shaped (num_subsets, k) with k >= 1; got shape "
            f"{arr.shape}."
        )
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`subsets` must hold integer unit indices; got dtype {arr.dtype}.")
    if arr.min() < 0 or arr.max() >= d:
        raise ValueError(
            f"`subsets` has unit indices out of range [0, {d}) (min {arr.min()}, max {arr.max()}); "
            f"the correlation matrix has {d} units."
        )
    srt = np.sort(arr, axis=1)
    rep = np.any(srt[:, 1:] == srt[:, :-1], axis=1)
    if rep.any():
        row = int(np.argmax(rep))
        raise ValueError(
            f"`subsets` row {row} ({arr[row].tolist()}) repeats a unit; each subset must list "
            "distinct units."
        )
    return arr.astype(np.int32)


def gaussian_multiplets(
    corr,
    k: int | None = None,
    *,
    subsets=None,
    shrinkage: float = DEFAULT_SHRINKAGE,
    chunk_size: int = 4096,
) -> HigherOrder:
    """TC, DTC, O- and S-information of many unit subsets of one Gaussian, batched on device.

    Args:
      corr: one correlation matrix `(d, d)` (e.g. `correlation(x)`).
      k: evaluate every subset of size k (`all_subsets(d, k)`, lexicographic order). Exclusive with
        `subsets`.
      subsets: an explicit integer array `(m, k)` of distinct unit indices per row.
      shrinkage: as in `gaussian_higher_order_from_corr` (applied to the full matrix; its sub-blocks
        are the shrunk sub-correlations).
      chunk_size: subsets factorised per step; peak memory O(chunk_size k^2).

    Returns:
      `HigherOrder` with fields `(m,)`, row r for subset r.

    Raises:
      ValueError: neither or both of `k` / `subsets`, `k` > d, indices out of range or repeated.
    """
    _check_shrinkage(shrinkage)
    corr = _checks.check_square(corr, "corr")
    if corr.ndim != 2:
        raise ValueError(f"`corr` must be one (d, d) matrix here; got shape {corr.shape}.")
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be >= 1; got {chunk_size}.")
    d = corr.shape[-1]
    if (k is None) == (subsets is None):
        raise ValueError("Pass exactly one of `k` (all subsets of that size) and `subsets`.")
    idx = all_subsets(d, k) if subsets is None else check_subsets(subsets, d)
    return _multiplets(_shrunk(corr, shrinkage), jnp.asarray(idx), min(chunk_size, len(idx)))


@functools.partial(jax.jit, static_argnums=2)
def _multiplets(corr: Array, idx: Array, chunk_size: int) -> HigherOrder:
    def one(sub_idx):
        return _higher_order_pd(corr[sub_idx[:, None], sub_idx[None, :]])

    return jax.lax.map(one, idx, batch_size=chunk_size)


# ----------------------------------------------------------------------------- discrete tables
def _entropy(p: Array) -> Array:
    return -jnp.sum(xlogy(p, p))


def _marginal(joint: Array, keep: tuple[int, ...]) -> Array:
    return jnp.sum(joint, axis=tuple(a for a in range(joint.ndim) if a not in keep))


def _discrete_pd(joint: Array) -> HigherOrder:
    d = joint.ndim
    h = _entropy(joint)
    if d == 1:
        zero = jnp.zeros((), joint.dtype)
        return HigherOrder(zero, zero, zero, zero)
    h_single = sum(_entropy(_marginal(joint, (i,))) for i in range(d))
    h_rest = sum(_entropy(_marginal(joint, tuple(a for a in range(d) if a != i))) for i in range(d))
    tc = h_single - h
    dtc = h_rest - (d - 1) * h
    return HigherOrder(tc=tc, dtc=dtc, o=tc - dtc, s=tc + dtc)


def discrete_higher_order(joint) -> HigherOrder:
    """Exact TC, DTC, O- and S-information (nats) of a discrete joint table, one axis per variable.

    Plug-in entropies of the table and its marginals (Rosas et al. 2019, eqs. 4-7). XOR of two fair
    bits gives O = -log 2 (synergy), three copies of one fair bit O = +log 2 (redundancy).
    """
    return _discrete_pd(_check_joint(joint))


def discrete_unit_contributions(joint) -> HigherOrder:
    """Leave-one-out contributions M(X) - M(X_{-i}) on a discrete table, each field `(d,)`."""
    joint = _check_joint(joint)
    d = joint.ndim
    full = _discrete_pd(joint)
    subs = [_discrete_pd(jnp.sum(joint, axis=i)) for i in range(d)]
    return HigherOrder(
        *(f - jnp.stack(s) for f, s in zip(full, zip(*subs, strict=True), strict=True))
    )


__all__ = [
    "HigherOrder",
    "all_subsets",
    "discrete_higher_order",
    "discrete_unit_contributions",
    "gaussian_dual_total_correlation",
    "gaussian_higher_order",
    "gaussian_higher_order_from_corr",
    "gaussian_multiplets",
    "gaussian_o_information",
    "gaussian_s_information",
    "gaussian_unit_contributions",
    "gaussian_unit_contributions_from_corr",
]
