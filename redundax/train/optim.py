"""The one optimizer builder: an `optim` config section and a step count -> (optax transform, schedule).

Every recipe the experiments use is one setting of the same section:

>>> tx, schedule = build(config.optim, total_steps)              # SGD or AdamW + schedule
>>> tx, schedule = build(config.optim, total_steps, before=[redreg(labels)])   # RedReg first
>>> tx, schedule = build(config.optim, total_steps, prune_mask=mask)           # pruned stay 0

Fields of the section (unknown fields raise a `ValueError` that names the closest known one):

| field | meaning | default |
| --- | --- | --- |
| `name` | `"sgd"` or `"adamw"` | `"sgd"` |
| `lr` | peak learning rate | required |
| `momentum`, `nesterov` | SGD momentum (0: none) and Nesterov | 0.9, False |
| `b1`, `b2`, `eps` | AdamW moments | 0.9, 0.999, 1e-8 |
| `weight_decay` | decay coefficient | 0.0 |
| `weight_decay_mode` | `"l2"`: added to the gradient before the optimizer (PyTorch SGD); `"decoupled"`: AdamW's decoupled decay | `"l2"` for SGD, `"decoupled"` for AdamW |
| `decay_mask` | which parameters decay: `"all"`, `"matrices"` (ndim == 2), `"weights"` (ndim >= 2 and not a token or position embedding) | `"all"` |
| `schedule` | `"constant"`, `"cosine"`, `"linear"` (decay to 0), `"piecewise"` | `"cosine"` |
| `warmup_steps` | linear warm-up from 0 to `lr` (not for `"piecewise"`) | 0 |
| `boundaries`, `decay_factor` | piecewise: multiply the rate by `decay_factor` at each boundary step | (), 0.1 |
| `clip_norm` | clip updates to this global norm before the optimizer (None: off) | None |

The order in the chain is: `before` transforms (RedReg, OGM-GE: they read raw gradients), gradient
clipping, L2 decay, the optimizer, and last the pruning mask (so pruned weights stay exactly zero).

API: `build(section, total_steps, *, before=(), prune_mask=None) -> (transform, schedule)`;
`make_schedule(fields, total_steps)` (the schedule alone); `decay_mask(kind)` (the parameters
that decay); `DEFAULTS` (the table's defaults), `STEP_FIELDS` (fields of the section that
configure the step, not the transform: accepted and ignored), `ALIASES` (old spellings).
Fields given in epochs (`warmup_epochs`, `boundary_epochs`) are turned into steps by
`redundax.train.config_schema.epochs_to_steps`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import optax

from redundax.transforms.masking import keep_pruned_zero

DEFAULTS: dict[str, Any] = {
    "name": "sgd",
    "lr": None,
    "momentum": 0.9,
    "nesterov": False,
    "b1": 0.9,
    "b2": 0.999,
    "eps": 1e-8,
    "weight_decay": 0.0,
    "weight_decay_mode": None,
    "decay_mask": "all",
    "schedule": "cosine",
    "warmup_steps": 0,
    "boundaries": (),
    "decay_factor": 0.1,
    "clip_norm": None,
}
# Fields that configure the step rather than the transform; the builder accepts and ignores them.
STEP_FIELDS = frozenset(
    {"accumulate_steps", "label_smoothing", "warmup_epochs", "epochs", "skip_nonfinite"}
)

# Old or common spellings -> the section's field.
ALIASES = {
    "learning_rate": "lr",
    "beta1": "b1",
    "beta2": "b2",
    "wd": "weight_decay",
    "grad_clip": "clip_norm",
    "clip": "clip_norm",
    "optimizer": "name",
    "warmup": "warmup_steps",
}

_NO_DECAY_PATTERN = re.compile(r"(token|pos_embed|position)", re.IGNORECASE)


def _fields(section: Mapping[str, Any] | Any) -> dict[str, Any]:
    items = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    unknown = sorted(set(items) - set(DEFAULTS) - STEP_FIELDS)
    if unknown:
        name = unknown[0]
        close = (
            [ALIASES[name]]
            if name in ALIASES
            else difflib.get_close_matches(name, list(DEFAULTS), n=1)
        )
        hint = f"; did you mean optim.{close[0]}?" if close else ""
        raise ValueError(f"unknown optimizer field optim.{name}{hint} Known: {sorted(DEFAULTS)}")
    fields = {**DEFAULTS, **{k: v for k, v in items.items() if k in DEFAULTS}}
    if fields["lr"] is None:
        raise ValueError("optim.lr is required (the peak learning rate)")
    if fields["name"] not in ("sgd", "adamw"):
        raise ValueError(f"optim.name must be 'sgd' or 'adamw', got {fields['name']!r}")
    if fields["weight_decay_mode"] is None:
        fields["weight_decay_mode"] = "l2" if fields["name"] == "sgd" else "decoupled"
    if fields["weight_decay_mode"] not in ("l2", "decoupled"):
        raise ValueError(
            f"optim.weight_decay_mode must be 'l2' or 'decoupled', got {fields['weight_decay_mode']!r}"
        )
    if fields["weight_decay_mode"] == "decoupled" and fields["name"] != "adamw":
        raise ValueError("optim.weight_decay_mode='decoupled' needs optim.name='adamw'")
    return fields


def make_schedule(fields: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """The learning-rate schedule of an `optim` section over `total_steps` optimizer updates."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    lr, kind = float(fields["lr"]), fields["schedule"]
    warmup = int(fields.get("warmup_steps") or 0)
    if not 0 <= warmup < max(total_steps, 2):
        raise ValueError(f"optim.warmup_steps={warmup} must lie in [0, total_steps={total_steps})")
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        if warmup:
            return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, decay_steps=total_steps)
        return optax.cosine_decay_schedule(lr, total_steps)
    elif kind == "linear":
        main = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
    elif kind == "piecewise":
        if warmup:
            raise ValueError("optim.schedule='piecewise' takes no warmup_steps")
        factor = float(fields.get("decay_factor", 0.1))
        return optax.piecewise_constant_schedule(
            lr, {int(b): factor for b in fields.get("boundaries", ())}
        )
    else:
        raise ValueError(
            f"optim.schedule must be one of constant, cosine, linear, piecewise; got {kind!r}"
        )
    if not warmup:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def _path_name(path: tuple) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def decay_mask(kind: str | Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A function params -> boolean pytree: which leaves receive weight decay."""
    if callable(kind):
        return kind
    if kind == "all":
        return lambda params: jax.tree.map(lambda _: True, params)
    if kind == "matrices":
        return lambda params: jax.tree.map(lambda x: x.ndim == 2, params)
    if kind == "weights":
        return lambda params: jax.tree_util.tree_map_with_path(
            lambda path, x: x.ndim >= 2 and not _NO_DECAY_PATTERN.search(_path_name(path)), params
        )
    raise ValueError(f"optim.decay_mask must be 'all', 'matrices' or 'weights', got {kind!r}")


def build(
    section: Mapping[str, Any] | Any,
    total_steps: int,
    *,
    before: Sequence[optax.GradientTransformation] = (),
    prune_mask: Any = None,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`(transform, schedule)` for an `optim` config section (see the module docstring).

    Args:
      section: the `optim` ConfigDict (or a mapping) with the fields of the table above.
      total_steps: optimizer updates the schedule spans (after gradient accumulation).
      before: transforms applied to the raw gradients first (e.g. `redreg`, `ogm_ge`).
      prune_mask: a pytree of 0/1 (or boolean) arrays shaped like the parameters, or None leaves;
        zeros mark pruned weights, which `keep_pruned_zero` keeps exactly zero.
    """
    fields = _fields(section)
    schedule = make_schedule(fields, total_steps)
    parts: list[optax.GradientTransformation] = list(before)
    if fields["clip_norm"] is not None:
        parts.append(optax.clip_by_global_norm(float(fields["clip_norm"])))
    wd, mask = float(fields["weight_decay"]), decay_mask(fields["decay_mask"])
    if fields["name"] == "sgd":
        if wd:
            parts.append(
                optax.add_decayed_weights(wd, mask=None if fields["decay_mask"] == "all" else mask)
            )
        momentum = float(fields["momentum"]) or None
        parts.append(optax.sgd(schedule, momentum=momentum, nesterov=bool(fields["nesterov"])))
    else:
        decoupled = fields["weight_decay_mode"] == "decoupled"
        if wd and not decoupled:
            parts.append(optax.add_decayed_weights(wd, mask=mask))
        parts.append(
            optax.adamw(
                schedule,
                b1=float(fields["b1"]),
                b2=float(fields["b2"]),
                eps=float(fields["eps"]),
                weight_decay=wd if decoupled else 0.0,
                mask=None if fields["decay_mask"] == "all" else mask,
            )
        )
    if prune_mask is not None:
        parts.append(keep_pruned_zero(prune_mask))
    return (parts[0] if len(parts) == 1 else optax.chain(*parts)), schedule
