"""RedReg: adaptive redundancy regulation of the dominant modality, as an optax transformation.

RedReg (Yang et al., 2025) regulates multimodal training in three steps, each of which appears
here as a per-step computation on signals that arrive as extra arguments of ``update``:

1. *Redundant phase monitor* (Sec. III-B). For each modality ``m``, ``p_m`` is the batch mean
   of the softmax probability of the true class from ``m``'s unimodal head. Its effective gain
   growth rate compares the mean of the last ``window`` values with the mean of the window one
   step earlier, ``S_m = (mean(p[t-W+1..t]) - mean(p[t-W..t-1])) / |mean(p[t-W..t-1])|``
   (1 until ``window + 1`` values are stored). The redundancy ``red_m`` (perturbation
   sensitivity of the encoder,
   :func:`redundax.functionals.sensitivity.perturbation_sensitivity`) is divided by its
   exponential moving average, and ``r_m = red_m / EMA(red_m) - gamma * max(S_m, 0)``.
2. *Co-information gating* (Sec. III). With ``sim`` the mean cosine similarity between the
   dominant modality's pooled feature and the other modalities' features of the same sample,
   the suppression is kept only when ``sim >= tau(t)``, ``tau`` rising linearly from 0.2 to 0.5
   over training.
3. *Orthogonal suppression* (Sec. III). The dominant modality ``m*`` (largest ``p_m``) gets
   ``beta = exp(beta_scale * tanh(p_{m*} - mean_{j != m*} p_j))`` when ``r_{m*} > trigger`` and
   the gate is open, else 0. For every parameter leaf of ``m*`` with drift
   ``d = theta - theta_anchor`` (``theta_anchor``: the parameters at the start of the current
   period, an epoch in the paper) and incoming gradient ``g``,

       g <- g + beta * (d - (<d, g> / ||g||²) g),

   i.e. the drift's component orthogonal to the gradient is added to the gradient, so that a
   descent step pulls the dominant encoder back toward its anchor only in directions that do
   not change the loss to first order. ``projection="per_modality"`` projects the modality's
   whole flattened parameter vector at once instead of each tensor.

Modalities and leaves: ``param_labels`` maps every parameter leaf to a modality name, or to
None for shared leaves (fusion and unimodal heads); leaves of a modality that is not
suppressed, and shared leaves, pass through bit for bit.

Cost. The reductions ``<d, g>`` and ``||g||²`` run in one ``lax.switch`` branch for the
dominant modality (reading its parameters, anchor and gradient once); the update itself is
elementwise, so XLA fuses it into the optimizer's pass over the gradient, and the anchor is
carried through the state without a copy unless it is reset. A step that suppresses nothing
takes the empty branch.

Rule for ``M >= 2`` modalities. The dominant modality is the one whose ``p_m`` is strictly
largest (a tie means no dominant modality and no suppression); the gap in ``beta`` is to the
mean of the other modalities' ``p``, and ``similarity`` may be one scalar (used as is) or a
dict giving each modality's mean cosine similarity to the others (the dominant modality's entry
is used; :func:`cross_modal_similarity` computes it). With two modalities both rules reduce to
the paper's.

Differences from the reference code (``main_RedReg.py`` of the paper's repository), recorded
here so that results can be compared:

* The gate opens at ``sim >= tau`` as in the paper's text (the code uses ``>``), and ``tau``
  rises per step, ``tau(t) = 0.2 + 0.3 t / (T - 1)``, where the code raises it once per epoch;
  any ``optax`` schedule or constant may be passed instead.
* The redundancy is normalised by its EMA (momentum 0.9) before the growth penalty, as in the
  code; the paper writes ``r_m = red_m - gamma max(S_m, 0)`` with ``red_m`` on its own scale
  (``normalize_redundancy=False``). The EMA starts at 0 without bias correction (as the code),
  so ``red / EMA = 10`` at the first step of a period.
* Monitor histories, EMAs and the anchor restart every ``reset_every`` steps (one epoch in the
  code, where they are local to the epoch loop); ``reset_every=None`` keeps them for the whole
  run.
* The code tests dominance with ``p_a < p_v`` / ``p_v < p_a``; the generalisation above is ours.

References:
  Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
  Information Refinement. arXiv:2511.13755, 2025.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from redundax.functionals.similarity import cross_modal_similarity as cross_modal_similarity
from redundax.transforms._labels import (
    Labels,
    check_per_modality,
    flat_labels,
    modality_names,
)
from redundax.transforms.projection import projection_coefficients

PyTree = Any
Projection = Literal["per_tensor", "per_modality", "none", "scale"]
_PROJECTIONS = ("per_tensor", "per_modality", "none", "scale")


class RedRegState(NamedTuple):
    """State of :func:`redreg`; per-modality fields are dicts keyed by modality name.

    Attributes:
      count: number of updates applied so far (int32).
      anchor: parameters at the start of the current period (``optax.MaskedNode`` for shared
        leaves, which are never suppressed).
      history: the last ``window + 1`` values of ``p_m`` (oldest first).
      history_len: number of valid entries in ``history`` since the last reset (int32).
      ema: exponential moving average of the raw redundancy ``red_m``.
      growth: ``S_m``, the effective gain growth rate of the last step.
      score: ``r_m``, the redundancy score of the last step.
      beta: ``beta_m`` applied at the last step, after the gate (0 for every modality not
        suppressed).
      dominant: index (into the sorted modality names) of the last step's dominant modality,
        -1 if none.
      gate: 1.0 if the co-information gate was open at the last step, else 0.0.
      tau: the gate threshold ``tau(t)`` of the last step.
    """

    count: jax.Array
    anchor: PyTree
    history: dict[str, jax.Array]
    history_len: jax.Array
    ema: dict[str, jax.Array]
    growth: dict[str, jax.Array]
    score: dict[str, jax.Array]
    beta: dict[str, jax.Array]
    dominant: jax.Array
    gate: jax.Array
    tau: jax.Array


def tau_linear(total_steps: int, start: float = 0.2, end: float = 0.5) -> optax.Schedule:
    """``tau(t) = start + (end - start) * min(t / (total_steps - 1), 1)`` (Yang et al., 2025)."""
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int; got {total_steps!r}.")
    return optax.linear_schedule(start, end, transition_steps=max(total_steps - 1, 1))


def _f32(x: jax.Array) -> jax.Array:
    return jnp.asarray(x, jnp.float32)


def _as_scalar(value: Any, arg: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape != ():
        raise ValueError(f"{arg} entries must be scalars; got shape {value.shape}.")
    return value


def redreg(
    param_labels: Labels,
    *,
    total_steps: int | None = None,
    tau: optax.ScalarOrSchedule | None = None,
    window: int = 10,
    ema_decay: float = 0.9,
    gamma: float = 0.6,
    trigger: float = 0.15,
    beta_scale: float = 0.9,
    reset_every: int | None = None,
    reset_monitor: bool = True,
    projection: Projection = "per_tensor",
    use_monitor: bool = True,
    use_gate: bool = True,
    normalize_redundancy: bool = True,
    eps: float = 1e-12,
) -> optax.GradientTransformationExtraArgs:
    """RedReg's redundancy monitor, co-information gate and orthogonal drift suppression.

    Place it before the optimizer, on raw gradients: ``optax.chain(redreg(...),
    optax.add_decayed_weights(1e-4), optax.sgd(lr, momentum=0.9))``. Each ``update`` takes
    the extra keyword arguments

    * ``probs``: dict modality -> ``p_m``, batch mean softmax probability of the true class
      from the modality's unimodal head;
    * ``sensitivity``: dict modality -> raw redundancy ``red_m``
      (:func:`redundax.functionals.sensitivity.perturbation_sensitivity`); not needed when
      ``use_monitor=False``;
    * ``similarity``: cross-modal agreement, a scalar or a dict modality -> scalar
      (:func:`cross_modal_similarity`); not needed when ``use_gate=False``;

    and the current ``params`` (required: the drift is ``params - anchor``).

    Args:
      param_labels: a pytree with the structure of the parameters whose leaves are modality
        names (str) or None for shared leaves, or a function of the parameters returning one.
        At least two modalities.
      total_steps: length of training in updates; sets the default ``tau`` schedule.
      tau: gate threshold, a constant or an ``optax`` schedule of the update count; default
        :func:`tau_linear` ``(total_steps)``, 0.2 rising to 0.5.
      window: ``W``, length of the two sliding windows of ``p_m`` compared by ``S_m``.
      ema_decay: momentum of the EMA that normalises ``red_m``.
      gamma: weight of the growth penalty in ``r_m``.
      trigger: ``R``; the dominant modality is suppressed only when ``r_m > R``.
      beta_scale: ``beta = exp(beta_scale * tanh(gap))``.
      reset_every: period, in updates, after which the anchor is reset to the current
        parameters (an epoch in the paper); None keeps the initial parameters as anchor.
      reset_monitor: also restart the ``p_m`` windows and the EMAs at each reset (as the
        reference code does at every epoch).
      projection: ``"per_tensor"`` (each leaf's drift projected against its own gradient, as
        the reference code), ``"per_modality"`` (the modality's whole flattened drift against
        its whole flattened gradient), and two ablations: ``"none"`` adds the unprojected
        drift, ``g + beta d``; ``"scale"`` scales the gradient, ``g / (1 + beta)``.
      use_monitor: if False (ablation), the monitor is ignored and the dominant modality is
        suppressed whenever the gate is open (``r_m`` is still computed when ``sensitivity``
        is given, else reported as 0).
      use_gate: if False (ablation), the gate is always open.
      normalize_redundancy: divide ``red_m`` by its EMA (reference code); if False use the
        paper's ``r_m = red_m - gamma max(S_m, 0)`` on the raw scale.
      eps: added to denominators of the growth rate and the normalised redundancy.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`RedRegState`.

    References:
      Yang, Li, Chen, Wang, Xiong, Fan. Adaptive Redundancy Regulation for Balanced Multimodal
      Information Refinement. arXiv:2511.13755, 2025.
    """
    if projection not in _PROJECTIONS:
        raise ValueError(f"projection must be one of {_PROJECTIONS}; got {projection!r}.")
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"window must be a positive int; got {window!r}.")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay!r}.")
    if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
        raise ValueError(f"reset_every must be a positive int or None; got {reset_every!r}.")
    if tau is None and use_gate:
        if total_steps is None:
            raise ValueError(
                "redreg needs total_steps (the number of updates of the run) for its default "
                "gate schedule tau(t), 0.2 -> 0.5; pass total_steps=..., or tau=<float or "
                "optax schedule>, or use_gate=False."
            )
        tau = tau_linear(total_steps)
    tau_fn = tau if callable(tau) else (lambda _, c=float(tau or 0.0): jnp.asarray(c))

    def init_fn(params: PyTree) -> RedRegState:
        flat = flat_labels(param_labels, params)
        names = modality_names(flat)
        leaves, treedef = jax.tree.flatten(params)
        anchor = treedef.unflatten(
            [
                jnp.array(p, copy=True) if label is not None else optax.MaskedNode()
                for p, label in zip(leaves, flat, strict=True)
            ]
        )
        zeros = {m: jnp.zeros((), jnp.float32) for m in names}
        return RedRegState(
            count=jnp.zeros((), jnp.int32),
            anchor=anchor,
            history={m: jnp.zeros((window + 1,), jnp.float32) for m in names},
            history_len=jnp.zeros((), jnp.int32),
            ema=dict(zeros),
            growth=dict(zeros),
            score=dict(zeros),
            beta=dict(zeros),
            dominant=jnp.asarray(-1, jnp.int32),
            gate=jnp.zeros((), jnp.float32),
            tau=jnp.zeros((), jnp.float32),
        )

    def update_fn(
        updates: PyTree,
        state: RedRegState,
        params: PyTree | None = None,
        *,
        probs: Mapping[str, Any] | None = None,
        sensitivity: Mapping[str, Any] | None = None,
        similarity: Any = None,
        **extra_args: Any,
    ) -> tuple[PyTree, RedRegState]:
        del extra_args  # meant for other members of a chain
        if params is None:
            raise ValueError("redreg needs params in update(updates, state, params, ...).")
        flat = flat_labels(param_labels, params)
        names = modality_names(flat)
        if tuple(state.history) != names:
            raise ValueError(
                f"param_labels name the modalities {list(names)} but the state was "
                f"initialised with {list(state.history)}."
            )
        if probs is None:
            raise ValueError("redreg.update needs probs=dict(modality -> p_m).")
        p = jnp.stack(
            [_as_scalar(v, "probs") for v in check_per_modality(probs, names, "probs").values()]
        )
        if sensitivity is None and use_monitor:
            raise ValueError(
                "redreg.update needs sensitivity=dict(modality -> red_m) for its redundancy "
                "monitor (or construct it with use_monitor=False)."
            )
        if similarity is None and use_gate:
            raise ValueError(
                "redreg.update needs similarity=<scalar or dict modality -> scalar> for its "
                "co-information gate (or construct it with use_gate=False)."
            )
        n_mod = len(names)
        count = state.count

        # Period boundary: anchor and (optionally) monitor restart.
        if reset_every is None:
            reset = jnp.asarray(False)
        else:
            reset = (count % reset_every) == 0
        monitor_reset = reset if reset_monitor else jnp.asarray(False)

        # Monitor: windows of p_m and the growth rate S_m.
        hist = jnp.stack([state.history[m] for m in names])  # (M, W + 1)
        hist = jnp.concatenate([hist[:, 1:], p[:, None]], axis=1)
        hist_len = jnp.where(monitor_reset, 0, state.history_len)
        hist_len = jnp.minimum(hist_len + 1, window + 1)
        recent = jnp.mean(hist[:, 1:], axis=1)
        previous = jnp.mean(hist[:, :-1], axis=1)
        growth = jnp.where(hist_len > window, (recent - previous) / (jnp.abs(previous) + eps), 1.0)

        # Monitor: normalised redundancy and the score r_m.
        ema = jnp.stack([state.ema[m] for m in names])
        ema = jnp.where(monitor_reset, 0.0, ema)
        if sensitivity is not None:
            red = jnp.stack(
                [
                    _as_scalar(v, "sensitivity")
                    for v in check_per_modality(sensitivity, names, "sensitivity").values()
                ]
            )
            ema = ema_decay * ema + (1.0 - ema_decay) * red
            red_n = red / (ema + eps) if normalize_redundancy else red
            score = red_n - gamma * jnp.maximum(growth, 0.0)
        else:
            score = jnp.zeros((n_mod,), jnp.float32)

        # Dominance, strength and gate.
        dom = jnp.argmax(p)
        is_dom = jax.nn.one_hot(dom, n_mod, dtype=bool)
        p_dom = p[dom]
        strict = p_dom > jnp.max(jnp.where(is_dom, -jnp.inf, p))
        gap = p_dom - (jnp.sum(p) - p_dom) / (n_mod - 1)
        strength = jnp.exp(beta_scale * jnp.tanh(jnp.maximum(gap, 0.0)))
        triggered = score[dom] > trigger if use_monitor else jnp.asarray(True)
        tau_t = jnp.asarray(tau_fn(count), jnp.float32)
        if use_gate:
            sims = check_per_modality(similarity, names, "similarity", allow_scalar=True)
            sim = jnp.stack([_as_scalar(v, "similarity") for v in sims.values()])[dom]
            gate = (sim >= tau_t).astype(jnp.float32)
        else:
            gate = jnp.ones((), jnp.float32)
        beta_dom = jnp.where(strict & triggered, strength, 0.0) * gate
        beta = jnp.where(is_dom, beta_dom, 0.0)  # (M,)

        # Suppression of the dominant modality's leaves (module docstring). The reductions
        # <d, g> and ||g||² run in one `lax.switch` branch per modality, over that modality's
        # leaves only; a step that suppresses nothing takes the empty branch. The update itself
        # is elementwise, `g + beta (d - c g)` where beta > 0 and `g` (bit for bit) elsewhere,
        # so XLA fuses it into the optimizer's own pass over the gradient.
        g_leaves, treedef = jax.tree.flatten(updates)
        p_leaves = treedef.flatten_up_to(params)
        a_leaves = treedef.flatten_up_to(state.anchor)
        modal = [i for i, label in enumerate(flat) if label is not None]
        owner = [names.index(flat[i]) for i in modal]  # modality index of each modal leaf
        g_m = [g_leaves[i] for i in modal]
        p_m = [p_leaves[i] for i in modal]
        a_m = [a_leaves[i] for i in modal]
        if reset_every is not None:
            a_m = jax.lax.cond(
                reset,
                lambda p, a: [x.astype(y.dtype) for x, y in zip(p, a, strict=True)],
                lambda p, a: a,
                p_m,
                a_m,
            )
        if projection in ("per_tensor", "per_modality"):

            def coefficients(k: int):
                def branch(g, p, a):
                    mine = [j for j, o in enumerate(owner) if o == k]
                    coef = projection_coefficients(
                        [_f32(p[j]) - _f32(a[j]) for j in mine],
                        [_f32(g[j]) for j in mine],
                        per_leaf=projection == "per_tensor",
                    )
                    coef = jnp.stack(coef) if projection == "per_tensor" else coef
                    out = jnp.zeros((len(owner),), jnp.float32)
                    return out.at[jnp.asarray(mine)].set(coef)

                return branch

            branches = [lambda g, p, a: jnp.zeros((len(owner),), jnp.float32)]
            branches += [coefficients(k) for k in range(n_mod)]
            index = jnp.where(beta_dom > 0, dom + 1, 0)
            coef = jax.lax.switch(index, branches, g_m, p_m, a_m)
        new_updates = list(g_leaves)
        for j, i in enumerate(modal):
            b, g = beta[owner[j]], g_m[j]
            if projection == "scale":
                out = _f32(g) / (1.0 + b)
            else:
                drift = _f32(p_m[j]) - _f32(a_m[j])
                if projection != "none":
                    drift = drift - coef[j] * _f32(g)
                out = _f32(g) + b * drift
            new_updates[i] = jnp.where(b > 0, out.astype(g.dtype), g)
        new_anchor = [optax.MaskedNode() for _ in flat]
        for j, i in enumerate(modal):
            new_anchor[i] = a_m[j]

        new_state = RedRegState(
            count=optax.safe_int32_increment(count),
            anchor=treedef.unflatten(new_anchor),
            history={m: hist[i] for i, m in enumerate(names)},
            history_len=hist_len.astype(jnp.int32),
            ema={m: ema[i] for i, m in enumerate(names)},
            growth={m: growth[i] for i, m in enumerate(names)},
            score={m: score[i] for i, m in enumerate(names)},
            beta={m: beta[i] for i, m in enumerate(names)},
            dominant=jnp.where(strict, dom, -1).astype(jnp.int32),
            gate=gate,
            tau=tau_t,
        )
        return treedef.unflatten(new_updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
