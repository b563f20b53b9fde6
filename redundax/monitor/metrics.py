"""Named redundancy metrics of a layer, each a function of its accumulated `Moments`.

Every metric reads only the count, mean and co-moment of the layer's samples, so a full-dataset
value costs one d x d matrix per layer whatever the number of batches, devices or hosts. All are pure
`jnp` (usable under `jax.jit` and `jax.vmap`) and finite on collapsed (rank-1) layers, on layers
with constant units and when samples <= units. Information is in nats.

| name | value | reference |
| --- | --- | --- |
| `spectral_redundancy` | R_spec = 1 - r_eff / d of the covariance | Bi et al. (2025), Def. 2 |
| `effective_rank` | r_eff = exp(H_lambda), in [1, d] | Def. 2 (Roy & Vetterli, 2007) |
| `spectral_entropy` | H_lambda of the normalised covariance spectrum | Def. 2 |
| `gaussian_total_correlation` | -1/2 log det((1 - 1e-4) C + 1e-4 I) of the correlation C | Prop. 4 |
| `chi2_redundancy` | 1/4 ||C - I||_F^2 | Prop. 5 |
| `rankme` | exp of the entropy of the normalised singular values of the uncentred embedding matrix | Garrido et al. (2023), eq. 1 |
| `alpha_req` | exponent alpha of a power law lambda_i ~ i^-alpha fitted to the covariance spectrum | Agrawal et al. (2022) |
| `num_samples` | the number of samples n | - |

With n <= d samples the covariance has rank < d, so the spectral measures are capped by the
sample count (r_eff <= n - 1); `redundax.monitor.measure` then reports `undersampled = 1`.

References:
  Bi, Zhu & Calhoun (2025), Redundancy as a structural information principle for learning and
  generalization. Garrido, Balestriero, Najman & LeCun (2023), RankMe: Assessing the downstream
  performance of pretrained self-supervised representations by their rank, ICML. Agrawal, Mondal,
  Ghosh & Richards (2022), alpha-ReQ: Assessing representation quality in self-supervised learning
  by measuring eigenspectrum decay, NeurIPS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp

from redundax.functionals import (
    Moments,
    chi2_redundancy_from_corr,
    gaussian_total_correlation_from_corr,
    spectral_entropy_from_covariance,
    spectral_redundancy_from_covariance,
)
from redundax.functionals.spectral import _clean_spectrum, eigvalsh

RANKME_EPS = 1e-7  # Garrido et al. (2023): p_k = sigma_k / ||sigma||_1 + eps


def spectral_entropy(m: Moments) -> jax.Array:
    """H_lambda = -sum_i p_i log p_i, p = normalised covariance eigenvalues (Def. 2), nats."""
    return spectral_entropy_from_covariance(m.covariance())


def effective_rank(m: Moments) -> jax.Array:
    """r_eff = exp(H_lambda) (Def. 2), in [1, d]."""
    return jnp.exp(spectral_entropy(m))


def spectral_redundancy(m: Moments) -> jax.Array:
    """R_spec = 1 - r_eff / d (Def. 2, Prop. 6), in [0, 1 - 1/d]."""
    return spectral_redundancy_from_covariance(m.covariance())


def gaussian_total_correlation(m: Moments) -> jax.Array:
    """TC = -1/2 log det C (Prop. 4) of the shrunk correlation (1 - 1e-4) C + 1e-4 I, nats."""
    return gaussian_total_correlation_from_corr(m.correlation())


def chi2_redundancy(m: Moments) -> jax.Array:
    """R_chi2 = 1/4 ||C - I||_F^2 (Prop. 5); constant units count as independent."""
    return chi2_redundancy_from_corr(m.correlation())


def rankme(m: Moments) -> jax.Array:
    """RankMe (Garrido et al., 2023, eq. 1): exp(-sum_k p_k log p_k), p_k = s_k / ||s||_1 + 1e-7.

    s are the singular values of the *uncentred* n x d embedding matrix Z, computed exactly from
    the moments: Z^T Z / n = C + mu mu^T (C = comoment / n) = A A^T with A = [V Lambda^1/2, mu]
    (C = V Lambda V^T), so s = sqrt(n) x the singular values of the d x (d + 1) matrix A (the
    factor cancels in p). Taking singular values of A rather than eigenvalues of A A^T keeps their
    float32 resolution at eps s_max instead of sqrt(eps) s_max, which matters when the mean
    dominates (typical of ReLU features); eigenvalues of C at its round-off level count as 0.
    The d - min(n, d) structurally zero singular values add at most d x 1.6e-6 (their eps terms),
    so the value matches an SVD of Z to that precision. In [~1, min(n, d)].
    """
    n = jnp.maximum(m.count, 1)[..., None, None]
    lam, v = jnp.linalg.eigh(m.comoment / n)
    lam = _clean_spectrum(lam)
    a = jnp.concatenate([v * jnp.sqrt(lam)[..., None, :], m.mean[..., :, None]], axis=-1)
    s = jnp.linalg.svd(a, compute_uv=False)
    total = jnp.sum(s, axis=-1, keepdims=True)
    p = s / jnp.where(total > 0, total, 1) + RANKME_EPS
    return jnp.exp(-jnp.sum(p * jnp.log(p), axis=-1))


def alpha_req(m: Moments) -> jax.Array:
    """alpha-ReQ (Agrawal et al., 2022): alpha of the power-law fit lambda_i ~ c i^-alpha.

    Least squares of log lambda_i on log i over the fitted range i = 1..r, where r is the number
    of covariance eigenvalues above the round-off level (all nonzero ones; descending order).
    A spectrum with fewer than two nonzero eigenvalues (a collapsed layer) has no decay to fit and
    gives 0.
    """
    lam = jnp.flip(_clean_spectrum(eigvalsh(m.covariance())), axis=-1)
    ok = lam > 0
    w = ok.astype(lam.dtype)
    x = jnp.log(jnp.arange(1, lam.shape[-1] + 1, dtype=lam.dtype))
    y = jnp.log(jnp.where(ok, lam, 1))
    count = jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1)
    xc = (x - jnp.sum(w * x, axis=-1, keepdims=True) / count) * w
    yc = (y - jnp.sum(w * y, axis=-1, keepdims=True) / count) * w
    sxx = jnp.sum(xc * xc, axis=-1)
    return -jnp.sum(xc * yc, axis=-1) / jnp.where(sxx > 0, sxx, 1)


def num_samples(m: Moments) -> jax.Array:
    """The number of samples n accumulated."""
    return m.count


METRICS: dict[str, Callable[[Moments], jax.Array]] = {
    "spectral_redundancy": spectral_redundancy,
    "effective_rank": effective_rank,
    "spectral_entropy": spectral_entropy,
    "gaussian_total_correlation": gaussian_total_correlation,
    "chi2_redundancy": chi2_redundancy,
    "rankme": rankme,
    "alpha_req": alpha_req,
    "num_samples": num_samples,
}
DEFAULT_METRICS = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req", "num_samples")


def check_names(metrics: str | Iterable[str]) -> tuple[str, ...]:
    """Validated metric names (a single name or several), in the given order."""
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(
            f"`metrics` must name one or more of {sorted(METRICS)}; got unknown {unknown}."
            if unknown
            else f"`metrics` is empty; name one or more of {sorted(METRICS)}."
        )
    return names


def from_moments(
    m: Moments, metrics: str | Iterable[str] = DEFAULT_METRICS
) -> dict[str, jax.Array]:
    """`{name: value}` of the named metrics of accumulated moments (pure, jit/vmap-safe)."""
    return {name: METRICS[name](m) for name in check_names(metrics)}


def from_samples(x, metrics: str | Iterable[str] = DEFAULT_METRICS) -> dict[str, jax.Array]:
    """`{name: value}` of the named metrics of samples `x` shaped `(..., n, d)`.

    The metrics of one representation matrix, e.g. an encoder's embeddings `Z` of a held-out batch
    (the same values as accumulating `x` in batches).
    """
    return from_moments(Moments.from_samples(x), metrics)


__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "RANKME_EPS",
    "alpha_req",
    "check_names",
    "chi2_redundancy",
    "effective_rank",
    "from_moments",
    "from_samples",
    "gaussian_total_correlation",
    "num_samples",
    "rankme",
    "spectral_entropy",
    "spectral_redundancy",
]
