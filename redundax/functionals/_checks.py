"""Input validation shared by the functionals.

Checks on *values* (finite samples, a normalised probability table) can only run when the array is
concrete. Under `jax.jit` the arrays are tracers: shape checks still run at trace time, value checks are
skipped, and NaN/Inf inputs propagate to NaN outputs as in any jnp code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds values on the host side of tracing (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)


def as_float(x, name: str) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
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
