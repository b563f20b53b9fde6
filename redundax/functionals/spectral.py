"""Spectral entropy, effective rank and spectral redundancy of a representation.

Reference: Bi, Zhu & Calhoun (2025), Definition 2 and Proposition 6. For covariance eigenvalues
lambda_1..lambda_D with normalised spectrum p_i = lambda_i / sum_j lambda_j,

    H_lambda = -sum_i p_i log p_i,     r_eff = exp(H_lambda),     R_spec = 1 - r_eff / D,

with R_spec in [0, 1 - 1/D]: 0 for a uniform spectrum, 1 - 1/D for a rank-one (collapsed) one.

Numerics (finite values and gradients wherever a training loop can go):
- When n < D the covariance has at most n - 1 nonzero eigenvalues; they are taken from the n x n Gram
  matrix of the centred samples (the same nonzero spectrum, far cheaper).
- Eigenvalues at or below the round-off level `4 sqrt(k) eps lambda_max` of the k x k eigenproblem
  (about 1e-5 lambda_max in float32 at k = 768; including the slightly negative
  ones an eigensolver returns for a singular matrix) are treated as exact zeros, with 0 log 0 = 0 and a
  zero gradient through them. A plain `eigvalsh` + `log` gives NaN value and gradient there.
- A batch with no variance at all (every sample equal) is treated as completely collapsed: H = 0,
  r_eff = 1, R_spec = 1 - 1/D, gradient 0.
- Eigenvalues of degenerate spectra have well-defined symmetric gradients V diag(g) V^T; only
  eigenvalues are differentiated, never eigenvectors.

Speed: on the CPU backend the eigenvalues come from LAPACK's eigenvalue-only driver (through
`jax.pure_callback`, as NumPy does) since XLA's CPU `eigh` always computes eigenvectors; their
derivative uses XLA's `eigh` (eigenvectors are needed there, and XLA's is the faster one). Other
backends (GPU, TPU) use XLA's `eigh` throughout. The callback runs inside `jit`, `vmap` and sharded
programs (the k x k matrix is replicated).

Non-finite input: a matrix with a NaN/Inf entry is never handed to an eigensolver (LAPACK would raise
"Eigenvalues did not converge" from inside the compiled program); its eigenvalues, and every value
derived from them, are NaN, under `jit` on every backend. Eager calls reject such samples with a
ValueError before computing anything.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from redundax.functionals import _checks
from redundax.functionals.moments import self_gram


def _host_eigvalsh(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m)
    try:
        return np.linalg.eigvalsh(m).astype(m.dtype, copy=False)
    except np.linalg.LinAlgError:
        # LAPACK did not converge (finite but extreme entries): NaN for that matrix, never a raise
        # inside the compiled program (an exception in a host callback aborts the whole step).
        flat = m.reshape(-1, *m.shape[-2:])
        out = np.full(flat.shape[:-1], np.nan, m.dtype)
        for i, mi in enumerate(flat):
            try:
                out[i] = np.linalg.eigvalsh(mi)
            except np.linalg.LinAlgError:
                pass
        return out.reshape(m.shape[:-1])


def _eigvalsh_callback(m: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct(m.shape[:-1], m.dtype)
    return jax.pure_callback(_host_eigvalsh, out, m, vmap_method="expand_dims")


def _eigvalsh_device(m: jax.Array) -> jax.Array:
    return jnp.linalg.eigvalsh(m)


def _finite_only(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(safe, bad)`: matrices with a NaN/Inf entry replaced by zeros, and the mask `(...)` of them.

    Eigensolvers are never fed non-finite input (LAPACK raises "did not converge" on it); the caller
    puts NaN back into the results of the `bad` matrices.
    """
    bad = ~jnp.all(jnp.isfinite(m), axis=(-2, -1))
    return jnp.where(bad[..., None, None], jnp.zeros_like(m), m), bad


@jax.custom_jvp
def eigvalsh(m: jax.Array) -> jax.Array:
    """Ascending eigenvalues of symmetric matrices `(..., k, k)`, differentiable.

    LAPACK's eigenvalue-only solver on CPU, `eigh` elsewhere; the JVP is d lambda_i = v_i^T dM v_i,
    finite for repeated eigenvalues. A matrix with a NaN/Inf entry gets NaN eigenvalues on every
    backend (also under `jit`, where no input check can run).
    """
    safe, bad = _finite_only(m)
    w = jax.lax.platform_dependent(safe, cpu=_eigvalsh_callback, default=_eigvalsh_device)
    return jnp.where(bad[..., None], jnp.nan, w)


@eigvalsh.defjvp
def _eigvalsh_jvp(primals, tangents):
    (m,), (dm,) = primals, tangents
    safe, bad = _finite_only(m)
    w, v = jnp.linalg.eigh(safe)
    w = jnp.where(bad[..., None], jnp.nan, w)
    dw = jnp.einsum("...ji,...jk,...ki->...i", v, dm, v, precision=jax.lax.Precision.HIGHEST)
    return w, dw


def _clean_spectrum(lam: jax.Array) -> jax.Array:
    """Eigenvalues of a k x k PSD matrix with round-off ones (<= 4 sqrt(k) eps lambda_max) set to 0."""
    k = lam.shape[-1]
    cutoff = 4 * k**0.5 * jnp.finfo(lam.dtype).eps * jnp.max(lam, axis=-1, keepdims=True)
    # A NaN spectrum (non-finite input) stays NaN: `lam > NaN` is False and would zero it.
    return jnp.where(lam > cutoff, lam, jnp.where(jnp.isnan(cutoff), jnp.nan, 0.0))


def covariance_spectrum(x) -> jax.Array:
    """Eigenvalues of the sample covariance of `x` `(..., n, d)`, round-off ones set to exact 0.

    Returns `min(n, d)` eigenvalues in ascending order (of the covariance, or of the Gram matrix when
    n < d; the covariance's remaining eigenvalues are exactly zero), scaled by 1/(n - 1).
    """
    x = _checks.check_samples(x, "x")
    n, d = x.shape[-2], x.shape[-1]
    xc = x - jnp.mean(x, axis=-2, keepdims=True)
    m = self_gram(jnp.swapaxes(xc, -1, -2) if n < d else xc)
    return _clean_spectrum(eigvalsh(m) / (n - 1))


def _xlogx(p: jax.Array) -> jax.Array:
    pos = p > 0
    return jnp.where(pos, p * jnp.log(jnp.where(pos, p, 1)), 0.0)


def _entropy_of_spectrum(lam: jax.Array) -> jax.Array:
    total = jnp.sum(lam, axis=-1, keepdims=True)
    p = lam / jnp.where(total > 0, total, 1)
    # `_xlogx` maps NaN to 0 (NaN > 0 is False): put NaN back for a NaN spectrum.
    return jnp.where(jnp.isnan(total[..., 0]), jnp.nan, -jnp.sum(_xlogx(p), axis=-1))


def spectral_entropy(x) -> jax.Array:
    """Spectral entropy H_lambda = -sum_i p_i log p_i of the covariance spectrum (Def. 2), nats.

    Args:
      x: samples `(..., n, d)`.

    Returns:
      `(...)` entropy in [0, log d].
    """
    return _entropy_of_spectrum(covariance_spectrum(x))


def effective_rank(x) -> jax.Array:
    """Effective rank r_eff = exp(H_lambda) (Def. 2), in [1, d]."""
    return jnp.exp(spectral_entropy(x))


def spectral_redundancy(x) -> jax.Array:
    """Spectral redundancy R_spec = 1 - r_eff / D (Def. 2; Prop. 6 bounds [0, 1 - 1/D]).

    The penalty of the paper's MAE objective L = L_recon + lambda R_spec(Z) (eq. 2). Under `jax.jit`
    on a batch sharded over devices this is the global-batch value.
    """
    x = _checks.as_float(x, "x")
    return 1.0 - effective_rank(x) / x.shape[-1]


def spectral_entropy_from_covariance(cov) -> jax.Array:
    """H_lambda (Def. 2) of a given covariance `(..., d, d)`, e.g. `Moments.covariance()` of an epoch."""
    cov = _checks.check_square(cov, "cov")
    return _entropy_of_spectrum(_clean_spectrum(eigvalsh(cov)))


def spectral_redundancy_from_covariance(cov) -> jax.Array:
    """R_spec = 1 - exp(H_lambda) / D (Def. 2) of a given covariance `(..., d, d)`."""
    cov = _checks.check_square(cov, "cov")
    return 1.0 - jnp.exp(spectral_entropy_from_covariance(cov)) / cov.shape[-1]


__all__ = [
    "covariance_spectrum",
    "effective_rank",
    "eigvalsh",
    "spectral_entropy",
    "spectral_entropy_from_covariance",
    "spectral_redundancy",
    "spectral_redundancy_from_covariance",
]
