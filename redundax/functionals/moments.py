"""Mergeable moment statistics, covariance and correlation.

`Moments` holds the count, mean and co-moment (sum of centred outer products) of a set of samples. Two
`Moments` merge exactly (Chan, Golub & LeVeque's pairwise update), so any covariance-based functional can
be evaluated over an epoch (`jax.lax.scan` carry), over devices (`Moments.psum` inside `shard_map`) or
over hosts (merge the host results). Under plain `jax.jit` on a sharded global batch no merging is
needed: `covariance(x)` already is the global statistic.

Conventions (shared by every functional in `redundax.functionals`): samples `x` are shaped `(..., n, d)`,
n samples on axis -2 and d units on axis -1; leading axes are batch axes.

Zero-variance units. A unit whose variance is at the round-off floor of its mean (constant over the
batch) has no defined correlation. `correlation` treats it as independent of every other unit: its row
and column are 0 off the diagonal and 1 on it. Gradients through that unit are 0, never NaN. A batch
with no variance at all therefore has correlation I (zero Gaussian total correlation and chi-square
redundancy).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from redundax.functionals import _checks

_HIGHEST = jax.lax.Precision.HIGHEST


def gram_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """`a^T b` over the sample axis: (..., n, i), (..., n, j) -> (..., i, j), full float precision."""
    return jnp.einsum("...ni,...nj->...ij", a, b, precision=_HIGHEST)


@jax.custom_vjp
def self_gram(a: jax.Array) -> jax.Array:
    """`a^T a` over the sample axis, (..., n, i) -> (..., i, i), full float precision.

    Its VJP uses the symmetry of the output: one matmul a (g + g^T) instead of the two that autodiff
    of a generic product emits (halves the backward cost of every covariance-based loss).
    """
    return gram_t(a, a)


def _self_gram_fwd(a):
    return gram_t(a, a), a


def _self_gram_bwd(a, g):
    sym = g + jnp.swapaxes(g, -1, -2)
    return (jnp.einsum("...ni,...ij->...nj", a, sym, precision=_HIGHEST),)


self_gram.defvjp(_self_gram_fwd, _self_gram_bwd)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Moments:
    """Count, mean and co-moment of samples; a pytree (scan carry, reducible across devices).

    Attributes:
      count: number of samples, shape `batch` (float, so that it flows through `psum`).
      mean: shape `batch + (d,)`.
      comoment: sum over samples of the centred outer product, shape `batch + (d, d)`.
    """

    count: jax.Array
    mean: jax.Array
    comoment: jax.Array

    @classmethod
    def from_samples(cls, x) -> Moments:
        """Moments of samples `x` shaped `(..., n, d)` (one sample suffices here)."""
        x = _checks.check_samples(x, "x", min_samples=1)
        n = x.shape[-2]
        mean = jnp.mean(x, axis=-2)
        xc = x - mean[..., None, :]
        count = jnp.full(x.shape[:-2], n, dtype=x.dtype)
        return cls(count=count, mean=mean, comoment=self_gram(xc))

    @classmethod
    def zeros(cls, d: int, batch_shape: tuple[int, ...] = (), dtype=jnp.float32) -> Moments:
        """The empty statistic: the identity of `merge` (an initial `scan` carry)."""
        return cls(
            count=jnp.zeros(batch_shape, dtype),
            mean=jnp.zeros((*batch_shape, d), dtype),
            comoment=jnp.zeros((*batch_shape, d, d), dtype),
        )

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both sample sets (exact, order-independent up to round-off)."""
        n = self.count + other.count
        safe_n = jnp.where(n > 0, n, 1)
        delta = other.mean - self.mean
        w_other = (other.count / safe_n)[..., None]
        mean = self.mean + delta * w_other
        cross = (self.count * other.count / safe_n)[..., None, None]
        comoment = (
            self.comoment + other.comoment + cross * delta[..., :, None] * delta[..., None, :]
        )
        return Moments(count=n, mean=mean, comoment=comoment)

    def psum(self, axis_name) -> Moments:
        """All-reduce over a mapped axis (inside `jax.shard_map` / `pmap`): the global moments."""
        n = jax.lax.psum(self.count, axis_name)
        safe_n = jnp.where(n > 0, n, 1)
        mean = jax.lax.psum(self.count[..., None] * self.mean, axis_name) / safe_n[..., None]
        delta = self.mean - mean
        local = (
            self.comoment + self.count[..., None, None] * delta[..., :, None] * delta[..., None, :]
        )
        return Moments(count=n, mean=mean, comoment=jax.lax.psum(local, axis_name))

    def covariance(self, ddof: int = 1) -> jax.Array:
        """Sample covariance `comoment / (count - ddof)`, shape `(..., d, d)`."""
        denom = jnp.maximum(self.count - ddof, 1)
        return self.comoment / denom[..., None, None]

    def correlation(self) -> jax.Array:
        """Correlation matrix; zero-variance units are independent (see the module docstring)."""
        return correlation_from_covariance(self.covariance(), self.mean)


def covariance(x, ddof: int = 1) -> jax.Array:
    """Sample covariance of `x` shaped `(..., n, d)` -> `(..., d, d)` (denominator n - ddof).

    Raises:
      ValueError: `ddof` is not in [0, n) (the denominator n - ddof must be positive).
    """
    x = _checks.check_samples(x, "x")
    n = x.shape[-2]
    if not 0 <= ddof < n:
        raise ValueError(
            f"`ddof` must be in [0, n) for n = {n} samples (denominator n - ddof > 0); got "
            f"ddof={ddof}. Use ddof=1 (unbiased) or ddof=0 (maximum likelihood)."
        )
    return Moments.from_samples(x).covariance(ddof)


def correlation(x) -> jax.Array:
    """Pearson correlation matrix of `x` shaped `(..., n, d)` -> `(..., d, d)`.

    Zero-variance units get a unit diagonal and zero off-diagonal entries (module docstring).
    """
    x = _checks.check_samples(x, "x")
    return Moments.from_samples(x).correlation()


def unit_scale(var: jax.Array, mean: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(inv_std, ok)`: 1/sqrt(var) for units above the round-off floor of their mean, else 0.

    The floor is `(16 eps |mean|)^2 + tiny`: the variance that centring alone leaves in a constant
    unit. Written with the double-`where` so that the gradient is 0 (not NaN) for constant units.
    """
    finfo = jnp.finfo(var.dtype)
    floor = (16 * finfo.eps * jnp.abs(mean)) ** 2 + finfo.tiny / finfo.eps
    ok = var > floor
    inv_std = jnp.where(ok, jax.lax.rsqrt(jnp.where(ok, var, 1)), 0)
    return inv_std, ok


def correlation_from_covariance(cov: jax.Array, mean: jax.Array | None = None) -> jax.Array:
    """Correlation from a covariance `(..., d, d)`; `mean` sets the zero-variance floor (optional)."""
    var = jnp.diagonal(cov, axis1=-2, axis2=-1)
    inv_std, _ = unit_scale(var, jnp.zeros_like(var) if mean is None else mean)
    corr = cov * inv_std[..., :, None] * inv_std[..., None, :]
    eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
    return jnp.clip(corr, -1, 1) * (1 - eye) + eye


def standardize(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(z, ok)`: centred samples scaled so that `z^T z` is the correlation off the diagonal.

    `z = (x - mean) / (std * sqrt(n - 1))`, with zero columns for zero-variance units (`ok` False);
    `z^T z` has a unit diagonal at the `ok` units. Used by the Gram-matrix (n < d) paths.
    """
    n = x.shape[-2]
    mean = jnp.mean(x, axis=-2)
    xc = x - mean[..., None, :]
    var = jnp.sum(xc * xc, axis=-2) / (n - 1)
    inv_std, ok = unit_scale(var, mean)
    return xc * (inv_std / jnp.sqrt(jnp.asarray(n - 1, x.dtype)))[..., None, :], ok
