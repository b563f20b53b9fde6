"""OGM-GE: on-the-fly gradient modulation with generalisation enhancement (Peng et al., 2022).

For each modality ``u`` let ``s_u`` be the batch mean softmax probability of the true class
computed from ``u``'s share of the fused classifier (for concat fusion, ``z_u W_u + b / M``
with ``W_u`` the rows of the fused head that read ``z_u``). The discrepancy ratio is

    rho_u = s_u / mean_{j != u} s_j        (Peng et al., 2022, Eq. 9 for two modalities)

and the encoder gradients of ``u`` are scaled by

    k_u = 1 - tanh(alpha * rho_u) if rho_u > 1 else 1      (Eq. 10).

Generalisation enhancement (Sec. 3.3) then adds zero-mean Gaussian noise whose standard
deviation is that of the (unscaled) gradient tensor, ``g <- k_u g + N(0, std(g)^2)``, to every
encoder leaf, as in the authors' code (standard deviation with Bessel's correction, plus 1e-8).
Each leaf's noise is drawn with its own key (the step's key folded with the leaf's index),
by default one 32-bit word per element from a keyed counter hash of the element's index
(:data:`redundax.transforms.prng.COUNTER_HASH`) mapped to a normal by the Box-Muller transform
(:func:`redundax.transforms.prng.normal`), all elementwise arithmetic that XLA fuses into the
noisy update; ``normal="inverse_cdf"`` draws ``jax.random.normal`` from Threefry bits, the draws
of earlier versions.
Modulation runs for ``start_step <= t <= end_step`` (the code counts epochs, 0 to 50 by
default).

With two modalities the ratio is the paper's; for ``M > 2`` the denominator is the mean score
of the other modalities (our generalisation). The authors' code modulates 4-D (convolution)
weights only; the paper speaks of the encoder's parameters, which is the default here
(``min_ndim=1``; pass ``min_ndim=4`` for the code's choice).

References:
  Peng, Wei, Deng, Wang, Hu. Balanced Multimodal Learning via On-the-fly Gradient Modulation.
  CVPR 2022.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from redundax.transforms._labels import Labels, check_per_modality, flat_labels, modality_names
from redundax.transforms.prng import COUNTER_HASH, FUSED_THREEFRY
from redundax.transforms.prng import normal as box_muller_normal

PyTree = Any


RNG_IMPLS = {
    "counter_hash": COUNTER_HASH,
    "fused_threefry": FUSED_THREEFRY,
    "threefry2x32": "threefry2x32",
    "rbg": "rbg",
    "unsafe_rbg": "unsafe_rbg",
}
NORMALS = {"box_muller": box_muller_normal, "inverse_cdf": jax.random.normal}
DEFAULT_RNG_IMPL = {"box_muller": "counter_hash", "inverse_cdf": "fused_threefry"}
"""``rng_impl`` used when none is given, per ``normal``."""


class OgmGeState(NamedTuple):
    """State of :func:`ogm_ge`.

    Attributes:
      count: number of updates applied so far (int32).
      key: raw data (``jax.random.key_data``) of the PRNG key of the generalisation-enhancement
        noise, of the ``rng_impl`` given to :func:`ogm_ge`.
      ratio: ``rho_u`` of the last step, per modality.
      coeff: ``k_u`` applied at the last step, per modality (1 outside the modulation window).
    """

    count: jax.Array
    key: jax.Array
    ratio: dict[str, jax.Array]
    coeff: dict[str, jax.Array]


def discrepancy_coefficients(
    scores: jax.Array, alpha: float, eps: float = 1e-12
) -> tuple[jax.Array, jax.Array]:
    """``(rho, k)`` of Eqs. 9-10 for a vector of per-modality scores ``s`` (shape ``(M,)``)."""
    scores = jnp.asarray(scores, jnp.float32)
    n = scores.shape[0]
    others = (jnp.sum(scores) - scores) / (n - 1)
    rho = scores / jnp.maximum(others, eps)
    k = jnp.where(rho > 1.0, 1.0 - jnp.tanh(alpha * rho), 1.0)
    return rho, k


def ogm_ge(
    param_labels: Labels,
    *,
    alpha: float = 0.1,
    noise: bool = True,
    start_step: int = 0,
    end_step: int | None = None,
    seed: int = 0,
    min_ndim: int = 1,
    rng_impl: str | None = None,
    normal: str = "box_muller",
) -> optax.GradientTransformationExtraArgs:
    """Scale each modality's encoder gradients by ``k_u`` and add gradient-matched noise.

    Place it before the optimizer, on raw gradients. ``update`` takes the extra argument
    ``scores``: dict modality -> ``s_u``, the batch mean true-class softmax probability of the
    modality's share of the fused head (sums work too: only ratios matter).

    Args:
      param_labels: a pytree with the structure of the parameters whose leaves are modality
        names or None (shared leaves, never modified), or a function of the parameters
        returning one; at least two modalities.
      alpha: modulation strength (0.1 in the authors' default setting; 0.8 recommended for
        CREMA-D).
      noise: add the generalisation-enhancement noise (OGM-GE); False gives plain OGM.
      start_step: first update (0-based) at which modulation applies.
      end_step: last update at which modulation applies (inclusive); None for no end.
      seed: seed of the noise PRNG key kept in the state.
      min_ndim: modulate only leaves with at least this many dimensions.
      rng_impl: key implementation of the noise (``jax.random.key(seed, impl=...)``):
        ``"counter_hash"`` (a keyed hash of the element index, fused into the update,
        :data:`redundax.transforms.prng.COUNTER_HASH`), ``"fused_threefry"`` (the same draws as
        JAX's default ``"threefry2x32"``, with the bits written as elementwise arithmetic that
        XLA fuses into the update), ``"threefry2x32"``, ``"rbg"`` or ``"unsafe_rbg"`` (XLA's
        ``RngBitGenerator``: fast on GPU and TPU, slow on CPU). None (default) picks
        ``"counter_hash"`` for ``normal="box_muller"`` and ``"fused_threefry"`` for
        ``normal="inverse_cdf"``.
      normal: how the bits become Gaussian noise: ``"box_muller"`` (default;
        :func:`redundax.transforms.prng.normal`, one 32-bit word per normal) or
        ``"inverse_cdf"`` (``jax.random.normal``, the ``erf_inv`` of a uniform: with the default
        ``rng_impl`` the draws of earlier versions).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`OgmGeState`.

    References:
      Peng, Wei, Deng, Wang, Hu. Balanced Multimodal Learning via On-the-fly Gradient
      Modulation. CVPR 2022.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be non-negative; got {alpha!r}.")
    if end_step is not None and end_step < start_step:
        raise ValueError(f"end_step ({end_step}) must be >= start_step ({start_step}) or None.")
    if normal not in NORMALS:
        raise ValueError(f"normal must be one of {tuple(NORMALS)}; got {normal!r}.")
    rng_impl = DEFAULT_RNG_IMPL[normal] if rng_impl is None else rng_impl
    if rng_impl not in RNG_IMPLS:
        raise ValueError(f"rng_impl must be one of {tuple(RNG_IMPLS)} or None; got {rng_impl!r}.")
    impl = RNG_IMPLS[rng_impl]
    draw = NORMALS[normal]

    def init_fn(params: PyTree) -> OgmGeState:
        names = modality_names(flat_labels(param_labels, params))
        ones = {m: jnp.ones((), jnp.float32) for m in names}
        return OgmGeState(
            count=jnp.zeros((), jnp.int32),
            key=jax.random.key_data(jax.random.key(seed, impl=impl)),
            ratio=dict(ones),
            coeff=dict(ones),
        )

    def update_fn(
        updates: PyTree,
        state: OgmGeState,
        params: PyTree | None = None,
        *,
        scores: Mapping[str, Any] | None = None,
        **extra_args: Any,
    ) -> tuple[PyTree, OgmGeState]:
        del extra_args
        flat = flat_labels(param_labels, updates if params is None else params)
        names = modality_names(flat)
        if scores is None:
            raise ValueError("ogm_ge.update needs scores=dict(modality -> s_u).")
        s = check_per_modality(scores, names, "scores")
        s = jnp.stack([jnp.asarray(s[m], jnp.float32).reshape(()) for m in names])
        rho, k = discrepancy_coefficients(s, alpha)
        count = state.count
        active = count >= start_step
        if end_step is not None:
            active = active & (count <= end_step)
        k = jnp.where(active, k, 1.0)
        key = jax.random.wrap_key_data(state.key, impl=impl)
        key, step_key = jax.random.split(key)
        index = {m: i for i, m in enumerate(names)}

        leaves, treedef = jax.tree.flatten(updates)
        out = []
        for i, (label, g) in enumerate(zip(flat, leaves, strict=True)):
            if label is None or jnp.ndim(g) < min_ndim:
                out.append(g)
                continue
            g32 = jnp.asarray(g, jnp.float32)
            new = k[index[label]] * g32
            if noise:
                ddof = 1 if g32.size > 1 else 0
                std = jnp.std(g32, ddof=ddof) + 1e-8
                new = new + std * draw(jax.random.fold_in(step_key, i), g32.shape)
            out.append(jnp.where(active, new.astype(g.dtype), g))

        new_state = OgmGeState(
            count=optax.safe_int32_increment(count),
            key=jax.random.key_data(key),
            ratio={m: rho[index[m]] for m in names},
            coeff={m: k[index[m]] for m in names},
        )
        return treedef.unflatten(out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
