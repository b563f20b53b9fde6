"""Variational (Fenchel-dual) lower bound on R_f from samples, with a trained critic.

References: Bi, Zhu & Calhoun (2025), Def. 1 (R_f = D_f(P_X || Pi_X)); Nguyen, Wainwright & Jordan,
"Estimating divergence functionals and the likelihood ratio by convex risk minimization", IEEE
Trans. Inf. Theory 56 (2010), and Nowozin, Cseke & Tomioka, "f-GAN" (NeurIPS 2016), eq. 4:

    R_f(X) = sup_T  E_P[T(X)] - E_Pi[f*(T(X))]   >=   the same for any critic T,

with f* the kernel's convex conjugate (`FKernel.conjugate`). The supremum is attained at
T = f'(p / Pi) (for KL, T = 1 + log L: the NWJ bound). Samples of Pi_X are the data with every unit
shuffled independently across the batch.

This is the one estimator of `redundax.functionals` that trains something: a small Flax NNX MLP
critic fitted with optax (Adam) on a training split, early-stopped on a validation split, and
evaluated on held-out samples. Its output passes through an activation that keeps T inside the
conjugate's domain (f-GAN, Table 2): identity for `kl`, `pearson_chi2` and power kernels with
alpha > 1, 1 - e^{-v} for `squared_hellinger`, (log 2 - softplus(-v)) / 2 for `jensen_shannon`,
tanh(v) / 2 for `total_variation`, 1/(1 - alpha) - softplus(-v) for `renyi(alpha < 1)`; v is
clipped at 12 in the open-bounded ones so that float32 round-off never reaches the boundary (f* = inf).

Bias and failure modes. The held-out value estimates a lower bound: a critic that is not the
optimum, too small, or under-trained underestimates R_f (never overestimates it in expectation).
The gap and the variance grow with the true value: the bound's Pi-term averages f*(T) at the
likelihood ratio, whose tails get heavy when R_f is large (for KL the variance of the NWJ bound grows
like e^{R_KL}; McAllester & Stratos 2020 show any such distribution-free lower bound needs
exp(R) samples). Measured with the defaults (critic (32, 32), 2 * 10^4 samples, half for training)
on a bivariate Gaussian: true KL 1, 2, 4, 8 nats -> 0.98, 1.99, 3.93, 4.34. It saturates for
near-deterministic dependence (near-duplicate units); more units with the same TC are harder than
two. There the Gaussian closed form (if Gaussianity is plausible) or KSG (6.98 at 8 nats with 5000
samples) is the better tool. The interval is a bootstrap over held-out samples for the fitted
critic: it does not include the variability of training.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from redundax.functionals import _checks
from redundax.functionals.bootstrap import Interval, bootstrap_interval
from redundax.functionals.fdiv import FKernel, get_kernel

Array = jax.Array

# Activations with an open upper bound c (c - e^{-v}, c - softplus(-v)) round to exactly c in float32
# for v > ~17, where f* is infinite; clipping v at 12 keeps T at least ~6e-6 inside the domain.
_V_MAX = 12.0


class Critic(nnx.Module):
    """MLP critic T: R^d -> R (GELU hidden layers, scalar output)."""

    def __init__(self, d: int, hidden: tuple[int, ...] = (64, 64), *, rngs: nnx.Rngs):
        layers = []
        width = d
        for h in hidden:
            layers += [nnx.Linear(width, h, rngs=rngs), jax.nn.gelu]
            width = h
        layers.append(nnx.Linear(width, 1, rngs=rngs))
        self.net = nnx.Sequential(*layers)

    def __call__(self, x: Array) -> Array:
        return self.net(x)[..., 0]


class VariationalEstimate(NamedTuple):
    """Held-out lower bound on R_f with its bootstrap interval, and the training record.

    Attributes:
      interval: `Interval(estimate, low, high, std)` on the test split (nats for `kl`).
      valid: best validation bound (the early-stopping criterion).
      steps: optimizer steps taken up to the best validation bound.
      history: validation bound after every `eval_every` steps.
      critic: the trained critic (best validation state).
    """

    interval: Interval
    valid: float
    steps: int
    history: np.ndarray
    critic: Critic


def output_activation(kernel: FKernel) -> Callable[[Array], Array]:
    """Map R -> the domain of `kernel.conjugate` (f-GAN, Table 2); see the module docstring."""
    name = kernel.name
    if name in ("kl", "pearson_chi2"):
        return lambda v: v
    if name == "squared_hellinger":
        return lambda v: -jnp.expm1(-jnp.minimum(v, _V_MAX))
    if name == "jensen_shannon":
        return lambda v: 0.5 * (math.log(2.0) - jax.nn.softplus(-jnp.minimum(v, _V_MAX)))
    if name == "total_variation":
        return lambda v: 0.5 * jnp.tanh(v)
    if kernel.alpha is not None:
        if kernel.alpha > 1:
            return lambda v: v
        top = 1.0 / (1.0 - kernel.alpha)
        return lambda v: top - jax.nn.softplus(-jnp.minimum(v, _V_MAX))
    with jax.ensure_compile_time_eval():
        finite = bool(jnp.all(jnp.isfinite(kernel.conjugate(jnp.asarray([-1e3, 1e3])))))
    if finite:
        return lambda v: v
    raise ValueError(
        f"Kernel {name!r}: its conjugate is infinite on part of the real line, so the critic needs "
        "an output activation into its domain; pass `activation=` (e.g. lambda v: c - softplus(-v) "
        "for a domain s < c)."
    )


def shuffle_units(key: Array, x: Array) -> Array:
    """Samples of the product of marginals: each unit (column) permuted independently over rows."""
    order = jnp.argsort(jax.random.uniform(key, x.shape), axis=0)
    return jnp.take_along_axis(x, order, axis=0)


def _split(n: int, train_fraction: float, valid_fraction: float) -> tuple[int, int]:
    if not (
        0 < train_fraction < 1 and 0 < valid_fraction < 1 and train_fraction + valid_fraction < 1
    ):
        raise ValueError(
            "`train_fraction` and `valid_fraction` must be in (0, 1) with a sum below 1 (the rest is "
            f"the test split); got {train_fraction} and {valid_fraction}."
        )
    n_train = int(n * train_fraction)
    n_valid = int(n * valid_fraction)
    if min(n_train, n_valid, n - n_train - n_valid) < 16:
        raise ValueError(
            f"`x` has {n} samples: too few for train/valid/test splits of at least 16 samples each "
            "(a variational estimate needs thousands)."
        )
    return n_train, n_valid


@functools.partial(jax.jit, static_argnums=(2, 3))
def _prepare(x: Array, key: Array, n_train: int, n_valid: int) -> tuple[Array, Array, Array]:
    """Shuffle rows, split train/valid/test, standardise all with the training mean and std."""
    x = x[jax.random.permutation(key, x.shape[0])]
    train, valid, test = x[:n_train], x[n_train : n_train + n_valid], x[n_train + n_valid :]
    mean, std = jnp.mean(train, 0), jnp.std(train, 0)
    std = jnp.where(std > 0, std, 1.0)
    return tuple((s - mean) / std for s in (train, valid, test))


def variational_redundancy(
    x,
    kernel: FKernel | str = "kl",
    *,
    key: Array,
    hidden: tuple[int, ...] = (64, 64),
    learning_rate: float = 1e-3,
    batch_size: int = 512,
    max_steps: int = 4000,
    eval_every: int = 100,
    patience: int = 5,
    train_fraction: float = 0.5,
    valid_fraction: float = 0.25,
    num_shuffles: int = 8,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    activation: Callable[[Array], Array] | None = None,
) -> VariationalEstimate:
    """Fenchel-dual lower bound on R_f(X) from samples `x` `(n, d)`, with a bootstrap interval.

    Trains `Critic` to maximise E_P[T] - E_Pi[f*(T)] (module docstring) on minibatches of the training
    split (Pi samples: the minibatch with each unit shuffled), keeps the critic with the best bound on
    the validation split (checked every `eval_every` steps; stops after `patience` checks without
    improvement), and reports the bound on the test split with a bootstrap interval over test samples.
    Units are standardised with the training split's mean and std. Not jit-able as a whole (a Python
    loop over jitted chunks of `eval_every` steps); not differentiable with respect to `x`.

    Args:
      x: samples `(n, d)`, d >= 2.
      kernel: an `FKernel` or kernel name; its `conjugate` defines the bound.
      key: PRNG key (split, critic init, minibatches, shuffles, bootstrap).
      hidden: critic hidden widths.
      learning_rate, batch_size, max_steps, eval_every, patience: Adam training and early stopping.
      train_fraction, valid_fraction: split sizes (the rest is the test split).
      num_shuffles: independent shuffles averaged in the Pi-term on validation and test splits.
      num_resamples, confidence: bootstrap interval on the test split.
      activation: map from the critic's raw output into the conjugate's domain (default by kernel).

    Raises:
      ValueError: bad shapes, too few samples, an unknown kernel, bad split fractions.
    """
    kern = get_kernel(kernel)
    act = output_activation(kern) if activation is None else activation
    x = _checks.check_samples(x, "x")
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"`x` must be one sample matrix (n, d) with d >= 2; got shape {x.shape}.")
    if min(batch_size, max_steps, eval_every, patience, num_shuffles) < 1:
        raise ValueError(
            "`batch_size`, `max_steps`, `eval_every`, `patience` and `num_shuffles` must be >= 1."
        )
    n, d = x.shape
    n_train, n_valid = _split(n, train_fraction, valid_fraction)
    k_split, k_init, k_train, k_eval, k_boot = jax.random.split(key, 5)
    train, valid, test = _prepare(x, k_split, n_train, n_valid)
    batch = min(batch_size, n_train)

    def init(k):
        return nnx.split(Critic(d, tuple(hidden), rngs=nnx.Rngs(params=k)))[1]

    graphdef = nnx.split(nnx.eval_shape(lambda: Critic(d, tuple(hidden), rngs=nnx.Rngs(0))))[0]
    tx = optax.adam(learning_rate)
    params = jax.jit(init)(k_init)
    opt_state = jax.jit(tx.init)(params)

    def critic(p, z):
        return act(nnx.merge(graphdef, p)(z))

    def neg_bound(p, data, key):
        k_rows, k_shuffle = jax.random.split(key)
        xb = data[jax.random.randint(k_rows, (batch,), 0, n_train)]
        return -(
            jnp.mean(critic(p, xb))
            - jnp.mean(kern.conjugate(critic(p, shuffle_units(k_shuffle, xb))))
        )

    @jax.jit
    def train_chunk(p, s, data, key):
        def step(carry, k):
            p, s = carry
            grads = jax.grad(neg_bound)(p, data, k)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, s), _ = jax.lax.scan(step, (p, s), jax.random.split(key, eval_every))
        return p, s

    def value(t):
        return jnp.mean(t[:, 0]) - jnp.mean(t[:, 1])

    @jax.jit
    def terms(p, z, key):
        """Per-sample (T(z_i), mean over shuffles of f*(T(shuffled z)_i)), shape (m, 2); bound."""
        keys = jax.random.split(key, num_shuffles)
        pi = jax.vmap(lambda k: kern.conjugate(critic(p, shuffle_units(k, z))))(keys)
        t = jnp.stack([critic(p, z), jnp.mean(pi, 0)], axis=1)
        return t, value(t)

    best, best_params, best_step, history, since = -jnp.inf, params, 0, [], 0
    num_chunks = max(1, max_steps // eval_every)
    for i, k in enumerate(jax.random.split(k_train, num_chunks)):
        params, opt_state = train_chunk(params, opt_state, train, k)
        v = float(terms(params, valid, k_eval)[1])
        history.append(v)
        if math.isfinite(v) and v > best:
            best, best_params, best_step, since = v, params, (i + 1) * eval_every, 0
        else:
            since += 1
            if since >= patience:
                break

    t_test = terms(best_params, test, jax.random.fold_in(k_eval, 1))[0]
    interval = bootstrap_interval(
        value, t_test, key=k_boot, num_resamples=num_resamples, confidence=confidence
    )
    return VariationalEstimate(
        interval=interval,
        valid=float(best),
        steps=best_step,
        history=np.asarray(history),
        critic=nnx.merge(graphdef, best_params),
    )


__all__ = [
    "Critic",
    "VariationalEstimate",
    "output_activation",
    "shuffle_units",
    "variational_redundancy",
]
