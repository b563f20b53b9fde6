"""Layer entropy rate and the redundancy score of transformer layers.

Reference: Liang, "From Entropy Rate to Redundancy: Information Dynamics in Large Language Models"
(2025). Hidden representations form a space-time Markov chain (eqs. 1-4); the entropy rate of layer
l+1 at epoch t+1 is H(X_{l+1}^{t+1} | X_l^{t+1}, X_{l+1}^t). This module implements

- `layer_redundancy_scores` / `RedundancyAccumulator`: the redundancy score (eq. 25)

      R_{l+1} = 1 / (2 M (B - 1)) * sum_{m=1}^M sum_{i=1}^{B-1} cos^2(dz_{l+1,i}^(m), dz_{l,i}^(m)),
      dz_{l,i} = z_{l,i+1} - z_{l,i}   (differences of consecutive samples of a batch, eq. 21),

  for hidden states `(L+1, B, d)` (index 0 = the embedding output, index l = the output of layer l),
  returned for the layers l = 1..L: entry l-1 scores layer l from its input `hidden[l-1]` and its
  output `hidden[l]`. Higher = more redundant = more prunable (Sec. 4.2).
- `cosine_entropy_rates`: the Theorem 2 entropy-rate estimate (eqs. 20, 24)
  H_{l+1} ~= d_{l+1}/2 ln(2 pi e sigma^2) - R_{l+1}, constant term included.
- `first_order_conditional_entropy` / `first_order_entropy_rate`: the Theorem 1 first-order
  linear-Gaussian estimator (eqs. 15-19) from Jacobians (`jax.jacfwd`, i.e. one `jax.jvp` per input
  direction), with a small ridge, together with the exact Gaussian conditional entropy of the same
  linearisation (eq. 36), of which eq. 15 is the first-order expansion (eq. 38).
- `spacetime_redundancy_scores`: the space-time form, layer l+1 at epoch t+1 given layer l at t+1 and
  layer l+1 at epoch t, from the hidden states of two checkpoints on the same ordered batch.

Zero differences. A repeated sample (z_{i+1} = z_i) gives dz = 0 and an undefined cosine. Eq. 54
writes the score with a ridge in the denominator, <a, b>^2 / (|a|^2 |b|^2 + eps), whose eps -> 0+ limit
is 0 whenever a or b is zero. We use that limit: a pair whose difference vanishes at either layer
contributes cos^2 = 0 and still counts in the M (B - 1) normaliser of eq. 25. "Vanishes" is relative,
so that the score stays scale invariant: |dz_i| <= zero_tol * rms(|z_i|, |z_{i+1}|) with `zero_tol`
= 1e-6 (about 8 float32 ulps: round-off of identical inputs computed at different batch positions).
Shifting a layer's states by more than ~1e5 times their spread therefore turns real differences into
"zero" ones; `zero_tol=0` keeps only exact zeros. Values and gradients are finite everywhere.

Token-level hidden states `(L+1, B, T, d)` (with an optional `(B, T)` attention mask) are pooled first.
`pooling="mean"` (default) averages the unmasked tokens of each sequence (the sentence embedding of
mean-pooling encoders), so samples i are sequences as in the paper. `pooling="first"` takes token 0
(the [CLS] / <s> state that classification heads read). `pooling="tokens"` treats every token as a
sample in row-major (sequence, position) order; a pair (k, k+1) counts only when both tokens are
unmasked, and the normaliser is the number of counted pairs instead of B - 1.

Notes on the derivation. (1) Eqs. 18-19 as printed take the Jacobian of v = (X_l^{t+1}, X_{l+1}^t) to
be [J_l; J_{l+1}], whose second block is the Jacobian of u itself; then u is a linear function of v,
Sigma_{u|v} = 0 and A = I. `covariance_blocks` documents this; `first_order_entropy_rate` takes the
Jacobians of u and v as the user's map defines them. (2) With the rank-one blocks of eqs. 47-49 the
trace in eq. 52 evaluates to |dz_{l+1}|^6 |dz_l|^2 / ((|dz_{l+1}|^2 + eps)^2 (|dz_l|^2 + eps)), not
to the squared cosine of eq. 54, so eq. 25 is a score motivated by Theorem 1 rather than derived from
it. We implement eq. 25 exactly as stated, and Theorem 1 separately.

Batches of unequal size. The accumulator sums cos^2 over pairs and counts pairs; R = sum / (2 * pairs).
For M batches of equal size B this is exactly eq. 25 (pairs = M (B - 1)); otherwise it weights each
pair equally.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from redundax.functionals import _checks

DEFAULT_ZERO_TOL = 1e-6
DEFAULT_PARALLEL_TOL = 1e-4
DEFAULT_RIDGE = 1e-6
POOLINGS = ("mean", "first", "tokens")
COMBINES = ("projection", "sum")
_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------------------------------
# Building blocks: pooling, differences, squared cosines.


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.einsum("...d,...d->...", a, b, precision=_HIGHEST)


def _check_hidden(hidden, name: str, mask, pooling: str) -> tuple[jax.Array, jax.Array | None]:
    hidden = _checks.as_float(hidden, name)
    if hidden.ndim not in (3, 4):
        raise ValueError(
            f"`{name}` must have shape (L+1, B, d) or token-level (L+1, B, T, d): index 0 the "
            f"embedding output, index l the output of layer l; got shape {hidden.shape}."
        )
    if hidden.shape[0] < 2:
        raise ValueError(
            f"`{name}` has {hidden.shape[0]} hidden state(s) on axis 0 (shape {hidden.shape}); need "
            "the input of the first layer and at least one layer output (L+1 >= 2)."
        )
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; got {pooling!r}.")
    if mask is not None:
        if hidden.ndim != 4:
            raise ValueError(
                f"`mask` is only used with token-level `{name}` (L+1, B, T, d); got `{name}` of shape "
                f"{hidden.shape}. Drop `mask` for pooled hidden states."
            )
        mask = jnp.asarray(mask)
        if mask.shape != hidden.shape[1:3]:
            raise ValueError(
                f"`mask` must have shape (B, T) = {hidden.shape[1:3]} to match `{name}` "
                f"{hidden.shape}; got {mask.shape}."
            )
        mask = mask.astype(hidden.dtype)
    _checks.check_finite(hidden, name)
    return hidden, mask


def pool_tokens(hidden: jax.Array, mask: jax.Array | None = None, pooling: str = "mean"):
    """Pool token-level hidden states `(L+1, B, T, d)` into samples for eq. 25.

    Returns:
      `(samples, pair_weights)`: samples `(L+1, n, d)` and `(n - 1,)` weights of the consecutive pairs
      (all ones except for `pooling="tokens"` with a mask).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; got {pooling!r}.")
    if hidden.ndim == 3:
        return hidden, jnp.ones((hidden.shape[1] - 1,), hidden.dtype)
    _, b, t, d = hidden.shape
    m = jnp.ones((b, t), hidden.dtype) if mask is None else mask.astype(hidden.dtype)
    if pooling == "mean":
        count = jnp.maximum(jnp.sum(m, axis=1), 1.0)
        pooled = jnp.einsum("lbtd,bt->lbd", hidden, m, precision=_HIGHEST) / count[None, :, None]
        return pooled, jnp.ones((b - 1,), hidden.dtype)
    if pooling == "first":
        return hidden[:, :, 0, :], jnp.ones((b - 1,), hidden.dtype)
    flat = hidden.reshape(hidden.shape[0], b * t, d)
    mf = m.reshape(b * t)
    return flat, mf[1:] * mf[:-1]


def finite_differences(z: jax.Array, zero_tol: float = DEFAULT_ZERO_TOL):
    """Consecutive-sample differences dz_i = z_{i+1} - z_i along axis -2 (eq. 21).

    Returns:
      `(dz, nonzero)`: `dz` shaped `(..., n-1, d)` and a boolean `(..., n-1)` that is False where the
      difference vanishes relative to the samples (module docstring, "Zero differences").
    """
    dz = z[..., 1:, :] - z[..., :-1, :]
    scale2 = 0.5 * (_dot(z[..., 1:, :], z[..., 1:, :]) + _dot(z[..., :-1, :], z[..., :-1, :]))
    nonzero = _dot(dz, dz) > (zero_tol * zero_tol) * scale2
    return dz, nonzero


def _safe_unit(a: jax.Array, ok: jax.Array) -> jax.Array:
    """a / |a| where `ok`, 0 elsewhere; finite value and gradient."""
    sq = _dot(a, a)
    inv = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, sq, 1.0)), 0.0)
    return a * inv[..., None]


def squared_cosine(a, b, *, zero_tol: float = 0.0) -> jax.Array:
    """cos^2(a, b) = <a, b>^2 / (|a|^2 |b|^2) over axis -1 (eqs. 54-55); 0 if a or b is zero.

    `zero_tol` > 0 also maps vectors with |a| <= zero_tol to 0 (absolute); the redundancy scores use the
    relative rule of `finite_differences` instead.
    """
    a = _checks.as_float(a, "a")
    b = _checks.as_float(b, "b")
    ok_a = _dot(a, a) > zero_tol * zero_tol
    ok_b = _dot(b, b) > zero_tol * zero_tol
    c = _dot(_safe_unit(a, ok_a), _safe_unit(b, ok_b))
    return jnp.clip(c * c, 0.0, 1.0)


def _pair_cos2(hidden: jax.Array, zero_tol: float) -> jax.Array:
    """cos^2(dz_{l,i}, dz_{l-1,i}) for l = 1..L: `(L+1, n, d)` -> `(L, n-1)`."""
    dz, ok = finite_differences(hidden, zero_tol)
    unit = _safe_unit(dz, ok)
    c = _dot(unit[1:], unit[:-1])
    return jnp.clip(c * c, 0.0, 1.0)


def _projection_r2(u, a, b, ok_u, ok_a, ok_b, parallel_tol: float) -> jax.Array:
    """|P_{span(a, b)} u|^2 / |u|^2 by Gram-Schmidt; zero vectors (not ok) span nothing."""
    eu = _safe_unit(u, ok_u)
    ea = _safe_unit(a, ok_a)
    b_perp = b - _dot(b, ea)[..., None] * ea
    ok_perp = ok_b & (_dot(b_perp, b_perp) > (parallel_tol * parallel_tol) * _dot(b, b))
    eb = _safe_unit(b_perp, ok_perp)
    ca, cb = _dot(eu, ea), _dot(eu, eb)
    return jnp.clip(ca * ca + cb * cb, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Eq. 25: streaming accumulator and one-shot scores.


@functools.partial(jax.jit, static_argnames=("pooling", "combine", "zero_tol", "parallel_tol"))
def _batch_sums(hidden, mask, previous, *, pooling, combine, zero_tol, parallel_tol):
    """(sum over pairs of the squared cosines per layer, number of pairs) of one validated batch."""
    samples, weights = pool_tokens(hidden, mask, pooling)
    if previous is None:
        cos2 = _pair_cos2(samples, zero_tol)
    else:
        prev_samples, _ = pool_tokens(previous, mask, pooling)
        dz, ok = finite_differences(samples, zero_tol)
        dp, okp = finite_differences(prev_samples, zero_tol)
        u, ok_u = dz[1:], ok[1:]  # layer l at t+1
        a, ok_a = dz[:-1], ok[:-1]  # layer l-1 at t+1
        b, ok_b = dp[1:], okp[1:]  # layer l at t
        if combine == "sum":
            eu = _safe_unit(u, ok_u)
            ca = _dot(eu, _safe_unit(a, ok_a))
            cb = _dot(eu, _safe_unit(b, ok_b))
            cos2 = jnp.clip(ca * ca, 0, 1) + jnp.clip(cb * cb, 0, 1)
        else:
            cos2 = _projection_r2(u, a, b, ok_u, ok_a, ok_b, parallel_tol)
    w = weights.astype(cos2.dtype)
    return jnp.sum(cos2 * w, axis=-1), jnp.sum(w)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RedundancyAccumulator:
    """Running sums of eq. 25 over M batches; a pytree (scan carry, reducible across devices).

    Attributes:
      cos2_sum: `(L,)` sum over batches and pairs of the squared cosines of layer l = 1..L.
      num_pairs: `()` number of pairs summed (M (B - 1) for M batches of size B).
    """

    cos2_sum: jax.Array
    num_pairs: jax.Array

    @classmethod
    def zeros(cls, num_layers: int, dtype=jnp.float32) -> RedundancyAccumulator:
        """The empty statistic for `num_layers` = L layers (the identity of `merge`)."""
        if num_layers < 1:
            raise ValueError(f"`num_layers` must be >= 1; got {num_layers}.")
        return cls(cos2_sum=jnp.zeros((num_layers,), dtype), num_pairs=jnp.zeros((), dtype))

    @classmethod
    def from_hidden(
        cls,
        hidden,
        mask=None,
        *,
        pooling: str = "mean",
        previous=None,
        combine: str = "projection",
        zero_tol: float = DEFAULT_ZERO_TOL,
        parallel_tol: float = DEFAULT_PARALLEL_TOL,
    ) -> RedundancyAccumulator:
        """Sums of one batch of hidden states `(L+1, B, d)` or `(L+1, B, T, d)`.

        Args:
          hidden: hidden states of one batch (module docstring for layout and pooling).
          mask: optional `(B, T)` attention mask for token-level `hidden`.
          pooling: "mean", "first" or "tokens" (module docstring).
          previous: optional hidden states of the same batch at the previous checkpoint (epoch t), same
            shape as `hidden`: then the pairs score the space-time form (`spacetime_redundancy_scores`).
          combine: space-time combination, "projection" or "sum" (`spacetime_redundancy_scores`).
          zero_tol: relative threshold below which a difference counts as zero (module docstring).
          parallel_tol: see `spacetime_redundancy_scores`.
        """
        hidden, mask = _check_hidden(hidden, "hidden", mask, pooling)
        n = hidden.shape[1] * (hidden.shape[2] if pooling == "tokens" and hidden.ndim == 4 else 1)
        if n < 2:
            raise ValueError(
                f"`hidden` has {n} sample(s) per batch after pooling (shape {hidden.shape}); eq. 25 "
                "needs B >= 2 consecutive samples."
            )
        if previous is not None:
            if combine not in COMBINES:
                raise ValueError(f"`combine` must be one of {COMBINES}; got {combine!r}.")
            previous, _ = _check_hidden(previous, "previous", mask, pooling)
            if previous.shape != hidden.shape:
                raise ValueError(
                    "`previous` (hidden states of the same batch at the earlier checkpoint) must "
                    f"have the shape of `hidden` {hidden.shape}; got {previous.shape}."
                )
        cos2_sum, num_pairs = _batch_sums(
            hidden,
            mask,
            previous,
            pooling=pooling,
            combine=combine,
            zero_tol=zero_tol,
            parallel_tol=parallel_tol,
        )
        return cls(cos2_sum=cos2_sum, num_pairs=num_pairs)

    def update(self, hidden, mask=None, **kwargs) -> RedundancyAccumulator:
        """Add one batch (keyword arguments as in `from_hidden`)."""
        return self.merge(RedundancyAccumulator.from_hidden(hidden, mask, **kwargs))

    def merge(self, other: RedundancyAccumulator) -> RedundancyAccumulator:
        """Sums over the union of both sets of batches (exact)."""
        if self.cos2_sum.shape != other.cos2_sum.shape:
            raise ValueError(
                f"Cannot merge accumulators over {self.cos2_sum.shape[0]} and "
                f"{other.cos2_sum.shape[0]} layers."
            )
        return RedundancyAccumulator(
            cos2_sum=self.cos2_sum + other.cos2_sum, num_pairs=self.num_pairs + other.num_pairs
        )

    def psum(self, axis_name) -> RedundancyAccumulator:
        """All-reduce over a mapped axis (inside `jax.shard_map`)."""
        return RedundancyAccumulator(
            cos2_sum=jax.lax.psum(self.cos2_sum, axis_name),
            num_pairs=jax.lax.psum(self.num_pairs, axis_name),
        )

    def scores(self) -> jax.Array:
        """R_l for l = 1..L (eq. 25); 0 before any pair was added."""
        return self.cos2_sum / (2.0 * jnp.maximum(self.num_pairs, 1.0))

    def entropy_rates(self, width, sigma2: float = 1.0) -> jax.Array:
        """Theorem 2 / eq. 24: d_l/2 ln(2 pi e sigma^2) - R_l for l = 1..L (`width` = d_l, int or (L,))."""
        return gaussian_entropy_constant(width, sigma2) - self.scores()


def layer_redundancy_scores(
    hidden,
    mask=None,
    *,
    pooling: str = "mean",
    batch_size: int | None = None,
    zero_tol: float = DEFAULT_ZERO_TOL,
) -> jax.Array:
    """Redundancy score R_l of every layer (eq. 25) from hidden states in one shot.

    Args:
      hidden: `(L+1, B, d)` or token-level `(L+1, B, T, d)`; index 0 is the input of layer 1 (the
        embedding output), index l the output of layer l.
      mask: optional `(B, T)` attention mask for token-level inputs (1 = token, 0 = padding).
      pooling: "mean" (default), "first" or "tokens" (module docstring).
      batch_size: split the B samples into M = B / batch_size consecutive batches and apply the double
        sum of eq. 25 (no pair straddles two batches); None = one batch (M = 1).
      zero_tol: relative zero-difference threshold (module docstring).

    Returns:
      `(L,)` scores: entry l-1 is R_l, in [0, 1/2]; higher = more redundant.
    """
    hidden, mask = _check_hidden(hidden, "hidden", mask, pooling)
    if batch_size is None:
        return RedundancyAccumulator.from_hidden(
            hidden, mask, pooling=pooling, zero_tol=zero_tol
        ).scores()
    b = hidden.shape[1]
    if batch_size < 2 or b % batch_size:
        raise ValueError(
            f"`batch_size` must be >= 2 and divide the B = {b} samples of `hidden`; got {batch_size}."
        )
    m = b // batch_size
    split = hidden.reshape(hidden.shape[0], m, batch_size, *hidden.shape[2:])
    split = jnp.moveaxis(split, 1, 0)
    mask_split = None if mask is None else mask.reshape(m, batch_size, mask.shape[-1])

    def one(h, mk):
        return RedundancyAccumulator.from_hidden(h, mk, pooling=pooling, zero_tol=zero_tol)

    accs = jax.vmap(one)(split, mask_split)
    total = RedundancyAccumulator(
        cos2_sum=jnp.sum(accs.cos2_sum, axis=0), num_pairs=jnp.sum(accs.num_pairs)
    )
    return total.scores()


# ---------------------------------------------------------------------------------------------------
# Theorem 2: entropy rate from the cosine approximation.


def gaussian_entropy_constant(width, sigma2: float = 1.0) -> jax.Array:
    """C = d/2 ln(2 pi e sigma^2), the layer constant of Theorems 1-2 (eqs. 15, 20, 59), in nats."""
    if not sigma2 > 0:
        raise ValueError(f"`sigma2` (perturbation variance) must be > 0; got {sigma2}.")
    width = jnp.asarray(width, jnp.result_type(float))
    return 0.5 * width * math.log(2 * math.pi * math.e * sigma2)


def cosine_entropy_rates(
    hidden,
    mask=None,
    *,
    sigma2: float = 1.0,
    pooling: str = "mean",
    batch_size: int | None = None,
    zero_tol: float = DEFAULT_ZERO_TOL,
) -> jax.Array:
    """Theorem 2 entropy-rate estimate of every layer (eqs. 20, 24), constant term included.

    H_l ~= d/2 ln(2 pi e sigma^2) - 1/(2 M (B-1)) sum cos^2(dz_l, dz_{l-1}) = C - R_l, with d the width
    of the hidden states and sigma^2 the variance of the local Gaussian perturbation (Theorem 1). The
    constant does not depend on l for a constant-width transformer, so rankings equal those of -R_l
    (Appendix D). Arguments as in `layer_redundancy_scores`.

    Returns:
      `(L,)` entropy rates in nats.
    """
    r = layer_redundancy_scores(
        hidden, mask, pooling=pooling, batch_size=batch_size, zero_tol=zero_tol
    )
    return gaussian_entropy_constant(jnp.shape(hidden)[-1], sigma2) - r


def spacetime_redundancy_scores(
    hidden,
    previous,
    mask=None,
    *,
    pooling: str = "mean",
    combine: str = "projection",
    zero_tol: float = DEFAULT_ZERO_TOL,
    parallel_tol: float = DEFAULT_PARALLEL_TOL,
) -> jax.Array:
    """Space-time redundancy: layer l at epoch t+1 given layer l-1 at t+1 and layer l at t (eq. 4).

    The finite-difference construction of Theorem 2 with the conditioning v = (X_l^{t+1}, X_{l+1}^t):
    for each consecutive pair i of the same ordered batch, u = dz_{l,i}^{t+1}, a = dz_{l-1,i}^{t+1},
    b = dz_{l,i}^t, and

    - combine="projection" (default): rho^2 = |P_{span(a, b)} u|^2 / |u|^2, the fraction of the change
      of u explained by the span of both conditioning changes. It is in [0, 1], equals
      cos^2(u, a) when b is parallel to a (or zero) and cos^2(u, a) + cos^2(u, b) when a is orthogonal
      to b, so with one conditioning change it reduces to the summand of eq. 25. `b` counts as
      parallel to `a` when its component orthogonal to a is below `parallel_tol` * |b|.
    - combine="sum": cos^2(u, a) + cos^2(u, b), the block-diagonal approximation of Sigma_vv^{-1}
      used in eq. 52 applied to both blocks of v; in [0, 2] and double-counts shared directions.

    R^st_l = 1/(2 M (B-1)) sum_i rho_i^2; the entropy rate is d/2 ln(2 pi e sigma^2) - R^st_l.

    Args:
      hidden: hidden states at the later checkpoint (epoch t+1), `(L+1, B, d)` or `(L+1, B, T, d)`.
      previous: hidden states of the same batch, in the same order, at the earlier checkpoint (epoch t).
      mask, pooling, zero_tol: as in `layer_redundancy_scores`.

    Returns:
      `(L,)` space-time scores for layers l = 1..L.
    """
    return RedundancyAccumulator.from_hidden(
        hidden,
        mask,
        pooling=pooling,
        previous=previous,
        combine=combine,
        zero_tol=zero_tol,
        parallel_tol=parallel_tol,
    ).scores()


# ---------------------------------------------------------------------------------------------------
# Theorem 1: first-order linear-Gaussian estimator.


class FirstOrderEntropy(NamedTuple):
    """Theorem 1 quantities for one layer (nats).

    Attributes:
      first_order: eq. 15, d_u/2 ln(2 pi e sigma^2) - tr(A)/2 (the Jacobian log-determinant of eq. 37
        absorbed into the constant, ln det(I - A) ~= -tr A, eq. 38).
      gaussian: eq. 36, the exact conditional entropy of the linearised (ridge-regularised) Gaussian,
        d_u/2 ln(2 pi e) + 1/2 ln det Sigma_{u|v}.
      trace_a: tr(A), eq. 16, in [0, d_u).
      logdet_i_minus_a: ln det(I - A) (eq. 34); eq. 38 approximates it by -tr(A).
    """

    first_order: jax.Array
    gaussian: jax.Array
    trace_a: jax.Array
    logdet_i_minus_a: jax.Array


def _logdet_pd(m: jax.Array) -> jax.Array:
    chol = jnp.linalg.cholesky(m)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def covariance_blocks(j_u, j_v, sigma2: float = 1.0):
    """Sigma_uu, Sigma_uv, Sigma_vv of u = J_u dx, v = J_v dx, dx ~ N(0, sigma^2 I) (eqs. 17-19, 28-30).

    The paper's eqs. 18-19 take J_v = [J_l; J_{l+1}], whose second block is J_u itself: then u is a
    linear function of v, Sigma_{u|v} = 0 and A = I (tr A = d_u up to the ridge). Pass the Jacobian of
    the conditioning variables as they are defined (e.g. for v = (X_l^{t+1}, X_{l+1}^t) around
    x = (X_l^t, X_{l+1}^t), the second block of J_v is the selection [0, I]).
    """
    j_u = _checks.as_float(j_u, "j_u")
    j_v = _checks.as_float(j_v, "j_v")
    if j_u.ndim != 2 or j_v.ndim != 2 or j_u.shape[1] != j_v.shape[1]:
        raise ValueError(
            "`j_u` and `j_v` must be Jacobians (d_u, p) and (d_v, p) with respect to the same p "
            f"input perturbation coordinates; got {j_u.shape} and {j_v.shape}."
        )
    s_uu = sigma2 * jnp.matmul(j_u, j_u.T, precision=_HIGHEST)
    s_uv = sigma2 * jnp.matmul(j_u, j_v.T, precision=_HIGHEST)
    s_vv = sigma2 * jnp.matmul(j_v, j_v.T, precision=_HIGHEST)
    return s_uu, s_uv, s_vv


def first_order_from_blocks(
    s_uu, s_uv, s_vv, *, sigma2: float = 1.0, ridge: float = DEFAULT_RIDGE
) -> FirstOrderEntropy:
    """Theorem 1 from covariance blocks: A = S_uu^{-1/2} S_uv S_vv^{-1} S_vu S_uu^{-1/2} (eq. 16).

    `ridge` * mean diagonal is added to S_uu and S_vv (a relative ridge: scale-free, positive definite
    even for rank-deficient Jacobians). tr A = tr(S_uu^{-1} S_uv S_vv^{-1} S_vu) is computed with
    Cholesky solves; ln det(I - A) = ln det S_{u|v} - ln det S_uu (eq. 34).
    """
    if not ridge > 0:
        raise ValueError(
            f"`ridge` must be > 0 (relative ridge on the covariance blocks); got {ridge}."
        )
    if not sigma2 > 0:
        raise ValueError(f"`sigma2` (perturbation variance) must be > 0; got {sigma2}.")
    d_u = s_uu.shape[-1]

    def reg(s):
        scale = jnp.maximum(jnp.trace(s) / s.shape[-1], jnp.finfo(s.dtype).tiny)
        return s + ridge * scale * jnp.eye(s.shape[-1], dtype=s.dtype)

    s_uu, s_vv = reg(s_uu), reg(s_vv)
    l_vv = jnp.linalg.cholesky(s_vv)
    w = jax.scipy.linalg.solve_triangular(l_vv, s_uv.T, lower=True)  # L_vv^{-1} S_vu: (d_v, d_u)
    explained = jnp.matmul(w.T, w, precision=_HIGHEST)  # S_uv S_vv^{-1} S_vu
    l_uu = jnp.linalg.cholesky(s_uu)
    y = jax.scipy.linalg.solve_triangular(l_uu, explained, lower=True)
    y = jax.scipy.linalg.solve_triangular(
        l_uu, y.T, lower=True
    )  # L^{-1} E L^{-T}: same spectrum as A
    trace_a = jnp.trace(y)
    cond = s_uu - explained
    cond = 0.5 * (cond + cond.T)
    logdet_cond = _logdet_pd(cond)  # cond >= ridge * I: positive definite
    logdet_i_minus_a = logdet_cond - _logdet_pd(s_uu)
    const = gaussian_entropy_constant(d_u, sigma2)
    gaussian = 0.5 * d_u * math.log(2 * math.pi * math.e) + 0.5 * logdet_cond
    return FirstOrderEntropy(
        first_order=const - 0.5 * trace_a,
        gaussian=gaussian,
        trace_a=trace_a,
        logdet_i_minus_a=logdet_i_minus_a,
    )


def first_order_conditional_entropy(
    j_u, j_v, *, sigma2: float = 1.0, ridge: float = DEFAULT_RIDGE
) -> FirstOrderEntropy:
    """Theorem 1 (eq. 15) from the Jacobians of u and v with respect to the local perturbation dx."""
    s_uu, s_uv, s_vv = covariance_blocks(j_u, j_v, sigma2)
    return first_order_from_blocks(s_uu, s_uv, s_vv, sigma2=sigma2, ridge=ridge)


def _flat(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.concatenate([jnp.ravel(leaf) for leaf in leaves])


def first_order_entropy_rate(
    fn: Callable,
    x0,
    *,
    sigma2: float = 1.0,
    ridge: float = DEFAULT_RIDGE,
) -> FirstOrderEntropy:
    """Theorem 1 for a differentiable map of the local state: `fn(x) -> (u, v)`.

    `x0` is the expansion point (eqs. 11-14), e.g. x = (X_l^t, X_{l+1}^t) or a layer's input; `u` is the
    representation whose conditional entropy is wanted (X_{l+1}^{t+1}) and `v` the conditioning
    representations (any pytree, flattened and concatenated, e.g. (X_l^{t+1}, X_{l+1}^t)). The Jacobians
    J_u, J_v are taken with `jax.jacfwd` (one `jax.jvp` per input coordinate: p forward passes for
    p = size of x0), so this is meant for small widths; cost O(p (d_u + d_v) + (d_u + d_v)^3).
    """

    def flat_fn(x):
        u, v = fn(x)
        return jnp.ravel(u), _flat(v)

    x0 = _checks.as_float(x0, "x0")
    shape = x0.shape

    def on_flat(xf):
        return flat_fn(xf.reshape(shape))

    j_u, j_v = jax.jacfwd(on_flat)(jnp.ravel(x0))
    return first_order_conditional_entropy(j_u, j_v, sigma2=sigma2, ridge=ridge)


__all__ = [
    "COMBINES",
    "DEFAULT_PARALLEL_TOL",
    "DEFAULT_RIDGE",
    "DEFAULT_ZERO_TOL",
    "POOLINGS",
    "FirstOrderEntropy",
    "RedundancyAccumulator",
    "cosine_entropy_rates",
    "covariance_blocks",
    "finite_differences",
    "first_order_conditional_entropy",
    "first_order_entropy_rate",
    "first_order_from_blocks",
    "gaussian_entropy_constant",
    "layer_redundancy_scores",
    "pool_tokens",
    "spacetime_redundancy_scores",
    "squared_cosine",
]
