"""Input validation shared by the functionals.

Checks on *values* (finite samples, a normalised probability table, a correlation matrix) can only run
when the array is concrete. Under `jax.jit` the arrays are tracers: shape checks still run at trace time,
value checks are skipped, and NaN/Inf inputs propagate to NaN outputs (the functionals that would
otherwise hide a NaN, such as an eigensolver or a masked sum, put it back explicitly).

Precision: half-precision inputs (float16, bfloat16, e.g. mixed-precision activations) are computed in
float32 and give a float32 result; their eigenproblems and log-determinants are not reliable below
float32. float32 and float64 inputs keep their dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values on the host side of tracing (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def as_float(x, name: str) -> jax.Array:
    """`x` as a float array: integers and bools to the default float, float16/bfloat16 to float32."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    elif jnp.finfo(x.dtype).bits < 32:
        x = x.astype(jnp.float32)
    return x


def check_samples(x, name: str = "x", min_samples: int = 2) -> jax.Array:
    """Validate a samples array shaped `(..., n, d)` and return it as a float array.

    Raises:
      ValueError: rank < 2, fewer than `min_samples` samples, no units, or (when concrete) NaN/Inf.
    """
    x = as_float(x, name)
    if x.ndim < 2:
        raise ValueError(
            f"`{name}` must have shape (..., n, d): n samples on axis -2 and d units on axis -1; got "
            f"shape {x.shape}. For a single unit pass x[:, None]; flatten activations (b, h, w, c) "
            "to (b*h*w, c)."
        )
    n, d = x.shape[-2], x.shape[-1]
    if n < min_samples:
        raise ValueError(
            f"`{name}` has {n} sample(s) on axis -2 (shape {x.shape}); at least {min_samples} are "
            "needed to estimate second moments. Pass more samples, or check that samples are on "
            "axis -2 and units on axis -1."
        )
    if d < 1:
        raise ValueError(f"`{name}` has no units on axis -1 (shape {x.shape}).")
    check_finite(x, name)
    return x


def check_finite(x: jax.Array, name: str) -> None:
    if is_concrete(x) and not bool(jnp.all(jnp.isfinite(x))):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
        raise ValueError(
            f"`{name}` contains {bad} NaN or Inf value(s). Remove or impute them before computing "
            "redundancy (a NaN in activations usually means the training step diverged)."
        )


def check_square(m, name: str) -> jax.Array:
    m = as_float(m, name)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(
            f"`{name}` must be a square matrix shaped (..., d, d); got shape {m.shape}."
        )
    check_finite(m, name)
    return m


def correlation_tolerance(dtype) -> float:
    """Tolerance of the correlation-matrix checks: 1000 machine epsilons (1.2e-4 in float32)."""
    return 1000 * float(jnp.finfo(dtype).eps)


def correlation_violation(corr: jax.Array) -> jax.Array:
    """Per matrix `(...)`: True where `corr` is not a correlation matrix within the tolerance.

    A correlation matrix is finite, has a unit diagonal, is symmetric and is positive semidefinite;
    the PSD test allows eigenvalues down to `-tol * d` (round-off of an estimated, possibly singular
    matrix). Traceable: used under `jit` to return NaN for such input.
    """
    tol = correlation_tolerance(corr.dtype)
    d = corr.shape[-1]
    finite = jnp.all(jnp.isfinite(corr), axis=(-2, -1))
    corr = jnp.where(finite[..., None, None], corr, jnp.eye(d, dtype=corr.dtype))
    diag = jnp.diagonal(corr, axis1=-2, axis2=-1)
    bad_diag = jnp.any(jnp.abs(diag - 1) > tol, axis=-1)
    bad_sym = jnp.any(jnp.abs(corr - jnp.swapaxes(corr, -1, -2)) > tol, axis=(-2, -1))
    sym = 0.5 * (corr + jnp.swapaxes(corr, -1, -2))
    safe = jnp.where((bad_diag | bad_sym)[..., None, None], jnp.eye(d, dtype=corr.dtype), sym)
    bad_psd = jnp.linalg.eigvalsh(safe)[..., 0] < -tol * d
    return ~finite | bad_diag | bad_sym | bad_psd


def check_correlation(corr, name: str = "corr") -> jax.Array:
    """Validate correlation matrices `(..., d, d)` (square, finite; when concrete: unit diagonal,
    symmetric, PSD within `correlation_tolerance`) and return them as a float array.

    Raises:
      ValueError: naming what is wrong and how to get a correlation matrix from a covariance.
    """
    corr = check_square(corr, name)
    if not is_concrete(corr):
        return corr
    c = np.asarray(corr, dtype=np.float64)
    tol = correlation_tolerance(corr.dtype)
    d = c.shape[-1]
    fix = (
        "Pass a correlation matrix (unit diagonal, symmetric, positive semidefinite): from a "
        "covariance S use `correlation_from_covariance(S)`, from samples `correlation(x)`."
    )
    diag = np.diagonal(c, axis1=-2, axis2=-1)
    if np.any(np.abs(diag - 1) > tol):
        worst = float(diag.flat[np.argmax(np.abs(diag - 1))])
        raise ValueError(f"`{name}` has a diagonal entry {worst:.6g}, not 1. {fix}")
    asym = float(np.max(np.abs(c - np.swapaxes(c, -1, -2))))
    if asym > tol:
        raise ValueError(f"`{name}` is not symmetric (max |C - C^T| = {asym:.3g}). {fix}")
    lam_min = float(np.min(np.linalg.eigvalsh(c)))
    if lam_min < -tol * d:
        raise ValueError(
            f"`{name}` is not positive semidefinite (smallest eigenvalue {lam_min:.3g}). {fix}"
        )
    return corr
