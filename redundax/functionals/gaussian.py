"""Gaussian redundancy: total correlation, mutual information and the chi-square proxy.

Reference: Bi, Zhu & Calhoun, "Redundancy as a structural information principle for learning and
generalization" (2025), Sections 3.2 and 3.5: Proposition 4 (Gaussian total correlation), Proposition 5
(quadratic / chi-square proxy), Lemma 2 (KL-Frobenius bound). All values in nats.

Singular correlation matrices. A collapsed (rank-deficient) representation, duplicated units or n <= d
samples give det C = 0 and an infinite Gaussian total correlation. To stay finite and differentiable
inside training loops, the log-determinants here are taken of the shrunk correlation

    C_eps = (1 - eps) C + eps I,     eps = `shrinkage` (default 1e-4),

which is a valid, positive definite correlation matrix for any eps in (0, 1]. The result is exact as
eps -> 0 whenever C is nonsingular (the bias is about eps * sum_i (1/lambda_i - 1)), and for singular C it
grows like (d - rank)/2 * log(1/eps): large but finite. Pass `shrinkage=0.0` for the unshrunk value
(then C must be nonsingular and n > d, or the result is inf/NaN).

When n < d, C has rank < n and the log-determinant is computed from the n x n Gram matrix of
standardised samples (matrix determinant lemma): log det C_eps = d_ok log eps + log det(I_n + (1-eps)/eps
Z Z^T), with Z the standardised samples and d_ok the number of non-constant units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from redundax.functionals import _checks
from redundax.functionals.moments import correlation, self_gram, standardize

DEFAULT_SHRINKAGE = 1e-4


def _check_shrinkage(shrinkage: float) -> None:
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"`shrinkage` must be in [0, 1]; got {shrinkage}.")


def logdet_pd(m: jax.Array) -> jax.Array:
    """log det of a symmetric positive definite matrix via Cholesky (inf-free for PD input)."""
    chol = jnp.linalg.cholesky(m)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def shrunk_logdet_corr(corr: jax.Array, shrinkage: float = DEFAULT_SHRINKAGE) -> jax.Array:
    """log det((1 - eps) C + eps I) of correlation matrices `(..., d, d)`."""
    _check_shrinkage(shrinkage)
    eye = jnp.eye(corr.shape[-1], dtype=corr.dtype)
    return logdet_pd((1 - shrinkage) * corr + shrinkage * eye)


def _logdet_corr_of_samples(x: jax.Array, shrinkage: float) -> jax.Array:
    n, d = x.shape[-2], x.shape[-1]
    if n > d or shrinkage == 0.0:
        return shrunk_logdet_corr(correlation(x), shrinkage)
    # n <= d: Gram path (matrix determinant lemma), O(n^2 d) instead of O(n d^2 + d^3).
    z, ok = standardize(x)
    gram = self_gram(jnp.swapaxes(z, -1, -2))
    scale = (1 - shrinkage) / shrinkage
    eye = jnp.eye(n, dtype=x.dtype)
    d_ok = jnp.sum(ok, axis=-1).astype(x.dtype)
    return d_ok * jnp.log(jnp.asarray(shrinkage, x.dtype)) + logdet_pd(eye + scale * gram)


def gaussian_total_correlation(x, *, shrinkage: float = DEFAULT_SHRINKAGE) -> jax.Array:
    """Gaussian total correlation TC = -1/2 log det C (Prop. 4), in nats.

    Equals R_KL(X) = D_KL(P_X || prod_i P_Xi) for a Gaussian X with correlation C = corr(x).

    Args:
      x: samples `(..., n, d)`.
      shrinkage: eps of the shrunk correlation (1 - eps) C + eps I (module docstring).

    Returns:
      `(...)` total correlation.
    """
    _check_shrinkage(shrinkage)
    x = _checks.check_samples(x, "x")
    return -0.5 * _logdet_corr_of_samples(x, shrinkage)


def gaussian_total_correlation_from_corr(
    corr, *, shrinkage: float = DEFAULT_SHRINKAGE
) -> jax.Array:
    """-1/2 log det C of given correlation matrices `(..., d, d)` (Prop. 4)."""
    corr = _checks.check_square(corr, "corr")
    return -0.5 * shrunk_logdet_corr(corr, shrinkage)


def gaussian_mutual_information(x, y, *, shrinkage: float = DEFAULT_SHRINKAGE) -> jax.Array:
    """Gaussian mutual information I(X; Y) = -1/2 log(det C / (det C_xx det C_yy)), in nats.

    The mutual information of jointly Gaussian vectors with the sample correlation of `(x, y)`; it is
    the total correlation of the concatenation minus those of each part (Prop. 4 applied three times).

    Args:
      x: samples `(..., n, dx)`.
      y: samples `(..., n, dy)` of the same n samples.
      shrinkage: as in `gaussian_total_correlation`, applied to each correlation matrix.
    """
    _check_shrinkage(shrinkage)
    x = _checks.check_samples(x, "x")
    y = _checks.check_samples(y, "y")
    if x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            f"`x` and `y` must share batch axes and the sample axis: shapes (..., n, dx) and "
            f"(..., n, dy); got {x.shape} and {y.shape}."
        )
    dx = x.shape[-1]
    c = correlation(jnp.concatenate([x, y], axis=-1))
    return 0.5 * (
        shrunk_logdet_corr(c[..., :dx, :dx], shrinkage)
        + shrunk_logdet_corr(c[..., dx:, dx:], shrinkage)
        - shrunk_logdet_corr(c, shrinkage)
    )


def gaussian_mi_from_r2(r2, *, max_r2: float = 1.0 - 1e-6) -> jax.Array:
    """I = -1/2 log(1 - R^2): Gaussian MI between a scalar and a predictor set with coefficient R^2.

    R^2 is clipped to [0, `max_r2`] so that a perfect fit gives a large but finite value
    (-1/2 log(1e-6) = 6.91 nats by default) and a finite gradient.
    """
    r2 = jnp.asarray(r2)
    if not jnp.issubdtype(r2.dtype, jnp.floating):
        r2 = r2.astype(jnp.result_type(float))
    return -0.5 * jnp.log1p(-jnp.clip(r2, 0.0, max_r2))


def chi2_redundancy_from_corr(corr) -> jax.Array:
    """1/4 ||C - I||_F^2 (Prop. 5) of given correlation matrices `(..., d, d)`."""
    corr = _checks.check_square(corr, "corr")
    off = corr - jnp.eye(corr.shape[-1], dtype=corr.dtype)
    return 0.25 * jnp.sum(off * off, axis=(-2, -1))


def chi2_redundancy(x) -> jax.Array:
    """Chi-square redundancy proxy R_chi2 ~= 1/4 ||C - I||_F^2 (Prop. 5, Sec. 3.5), in nats.

    The second-order (near-independence) value of R_f for the paper's Pearson kernel
    f(t) = 1/2 (t - 1)^2. Always finite. For n < d it is computed from the n x n Gram matrix:
    ||C - I||_F^2 = ||Z Z^T||_F^2 - d_ok (Z standardised samples).
    """
    x = _checks.check_samples(x, "x")
    n, d = x.shape[-2], x.shape[-1]
    if n > d:
        return chi2_redundancy_from_corr(correlation(x))
    z, ok = standardize(x)
    gram = self_gram(jnp.swapaxes(z, -1, -2))
    d_ok = jnp.sum(ok, axis=-1).astype(x.dtype)
    return 0.25 * jnp.maximum(jnp.sum(gram * gram, axis=(-2, -1)) - d_ok, 0.0)


__all__ = [
    "DEFAULT_SHRINKAGE",
    "chi2_redundancy",
    "chi2_redundancy_from_corr",
    "gaussian_mi_from_r2",
    "gaussian_mutual_information",
    "gaussian_total_correlation",
    "gaussian_total_correlation_from_corr",
    "logdet_pd",
    "shrunk_logdet_corr",
]
