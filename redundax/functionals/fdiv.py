"""f-divergence redundancy R_f: kernels, exact values on discrete tables, Gaussian closed forms.

Reference: Bi, Zhu & Calhoun (2025), Definition 1 (eq. 1), Remark 1, Propositions 1-5:

    R_f(X) = D_f(P_X || Pi_X) = E_{Pi_X}[ f( p(x) / prod_i p_i(x_i) ) ],

with f convex on (0, inf) and f(1) = 0. Each kernel carries its generator f and its convex conjugate
f*(s) = sup_{t>0} (s t - f(t)) (the Legendre-Fenchel dual used by variational estimators such as
f-GAN / MINE-style lower bounds D_f >= sup_T E_P[T] - E_Q[f*(T)]).

Kernels (generator f, conjugate f*; outside the conjugate's domain f* = +inf):

| name              | f(t)                                   | f*(s)                                   |
|-------------------|----------------------------------------|-----------------------------------------|
| kl                | t log t                                | exp(s - 1)                              |
| pearson_chi2      | 1/2 (t - 1)^2  (the paper's convention)| s + s^2/2 for s >= -1, else -1/2        |
| squared_hellinger | (sqrt t - 1)^2                         | s / (1 - s) for s < 1                   |
| jensen_shannon    | 1/2 [t log t - (1+t) log((1+t)/2)]      | -1/2 log(2 - e^{2s}) for s < log(2)/2   |
| total_variation   | 1/2 |t - 1|                            | max(s, -1/2) for s <= 1/2               |
| renyi(alpha)      | (t^a - a t + a - 1) / (a (a - 1))      | see `renyi`                             |

`renyi(alpha)` is the power (alpha-divergence) kernel behind the Renyi family: its R_f is
(E_Pi[L^alpha] - 1) / (alpha (alpha - 1)) with L the likelihood ratio, and the Renyi divergence of order
alpha is D_alpha = log(1 + alpha (alpha - 1) R_f) / (alpha - 1) (`renyi_divergence`). alpha = 2 is
`pearson_chi2`, alpha = 1/2 is half of `squared_hellinger`, alpha -> 1 recovers KL.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from redundax.functionals import _checks

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FKernel:
    """A redundancy kernel: convex generator `f` with f(1) = 0 and its convex conjugate.

    Attributes:
      name: identifier (`get_kernel(name)` finds the built-in ones).
      f: elementwise generator on t >= 0 (t = 0 is the limit f(0+), used where p = 0 < q).
      conjugate: elementwise convex conjugate f*(s) (+inf outside its domain).
      gaussian: optional closed form of R_f for a Gaussian vector as a function of its correlation
        matrix `(..., d, d)`; None when there is none.
      alpha: the order of a power kernel, else None.

    Construction checks f(1) = 0 and midpoint convexity on a grid, and raises ValueError otherwise
    (`check=False` skips it: the built-in kernels are checked by the tests, so importing the module
    does not start a JAX backend, which would break a later `jax.distributed.initialize`).
    """

    name: str
    f: Callable[[Array], Array]
    conjugate: Callable[[Array], Array]
    gaussian: Callable[[Array], Array] | None = None
    alpha: float | None = None
    check: dataclasses.InitVar[bool] = True

    def __post_init__(self, check: bool):
        if not check:
            return
        with jax.ensure_compile_time_eval():
            f1 = float(self.f(jnp.asarray(1.0, jnp.float32)))
            if not math.isfinite(f1) or abs(f1) > 1e-6:
                raise ValueError(
                    f"Kernel {self.name!r}: the generator `f` must satisfy f(1) = 0, got f(1) = {f1}. "
                    "Subtract f(1) (and optionally f'(1) (t - 1)) from your generator."
                )
            t = jnp.asarray(np.geomspace(1e-3, 1e3, 61), jnp.float32)
            ft = self.f(t)
            mid = self.f(0.5 * (t[:-1] + t[1:]))
            chord = 0.5 * (ft[:-1] + ft[1:])
            if not bool(jnp.all(mid <= chord + 1e-4 * (1 + jnp.abs(chord)))):
                raise ValueError(
                    f"Kernel {self.name!r}: the generator `f` is not convex on (0, inf) (midpoint "
                    "test failed); an f-divergence needs a convex f."
                )


def _kl_f(t):
    return xlogy(t, t)


def _pearson_f(t):
    return 0.5 * (t - 1.0) ** 2


def _pearson_conj(s):
    return jnp.where(s >= -1.0, s + 0.5 * s * s, -0.5)


def _hellinger_f(t):
    return (jnp.sqrt(t) - 1.0) ** 2


def _hellinger_conj(s):
    return jnp.where(s < 1.0, s / jnp.where(s < 1.0, 1.0 - s, 1.0), jnp.inf)


def _js_f(t):
    return 0.5 * (xlogy(t, t) - xlogy(1.0 + t, 0.5 * (1.0 + t)))


def _js_conj(s):
    ok = s < 0.5 * math.log(2.0)
    return jnp.where(ok, -0.5 * jnp.log(2.0 - jnp.exp(jnp.where(ok, 2.0 * s, 0.0))), jnp.inf)


def _tv_f(t):
    return 0.5 * jnp.abs(t - 1.0)


def _tv_conj(s):
    return jnp.where(s <= 0.5, jnp.maximum(s, -0.5), jnp.inf)


def _eig_corr(corr: Array) -> Array:
    corr = _checks.check_square(corr, "corr")
    return jnp.linalg.eigvalsh(corr)


def _log_mgf_power(mu: Array, alpha: float) -> Array:
    """log E_Pi[L^alpha] for a Gaussian with correlation eigenvalues mu (inf outside the domain).

    E_Pi[L^alpha] = det(C)^{(1-alpha)/2} det(alpha I + (1 - alpha) C)^{-1/2}, finite iff
    alpha I + (1 - alpha) C is positive definite.
    """
    a = alpha + (1.0 - alpha) * mu
    ok = jnp.all(a > 0, axis=-1) & jnp.all(mu > 0, axis=-1)
    safe_mu = jnp.where(mu > 0, mu, 1.0)
    safe_a = jnp.where(a > 0, a, 1.0)
    val = 0.5 * (1.0 - alpha) * jnp.sum(jnp.log(safe_mu), -1) - 0.5 * jnp.sum(jnp.log(safe_a), -1)
    return jnp.where(ok, val, jnp.inf)


def _gauss_kl(corr: Array) -> Array:
    mu = _eig_corr(corr)
    ok = jnp.all(mu > 0, axis=-1)
    return jnp.where(ok, -0.5 * jnp.sum(jnp.log(jnp.where(mu > 0, mu, 1.0)), -1), jnp.inf)


def _gauss_power(corr: Array, alpha: float) -> Array:
    log_m = _log_mgf_power(_eig_corr(corr), alpha)
    return jnp.expm1(log_m) / (alpha * (alpha - 1.0))


kl = FKernel("kl", _kl_f, lambda s: jnp.exp(s - 1.0), gaussian=_gauss_kl, check=False)
pearson_chi2 = FKernel(
    "pearson_chi2",
    _pearson_f,
    _pearson_conj,
    gaussian=functools.partial(_gauss_power, alpha=2.0),
    check=False,
)
squared_hellinger = FKernel(
    "squared_hellinger",
    _hellinger_f,
    _hellinger_conj,
    gaussian=lambda corr: 0.5 * _gauss_power(corr, 0.5),
    check=False,
)
jensen_shannon = FKernel("jensen_shannon", _js_f, _js_conj, check=False)
total_variation = FKernel("total_variation", _tv_f, _tv_conj, check=False)


def renyi(alpha: float) -> FKernel:
    """Power kernel of order alpha > 0, alpha != 1: f(t) = (t^a - a t + a - 1) / (a (a - 1)).

    Its R_f is the alpha-divergence from independence; `renyi_divergence(R_f, alpha)` converts it to
    the Renyi divergence of order alpha. The conjugate, with u = 1 + (a - 1) s, is
    f*(s) = (u^{a/(a-1)} - 1) / a for u > 0; outside (u <= 0) it is -f(0) = -1/a when a > 1 and
    +inf when a < 1. Gaussian closed form: (E_Pi[L^a] - 1)/(a (a - 1)) with
    E_Pi[L^a] = det(C)^{(1-a)/2} det(a I + (1 - a) C)^{-1/2} (inf where that matrix is not PD).
    """
    alpha = float(alpha)
    if not alpha > 0 or alpha == 1.0 or not math.isfinite(alpha):
        raise ValueError(
            f"`alpha` must be a finite order > 0 and != 1, got {alpha}; alpha -> 1 is the `kl` kernel."
        )
    a = alpha

    def f(t):
        # (t^a - a t + a - 1) / (a (a - 1)) written as [t expm1((a-1) log t)/(a-1) - (t-1)] / a: no
        # cancellation as a -> 1, where it tends to t log t - t + 1 (the KL kernel up to a linear term).
        pos = t > 0
        safe_t = jnp.where(pos, t, 1.0)
        b = a - 1.0
        inner = safe_t * jnp.expm1(b * jnp.log(safe_t)) / b - (safe_t - 1.0)
        return jnp.where(pos, inner / a, 1.0 / a)

    def conj(s):
        u = 1.0 + (a - 1.0) * s
        ok = u > 0
        inside = (jnp.where(ok, u, 1.0) ** (a / (a - 1.0)) - 1.0) / a
        outside = -1.0 / a if a > 1 else jnp.inf
        return jnp.where(ok, inside, outside)

    return FKernel(
        f"renyi({alpha:g})", f, conj, gaussian=functools.partial(_gauss_power, alpha=a), alpha=a
    )


def renyi_divergence(value, alpha: float) -> Array:
    """Renyi divergence of order alpha from the power-kernel R_f: log(1 + a(a-1) R_f) / (a - 1)."""
    return jnp.log1p(alpha * (alpha - 1.0) * jnp.asarray(value)) / (alpha - 1.0)


_NAMED = {
    "kl": kl,
    "pearson_chi2": pearson_chi2,
    "chi2": pearson_chi2,
    "squared_hellinger": squared_hellinger,
    "hellinger": squared_hellinger,
    "jensen_shannon": jensen_shannon,
    "js": jensen_shannon,
    "total_variation": total_variation,
    "tv": total_variation,
}


def get_kernel(kernel: FKernel | str) -> FKernel:
    """A kernel object from itself or its name (`"kl"`, `"pearson_chi2"`, `"renyi(2)"`, ...)."""
    if isinstance(kernel, FKernel):
        return kernel
    if isinstance(kernel, str):
        key = kernel.strip().lower()
        if key in _NAMED:
            return _NAMED[key]
        if key.startswith("renyi(") and key.endswith(")"):
            try:
                alpha = float(key[6:-1])
            except ValueError:
                pass
            else:
                return renyi(alpha)
    known = ", ".join(sorted({k.name for k in _NAMED.values()}))
    raise ValueError(
        f"Unknown redundancy kernel {kernel!r} for `kernel`. Known names: {known}, 'renyi(<alpha>)'; "
        "or pass an FKernel(name, f, conjugate) of your own."
    )


_JOINT_SUM_TOL = 1e-4


def _check_joint(joint) -> Array:
    joint = _checks.as_float(joint, "joint")
    if joint.ndim < 2:
        raise ValueError(
            f"`joint` must be a probability table with one axis per variable (at least 2 axes); got "
            f"shape {joint.shape}."
        )
    _checks.check_finite(joint, "joint")
    if _checks.is_concrete(joint):
        if bool(jnp.any(joint < 0)):
            raise ValueError("`joint` has negative entries; a probability table must be >= 0.")
        total = float(jnp.sum(joint))
        if abs(total - 1.0) > _JOINT_SUM_TOL:
            raise ValueError(
                f"`joint` sums to {total:.6g}, not 1. Normalise it first (joint / joint.sum())."
            )
    return joint


def product_of_marginals(joint: Array) -> Array:
    """Pi_X: the outer product of the marginals of a joint table (same shape)."""
    k = joint.ndim
    prod = jnp.ones((), joint.dtype)
    for i in range(k):
        marginal = jnp.sum(joint, axis=tuple(j for j in range(k) if j != i))
        prod = prod * marginal.reshape((1,) * i + (-1,) + (1,) * (k - i - 1))
    return prod


def f_redundancy(joint, kernel: FKernel | str = "kl") -> Array:
    """Exact R_f (Def. 1, eq. 1) of a discrete joint probability table.

    R_f = sum_x Pi(x) f(p(x) / Pi(x)) over cells with Pi(x) > 0, where Pi is the product of the
    marginals (cells with Pi = 0 have p = 0 and contribute nothing).

    Args:
      joint: probability table with one axis per variable (any number >= 2), nonnegative, summing to 1
        (within 1e-4). Checked when concrete (ValueError); under `jit`, where values cannot be
        checked, a table with a NaN/Inf or negative entry or a sum off 1 gives NaN (never a number).
      kernel: an `FKernel` or a kernel name.
    """
    kern = get_kernel(kernel)
    joint = _check_joint(joint)
    q = product_of_marginals(joint)
    pos = q > 0
    ratio = jnp.where(pos, joint / jnp.where(pos, q, 1.0), 1.0)
    value = jnp.sum(jnp.where(pos, q * kern.f(ratio), 0.0))
    # The masked sum above drops NaN cells (NaN > 0 is False); a table that is not a probability
    # table gives NaN instead of a finite, meaningless number.
    invalid = (
        ~jnp.all(jnp.isfinite(joint))
        | jnp.any(joint < 0)
        | (jnp.abs(jnp.sum(joint) - 1.0) > _JOINT_SUM_TOL)
    )
    return jnp.where(invalid, jnp.nan, value)


def gaussian_f_redundancy(corr, kernel: FKernel | str = "kl") -> Array:
    """Closed-form R_f of a Gaussian vector with correlation matrix `corr` `(..., d, d)`.

    f-divergences are invariant under coordinate-wise invertible maps, so only the correlation matters.
    Closed forms exist for `kl` (-1/2 log det C, Prop. 4), the power kernels `renyi(alpha)` and, as
    special cases, `pearson_chi2` (alpha = 2: 1/2 (det(C (2I - C))^{-1/2} - 1), +inf unless all
    eigenvalues of C are < 2) and `squared_hellinger` (2 (1 - det(C)^{1/4} det((I + C)/2)^{-1/2})).
    Values are +inf where the divergence is infinite (singular C for KL, a non-PD
    alpha I + (1 - alpha) C for power kernels).

    `corr` must be a correlation matrix: unit diagonal, symmetric, positive semidefinite, within
    1000 machine epsilons (a covariance such as 5 I is not one: its "R_f" would be meaningless).
    Checked eagerly (ValueError); under `jit` a matrix that fails the check gives NaN.

    Raises:
      ValueError: the kernel has no Gaussian closed form (`jensen_shannon`, `total_variation`), or
        `corr` is not a correlation matrix.
    """
    kern = get_kernel(kernel)
    if kern.gaussian is None:
        raise ValueError(
            f"Kernel {kern.name!r} has no Gaussian closed form. Use one of kl, pearson_chi2, "
            "squared_hellinger, renyi(alpha), or estimate it with `f_redundancy` on a discretised "
            "joint table."
        )
    corr = _checks.check_correlation(corr, "corr")
    value = kern.gaussian(corr)
    if _checks.is_concrete(corr):
        return value
    return jnp.where(_checks.correlation_violation(corr), jnp.nan, value)


__all__ = [
    "FKernel",
    "f_redundancy",
    "gaussian_f_redundancy",
    "get_kernel",
    "jensen_shannon",
    "kl",
    "pearson_chi2",
    "product_of_marginals",
    "renyi",
    "renyi_divergence",
    "squared_hellinger",
    "total_variation",
]
