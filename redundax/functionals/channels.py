"""Two-axis channel information: local (input capture, peer overlap) and target (task MI, MMI, Syn).

Reference: Safaai, Landau, Beron, Mazloumi & Sabatini, "Task Relevance Is Not Local Replaceability: A
Two-Axis View of Channel Information". Equation numbers below are the paper's.

Conventions. Samples `y` are `(n, channels)` (n samples on axis -2); the target `t` is `(n,)`.
Convolutional activations `(b, h, w, c)` enter the local axis flattened to `(b*h*w, c)` (spatial
positions are samples) and the target axis global-average-pooled to `(b, c)`. Everything is in nats.
Each sample-based function has a `*_from_corr` twin taking correlation statistics, so that the same
formulas run on moments streamed over a calibration set (`redundax.functionals.Moments`).

Correlation clip. Every Gaussian MI here is -1/2 log(1 - r²) for a squared correlation or regression
coefficient r², evaluated by `redundax.functionals.gaussian_mi_from_r2`, which clips r² to
[0, 1 - 1e-6]. A duplicated channel (|rho| = 1) therefore contributes -1/2 log(1e-6) = 6.91 nats: large
but finite, with finite gradients (the paper likewise clips Pearson correlations away from +-1, App. C).
The same floor, 1e-6, bounds 1 - rho² in the two-regressor R² of eq. 9 and is the ridge of the peer
explanation E_i(S) (App. A). Zero-variance channels have zero correlation with everything (see
`redundax.functionals.moments`), hence zero MI.

`greedy_modularity` is a host-side (NumPy) graph algorithm; everything else is jit/vmap-safe jnp.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from redundax.functionals import _checks
from redundax.functionals.gaussian import gaussian_mi_from_r2
from redundax.functionals.moments import correlation

R2_FLOOR = 1e-6  # 1 - r² >= R2_FLOOR everywhere (module docstring).
RIDGE = 1e-6  # ridge of the peer explanation E_i(S) (App. A).
_HI = jax.lax.Precision.HIGHEST


def _mi(r2: jax.Array) -> jax.Array:
    return gaussian_mi_from_r2(r2, max_r2=1.0 - R2_FLOOR)


def _check_target(y: jax.Array, t, name: str = "t") -> jax.Array:
    t = _checks.as_float(t, name)
    if t.ndim != 1 or t.shape[0] != y.shape[0]:
        raise ValueError(
            f"`{name}` must be a vector with one target value per sample, shape ({y.shape[0]},) to "
            f"match `y` of shape {y.shape}; got shape {t.shape}."
        )
    _checks.check_finite(t, name)
    return t


def _check_y(y, name: str = "y", min_units: int = 1) -> jax.Array:
    y = _checks.check_samples(y, name)
    if y.ndim != 2:
        raise ValueError(
            f"`{name}` must be (n, channels): one row per sample; got shape {y.shape}. Flatten "
            "conv activations (b, h, w, c) to (b*h*w, c), or pool them to (b, c)."
        )
    if y.shape[1] < min_units:
        raise ValueError(f"`{name}` needs at least {min_units} channels; got shape {y.shape}.")
    return y


def _check_m(m: int, n_channels: int) -> int:
    if not isinstance(m, int | np.integer) or m < 1:
        raise ValueError(f"`m` (number of partners) must be a positive int; got {m!r}.")
    if n_channels < 2:
        raise ValueError(f"pairwise target metrics need at least 2 channels; got {n_channels}.")
    return int(min(m, n_channels - 1))


# ----------------------------------------------------------------------------------------------
# Local axis


def signal_power(w, cov_x) -> jax.Array:
    """s_i = w_i^T Sigma_X w_i (eq. 1): projected input power of each channel.

    Args:
      w: `(channels, k)` filters, one flattened filter per output channel (k = kh*kw*c_in, in the
        order of the unfolded patches).
      cov_x: `(k, k)` input-patch covariance, or `(channels, k, k)` one per channel (depthwise
        convolutions, whose channel i sees only its own input channel's patches).
    """
    w = _checks.as_float(w, "w")
    cov_x = _checks.as_float(cov_x, "cov_x")
    if w.ndim != 2:
        raise ValueError(f"`w` must be (channels, k); got shape {w.shape}.")
    k = w.shape[1]
    if cov_x.shape == (k, k):
        return jnp.einsum("ck,kl,cl->c", w, cov_x, w, precision=_HI)
    if cov_x.shape == (w.shape[0], k, k):
        return jnp.einsum("ck,ckl,cl->c", w, cov_x, w, precision=_HI)
    raise ValueError(
        f"`cov_x` must be (k, k) = ({k}, {k}) or (channels, k, k) to match `w` of shape {w.shape}; "
        f"got {cov_x.shape}."
    )


def input_capture_from_power(s, noise_var=None) -> jax.Array:
    """I_X(i) = 1/2 log(1 + s_i / sigma0²) (eq. 1); sigma0² = median of the positive s_i by default."""
    s = jnp.maximum(_checks.as_float(s, "s"), 0.0)
    if noise_var is None:
        pos = s > 0  # median over the positive signal powers only (App. C)
        noise_var = jnp.nanmedian(jnp.where(pos, s, jnp.nan))
        noise_var = jnp.where(jnp.any(pos), noise_var, 1.0)
    else:
        if _checks.is_concrete(noise_var) and not float(noise_var) > 0:
            raise ValueError(f"`noise_var` (sigma0²) must be positive; got {noise_var}.")
    return 0.5 * jnp.log1p(s / noise_var)


def input_capture(w, cov_x, noise_var=None) -> jax.Array:
    """Input-capture proxy I_X(i) = 1/2 log(1 + w_i^T Sigma_X w_i / sigma0²) (eq. 1), in nats.

    Args:
      w: `(channels, k)` flattened filters.
      cov_x: `(k, k)` covariance of the unfolded input patches (or `(channels, k, k)`).
      noise_var: sigma0²; None uses the per-layer median of the positive signal powers s_i (the
        paper's main setting, App. C), so the median channel has I_X = 1/2 log 2.

    Returns:
      `(channels,)` I_X.
    """
    return input_capture_from_power(signal_power(w, cov_x), noise_var)


def redundancy_graph_from_corr(corr) -> jax.Array:
    """R_ij = -1/2 log(1 - rho_ij²) (eq. 7) with zero diagonal: the local redundancy graph (App. A)."""
    corr = _checks.check_square(corr, "corr")
    g = _mi(corr * corr)
    return g * (1 - jnp.eye(corr.shape[-1], dtype=g.dtype))


def peer_overlap_from_corr(corr) -> jax.Array:
    """R_X(i) = 1/(N-1) sum_{j != i} -1/2 log(1 - rho_ij²) (eq. 2) from a `(N, N)` correlation."""
    corr = _checks.check_square(corr, "corr")
    n = corr.shape[-1]
    if n < 2:
        raise ValueError(f"peer overlap needs at least 2 channels; got corr of shape {corr.shape}.")
    return jnp.sum(redundancy_graph_from_corr(corr), axis=-1) / (n - 1)


def peer_overlap(y) -> jax.Array:
    """Within-layer shared information R_X(i) (eq. 2) from samples `y` `(n, channels)`, in nats."""
    y = _check_y(y, "y", min_units=2)
    return peer_overlap_from_corr(correlation(y))


# ----------------------------------------------------------------------------------------------
# Target axis


def task_correlation(y, t) -> jax.Array:
    """rho_{T,i}: Pearson correlation of each channel of `y` `(n, N)` with the target `t` `(n,)`."""
    y = _check_y(y)
    t = _check_target(y, t)
    c = correlation(jnp.concatenate([y, t[:, None]], axis=1))
    return c[:-1, -1]


def task_mi_from_corr(r_t) -> jax.Array:
    """I(T; Y_i) = -1/2 log(1 - rho_{T,i}²) (eq. 3) from the channel-target correlations."""
    r_t = _checks.as_float(r_t, "r_t")
    return _mi(r_t * r_t)


def task_mutual_information(y, t) -> jax.Array:
    """Task MI I(T; Y_i) (eq. 3): y `(n, channels)` (GAP-pooled activations), t `(n,)`; nats."""
    return task_mi_from_corr(task_correlation(y, t))


def top_partners(task_mi, m: int) -> jax.Array:
    """Top-m(i): `(N, m)` indices of the m channels j != i with the largest singleton task MI."""
    task_mi = _checks.as_float(task_mi, "task_mi")
    n = task_mi.shape[-1]
    m = _check_m(m, n)
    scores = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, task_mi[None, :])
    return jax.lax.top_k(scores, m)[1]


def mmi_redundancy_from_task_mi(task_mi, m: int = 10) -> jax.Array:
    """Red_T(i) = 1/m_i sum_{j in Top-m(i)} min{I(T;Y_i), I(T;Y_j)} (eq. 4, Lemma 1)."""
    task_mi = _checks.as_float(task_mi, "task_mi")
    idx = top_partners(task_mi, m)
    return jnp.mean(jnp.minimum(task_mi[:, None], task_mi[idx]), axis=-1)


def mmi_redundancy(y, t, m: int = 10) -> jax.Array:
    """MMI target redundancy Red_T (eq. 4) with m_i = min(m, N - 1) partners; `(channels,)` nats.

    Under MMI, Red_T(T; Y_i, Y_j) = min{I(T;Y_i), I(T;Y_j)} (Lemma 1, eq. 6): it depends on the
    singleton task MIs only, never on the channel-channel correlation.
    """
    y = _check_y(y, "y", min_units=2)
    return mmi_redundancy_from_task_mi(task_mutual_information(y, t), m)


def pair_r2_from_corr(corr, r_t) -> jax.Array:
    """`(N, N)` R² of regressing T on (Y_i, Y_j) (eq. 9): (a² + b² - 2 a b rho) / (1 - rho²).

    a = rho_{T,i}, b = rho_{T,j}, rho = rho_ij; 1 - rho² is floored at 1e-6 (module docstring). The
    diagonal holds the singleton R² = a².
    """
    corr = _checks.check_square(corr, "corr")
    r_t = _checks.as_float(r_t, "r_t")
    a, b = r_t[:, None], r_t[None, :]
    rho = corr
    den = jnp.maximum(1 - rho * rho, R2_FLOOR)
    r2 = (a * a + b * b - 2 * a * b * rho) / den
    eye = jnp.eye(corr.shape[-1], dtype=bool)
    r2 = jnp.where(eye, a * a * jnp.ones_like(r2), r2)
    return jnp.clip(r2, 0.0, 1.0)


def synergy_graph_from_corr(corr, r_t) -> jax.Array:
    """S_ij = I(T; [Y_i, Y_j]) - max{I(T;Y_i), I(T;Y_j)} (eq. 5 summand, App. A), zero diagonal."""
    joint = _mi(pair_r2_from_corr(corr, r_t))
    single = task_mi_from_corr(r_t)
    s = joint - jnp.maximum(single[:, None], single[None, :])
    return s * (1 - jnp.eye(s.shape[-1], dtype=s.dtype))


def pairwise_synergy_from_corr(corr, r_t, m: int = 10) -> jax.Array:
    """Syn_i = 1/m_i sum_{j in Top-m(i)} Syn(T; Y_i, Y_j) (eq. 5) from pooled correlations."""
    s = synergy_graph_from_corr(corr, r_t)
    idx = top_partners(task_mi_from_corr(r_t), m)
    return jnp.mean(jnp.take_along_axis(s, idx, axis=-1), axis=-1)


def pairwise_synergy(y, t, m: int = 10) -> jax.Array:
    """Target-excess proxy Syn_i (eq. 5), partners Top-m(i) by task MI, m_i = min(m, N-1); nats.

    The joint term I(T; [Y_i, Y_j]) is the Gaussian regression-R² MI of eq. 9.
    """
    y = _check_y(y, "y", min_units=2)
    t = _check_target(y, t)
    c = correlation(jnp.concatenate([y, t[:, None]], axis=1))
    return pairwise_synergy_from_corr(c[:-1, :-1], c[:-1, -1], m)


def subset_r2(corr, r_t, idx) -> jax.Array:
    """R² of T on the channels `idx` (`(..., k)` int): r^T (C_SS + 1e-6 I)^{-1} r, clipped to [0,1]."""
    idx = jnp.asarray(idx)
    c = corr[idx[..., :, None], idx[..., None, :]]
    r = r_t[idx]
    k = idx.shape[-1]
    sol = jnp.linalg.solve(c + RIDGE * jnp.eye(k, dtype=c.dtype), r[..., None])[..., 0]
    return jnp.clip(jnp.sum(r * sol, axis=-1), 0.0, 1.0)


class TripletExcess(NamedTuple):
    """Triplet target-excess summary (App. A, K.3)."""

    ratio: jax.Array  # mean(max(S3, 0)) / mean(S2)
    s3: jax.Array  # mean clipped triplet excess
    s2: jax.Array  # mean pair excess over the same triplets
    num_triplets: int


def triplet_excess_from_corr(
    corr, r_t, *, top: int = 24, max_triplets: int = 1500, seed: int = 0
) -> TripletExcess:
    """S3/S2 on the `top` most task-relevant channels (App. A, K.3).

    S3(i,j,k) = I(T;[Y_i,Y_j,Y_k]) - max_pair I(T;[Y_a,Y_b]);
    S2(i,j,k) = max_pair I(T;[Y_a,Y_b]) - max{I(T;Y_i), I(T;Y_j), I(T;Y_k)}.
    All triplets of the top channels are used when there are at most `max_triplets`, else a
    uniform sample of `max_triplets` of them (NumPy generator seeded by `seed`).
    """
    n = corr.shape[-1]
    if n < 3:
        raise ValueError(f"triplet excess needs at least 3 channels; got {n}.")
    if top < 3 or max_triplets < 1:
        raise ValueError(f"`top` must be >= 3 and `max_triplets` >= 1; got {top}, {max_triplets}.")
    r_t = jnp.asarray(r_t)
    k = min(top, n)
    order = np.argsort(-np.asarray(task_mi_from_corr(r_t)), kind="stable")[:k]
    combos = np.array(
        [(a, b, c) for a in range(k) for b in range(a + 1, k) for c in range(b + 1, k)], np.int32
    )
    if len(combos) > max_triplets:
        combos = combos[np.random.default_rng(seed).choice(len(combos), max_triplets, False)]
    # gather the top-k block first: one compiled program per (k, triplet count), whatever n is
    corr_k = jnp.asarray(corr)[order[:, None], order[None, :]]
    s3, s2 = _triplet_means(corr_k, r_t[order], jnp.asarray(combos))
    return TripletExcess(s3 / jnp.maximum(s2, 1e-12), s3, s2, len(combos))


@jax.jit
def _triplet_means(corr, r_t, trip):
    i3 = _mi(subset_r2(corr, r_t, trip))
    pairs = jnp.stack([trip[:, [0, 1]], trip[:, [0, 2]], trip[:, [1, 2]]], axis=1)
    i2 = jnp.max(_mi(subset_r2(corr, r_t, pairs)), axis=1)
    i1 = jnp.max(task_mi_from_corr(r_t)[trip], axis=1)
    return jnp.mean(jnp.maximum(i3 - i2, 0.0)), jnp.mean(jnp.maximum(i2 - i1, 0.0))


# ----------------------------------------------------------------------------------------------
# Peer explanation and replaceability hulls (App. A, K.2)


def peer_explanation(corr, i: int, subset) -> jax.Array:
    """E_i(S) = rho_iS^T (Sigma_SS + 1e-6 I)^{-1} rho_iS, clipped to [0, 1] (App. A)."""
    corr = _checks.check_square(corr, "corr")
    subset = jnp.asarray(subset, dtype=jnp.int32)
    if subset.size == 0:
        return jnp.zeros((), corr.dtype)
    return subset_r2(corr, corr[i], subset)


def full_peer_explanation(corr) -> jax.Array:
    """E_i^full = E_i(all peers) for every channel: 1 + lambda - 1 / [(C + lambda I)^{-1}]_ii.

    The Schur-complement identity gives the regression of channel i on all N - 1 peers with ridge
    lambda = 1e-6 from one matrix inverse.
    """
    corr = _checks.check_square(corr, "corr")
    n = corr.shape[-1]
    a = corr + RIDGE * jnp.eye(n, dtype=corr.dtype)
    inv_diag = jnp.diagonal(jnp.linalg.inv(a))
    return jnp.clip(1 + RIDGE - 1 / inv_diag, 0.0, 1.0)


class Hulls(NamedTuple):
    """Greedy replaceability hulls H_i (App. A, K.2), one row per channel."""

    size: jax.Array  # (N,) int |H_i|; == cap when the cap is reached without meeting the target
    e_full: jax.Array  # (N,) E_i^full (over the candidate pool)
    e_hull: jax.Array  # (N,) E_i(H_i)
    members: jax.Array  # (N, cap) int peer indices in selection order; -1 past |H_i|


def _hull_one(c: jax.Array, eps: float, cap: int):
    """Greedy forward selection for channel 0 of a `(P+1, P+1)` correlation (0 = the target)."""
    p1 = c.shape[0]
    eye = jnp.eye(p1, dtype=c.dtype)
    a = c + RIDGE * eye * (jnp.arange(p1) > 0)[:, None]
    inv_diag = jnp.diagonal(jnp.linalg.inv(a))[0]
    # No ridge on the target's own diagonal, so 1 / [A^{-1}]_00 = 1 - E_full (Schur complement).
    e_full = jnp.clip(1 - 1 / inv_diag, 0.0, 1.0)
    thresh = (1 - eps) * e_full

    def step(carry, _):
        res, e, chosen = carry
        diag = jnp.diagonal(res)
        ok = (~chosen) & (jnp.arange(p1) > 0) & (diag > 1e-12)
        gain = jnp.where(ok, res[0] ** 2 / jnp.where(ok, diag, 1.0), -1.0)
        j = jnp.argmax(gain)
        valid = gain[j] > 0
        col = res[:, j] / jnp.where(valid, res[j, j], 1.0)
        res = jnp.where(valid, res - col[:, None] * res[j][None, :], res)
        e = e + jnp.where(valid, gain[j], 0.0)
        chosen = chosen.at[j].set(chosen[j] | valid)
        return (res, e, chosen), (jnp.where(valid, j, -1), jnp.clip(e, 0.0, 1.0))

    init = (a, jnp.zeros((), c.dtype), jnp.zeros(p1, bool))
    _, (picked, e_path) = jax.lax.scan(step, init, None, length=cap)
    reached = e_path >= thresh
    size = jnp.where(thresh <= 0, 0, jnp.where(jnp.any(reached), jnp.argmax(reached) + 1, cap))
    e_hull = jnp.where(size > 0, e_path[jnp.maximum(size - 1, 0)], 0.0)
    members = jnp.where(jnp.arange(cap) < size, picked, -1)
    return size, e_full, e_hull, members


def greedy_hulls(
    corr, *, eps: float = 0.05, cap: int = 10, pool: int | None = None, batch_size: int = 64
) -> Hulls:
    """Greedy replaceability hulls for every channel of a layer (App. A, K.2).

    H_i is the smallest greedily selected peer set (at most `cap`) whose explanation E_i(H_i)
    reaches (1 - eps) E_i^full. Each greedy step adds the peer with the largest gain in E_i, exact
    via the partial-covariance update E_i(S + j) - E_i(S) = c_ij|S² / c_jj|S.

    Args:
      corr: `(N, N)` same-layer channel correlation (spatial positions as samples).
      eps: relative tolerance (0.05 in the paper).
      cap: maximal hull size (10 in the paper).
      pool: restrict candidates (and E_i^full) to the `pool` most |rho|-correlated peers; None uses
        all N - 1 peers.
      batch_size: channels processed at once (bounds memory at batch * (pool+1)² floats).
    """
    corr = _checks.check_square(corr, "corr")
    n = corr.shape[-1]
    if n < 2:
        raise ValueError(f"hulls need at least 2 channels; got corr of shape {corr.shape}.")
    if not 0 <= eps < 1:
        raise ValueError(f"`eps` must be in [0, 1); got {eps}.")
    if cap < 1:
        raise ValueError(f"`cap` must be >= 1; got {cap}.")
    p = n - 1 if pool is None else int(min(pool, n - 1))
    if p < 1:
        raise ValueError(f"`pool` must be >= 1 or None; got {pool}.")
    cap = min(cap, p)
    score = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, jnp.abs(corr))
    peers = jax.lax.top_k(score, p)[1]  # (N, p), most correlated first
    idx = jnp.concatenate([jnp.arange(n)[:, None], peers], axis=1)

    def one(ix):
        sub = corr[ix[:, None], ix[None, :]]
        size, e_full, e_hull, members = _hull_one(sub, eps, cap)
        return size, e_full, e_hull, jnp.where(members >= 0, ix[jnp.maximum(members, 0)], -1)

    size, e_full, e_hull, members = jax.lax.map(one, idx, batch_size=min(batch_size, n))
    return Hulls(size.astype(jnp.int32), e_full, e_hull, members.astype(jnp.int32))


def compact_hull_score(e_full, hull_size) -> jax.Array:
    """Compact peer support E_i^full / max(1, |H_i|) (App. A, Fig. 5); higher = safer to remove."""
    return jnp.asarray(e_full) / jnp.maximum(1, jnp.asarray(hull_size)).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# Graph modularity (App. A, K.1)


def top_edge_graph(weights, top_fraction: float = 0.1) -> np.ndarray:
    """Keep the top `top_fraction` of positive off-diagonal edges of a symmetric weight matrix."""
    w = np.asarray(weights, np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"`weights` must be a square matrix; got shape {w.shape}.")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"`top_fraction` must be in (0, 1]; got {top_fraction}.")
    w = 0.5 * (w + w.T)
    iu = np.triu_indices(w.shape[0], 1)
    vals = w[iu]
    pos = vals > 0
    out = np.zeros_like(w)
    if not pos.any():
        return out
    keep = max(1, math.ceil(top_fraction * pos.sum()))
    order = np.argsort(-np.where(pos, vals, -np.inf), kind="stable")[:keep]
    out[iu[0][order], iu[1][order]] = vals[order]
    return out + out.T


def modularity(weights, labels) -> float:
    """Newman modularity Q = 1/2m sum_ij [A_ij - k_i k_j / 2m] delta(c_i, c_j) of a weighted graph."""
    a = np.asarray(weights, np.float64)
    labels = np.asarray(labels)
    two_m = a.sum()
    if two_m <= 0:
        return 0.0
    k = a.sum(axis=1)
    same = labels[:, None] == labels[None, :]
    return float(np.sum((a - np.outer(k, k) / two_m) * same) / two_m)


def greedy_modularity(weights) -> tuple[float, np.ndarray]:
    """Greedy agglomerative Newman modularity (Clauset-Newman-Moore merging), host-side NumPy.

    Starts from singletons and repeatedly merges the pair of connected communities with the largest
    modularity gain dQ = 2 (e_ab - a_a a_b) while it is positive [Newman, 2006].

    Returns:
      `(Q, labels)`: the modularity of the final partition and `(N,)` community labels 0..K-1.
    """
    a = np.asarray(weights, np.float64)
    n = a.shape[0]
    two_m = a.sum()
    labels = np.arange(n)
    if two_m <= 0:
        return 0.0, labels
    e = a / two_m  # e[i, j]: fraction of edge ends between communities i and j (symmetric)
    av = e.sum(axis=1)
    alive = np.ones(n, bool)
    while True:
        dq = 2 * (e - np.outer(av, av))
        connected = (e > 0) & alive[:, None] & alive[None, :]
        np.fill_diagonal(connected, False)
        dq = np.where(connected, dq, -np.inf)
        flat = int(np.argmax(dq))
        i, j = divmod(flat, n)
        if not np.isfinite(dq[i, j]) or dq[i, j] <= 1e-15:
            break
        e[i, :] += e[j, :]
        e[:, i] += e[:, j]
        e[j, :] = 0
        e[:, j] = 0
        av[i] += av[j]
        av[j] = 0
        alive[j] = False
        labels[labels == j] = i
    _, labels = np.unique(labels, return_inverse=True)
    return modularity(a, labels), labels


def graph_modularity(weights, top_fraction: float = 0.1) -> float:
    """Greedy Newman modularity of the top-`top_fraction` positive edges (App. A: R/S graphs)."""
    return greedy_modularity(top_edge_graph(weights, top_fraction))[0]


# ----------------------------------------------------------------------------------------------
# Cross-layer propagation (App. L)


def weight_routed_metric(kernel, source_metric) -> jax.Array:
    """Eq. 13: m_bar(j) = sum_i ||W_ji||_F m(i) / sum_i ||W_ji||_F for each destination channel j.

    Args:
      kernel: destination conv kernel `(kh, kw, c_in, c_out)` (Flax layout) or dense `(c_in, c_out)`;
        c_in are the source layer's channels.
      source_metric: `(c_in,)` metric of the source channels.

    Returns:
      `(c_out,)` weight-routed source summary (0 for a destination with an all-zero kernel).
    """
    kernel = _checks.as_float(kernel, "kernel")
    source_metric = _checks.as_float(source_metric, "source_metric")
    if kernel.ndim < 2:
        raise ValueError(f"`kernel` must be (..., c_in, c_out); got shape {kernel.shape}.")
    if kernel.shape[-2] != source_metric.shape[-1]:
        raise ValueError(
            f"`kernel` has {kernel.shape[-2]} input channels but `source_metric` has "
            f"{source_metric.shape[-1]} entries; they must match (depthwise kernels are "
            "channel-aligned and need no routing)."
        )
    norms = jnp.sqrt(jnp.sum(kernel * kernel, axis=tuple(range(kernel.ndim - 2))))  # (c_in, c_out)
    tot = jnp.sum(norms, axis=0)
    return jnp.einsum("io,i->o", norms, source_metric, precision=_HI) / jnp.where(tot > 0, tot, 1)


__all__ = [
    "R2_FLOOR",
    "RIDGE",
    "Hulls",
    "TripletExcess",
    "compact_hull_score",
    "full_peer_explanation",
    "graph_modularity",
    "greedy_hulls",
    "greedy_modularity",
    "input_capture",
    "input_capture_from_power",
    "mmi_redundancy",
    "mmi_redundancy_from_task_mi",
    "modularity",
    "pair_r2_from_corr",
    "pairwise_synergy",
    "pairwise_synergy_from_corr",
    "peer_explanation",
    "peer_overlap",
    "peer_overlap_from_corr",
    "redundancy_graph_from_corr",
    "signal_power",
    "subset_r2",
    "synergy_graph_from_corr",
    "task_correlation",
    "task_mi_from_corr",
    "task_mutual_information",
    "top_partners",
    "triplet_excess_from_corr",
    "weight_routed_metric",
]
