"""Parameter labels shared by the multimodal transforms: every leaf maps to a modality or None."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

PyTree = Any
Labels = PyTree | Callable[[PyTree], PyTree]


def flat_labels(param_labels: Labels, params: PyTree, *, arg: str = "param_labels") -> list:
    """``param_labels`` (a pytree, or a function of ``params``) as a list aligned with the leaves
    of ``params`` (``jax.tree.leaves`` order); each entry a modality name or ``None``."""
    labels = param_labels(params) if callable(param_labels) else param_labels
    treedef = jax.tree.structure(params)
    try:
        flat = treedef.flatten_up_to(labels)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"{arg} must be a pytree with the structure of the parameters (one modality name or "
            f"None per parameter leaf), or a function of the parameters returning one; got a "
            f"tree that does not match: {err}"
        ) from None
    for label in flat:
        if label is not None and not isinstance(label, str):
            raise ValueError(
                f"{arg} leaves must be modality names (str) or None for shared leaves; got "
                f"{label!r}."
            )
    return flat


def modality_names(flat: Sequence[str | None], *, arg: str = "param_labels") -> tuple[str, ...]:
    """Sorted distinct modality names of ``flat``; at least two are required."""
    names = tuple(sorted({label for label in flat if label is not None}))
    if len(names) < 2:
        raise ValueError(
            f"{arg} must name at least two modalities (found {list(names)}); label every "
            f"leaf of each modality's encoder with its modality name and shared leaves with "
            f"None."
        )
    return names


def check_per_modality(
    value: Any, names: Sequence[str], arg: str, *, allow_scalar: bool = False
) -> dict[str, Any]:
    """``value`` as a dict with exactly the keys ``names`` (a scalar is broadcast if allowed)."""
    if allow_scalar and not isinstance(value, dict):
        return dict.fromkeys(names, value)
    if not isinstance(value, dict):
        raise ValueError(
            f"{arg} must be a dict mapping each modality ({', '.join(names)}) to a scalar; got "
            f"{type(value).__name__}."
        )
    if set(value) != set(names):
        raise ValueError(
            f"{arg} must have exactly the modality keys {sorted(names)}; got {sorted(value)}."
        )
    return {name: value[name] for name in names}
