"""Select submodules of any Flax NNX model and capture their outputs with `nnx.capture`.

A module is named by its path in the model as a dotted string: `("blocks", 0, "mlp", "fc1")` ->
`"blocks.0.mlp.fc1"`. `where` selects modules by type (`nnx.Conv` or a tuple of types), by a regular
expression matched against the whole path (`r"blocks\\.\\d+\\.mlp\\.fc1"`), or by a predicate
`where(path, module) -> bool`. The model itself (the empty path) and `nnx.List` containers are
never selected.

Outputs are recorded with `nnx.capture(..., method_outputs=...)` (flax >= 0.12.6), which sows the
return value of every module's own `__call__` (flax instruments methods a class defines itself: a
subclass that inherits `__call__` unchanged is not recorded, which `capture_outputs` reports).
A module called several times in one forward pass yields one output per call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

Where = type | tuple[type, ...] | str | re.Pattern | Callable[[str, nnx.Module], bool]
Apply = Callable[[nnx.Module, Any], Any]


class MonitorOutput(nnx.Variable):
    """A module output recorded for `redundax.monitor` (kept apart from users' own sows)."""


def path_name(path: tuple) -> str:
    """Dotted name of a module path: `("blocks", 0, "fc1")` -> `"blocks.0.fc1"`."""
    return ".".join(str(p) for p in path)


def _definition_order(model: nnx.Module, path: tuple) -> tuple[int, ...]:
    """Sort key of a module path: attribute definition order (as in `__init__`), list indices."""
    key, node = [], model
    for part in path:
        if isinstance(part, int):
            key.append(part)
            node = node[part]
        else:
            names = list(vars(node))
            key.append(names.index(part) if part in names else len(names))
            node = getattr(node, part)
    return tuple(key)


def _candidates(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    found = [(p, m) for p, m in nnx.iter_modules(model) if p and not isinstance(m, nnx.List)]
    try:  # model order (usually the forward order), else flax's sorted order
        found.sort(key=lambda pm: _definition_order(model, pm[0]))
    except (AttributeError, KeyError, IndexError, TypeError):
        pass
    return [(path_name(p), m) for p, m in found]


def _matcher(where: Where) -> Callable[[str, nnx.Module], bool]:
    if isinstance(where, type) or (
        isinstance(where, tuple) and where and all(isinstance(t, type) for t in where)
    ):
        return lambda name, m: isinstance(m, where)
    if isinstance(where, str | re.Pattern):
        try:
            pattern = re.compile(where)
        except re.error as e:
            raise ValueError(f"`where` is not a valid regular expression ({e}): {where!r}.") from e
        return lambda name, m: pattern.fullmatch(name) is not None
    if callable(where):
        return lambda name, m: bool(where(name, m))
    raise ValueError(
        "`where` must be a module type or tuple of types (e.g. nnx.Conv), a regular expression "
        f"on the dotted module path, or a predicate where(path, module) -> bool; got {where!r}."
    )


def select(model: nnx.Module, where: Where) -> tuple[str, ...]:
    """Dotted paths of the submodules of `model` that `where` selects, in model order.

    Model order: attributes in the order `__init__` assigned them, list items by index (usually
    the forward order, e.g. `stem`, `stages.0.0.conv1`, ..., `classifier`).

    Raises:
      ValueError: `where` has the wrong kind or selects no module (the message lists the paths).
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"`model` must be a flax.nnx.Module; got {type(model).__name__}.")
    match = _matcher(where)
    candidates = _candidates(model)
    paths = tuple(name for name, m in candidates if match(name, m))
    if not paths:
        listing = ", ".join(f"{n} ({type(m).__name__})" for n, m in candidates[:40])
        raise ValueError(
            f"`where`={where!r} selects no module of {type(model).__name__}; its submodules are: "
            f"{listing or '(none)'}."
        )
    return paths


def default_apply(model: nnx.Module, batch: Any) -> Any:
    """`model(**batch)` for a mapping, `model(*batch)` for a tuple, else `model(batch)`."""
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def capture_outputs(
    model: nnx.Module, batch: Any, paths: tuple[str, ...], apply: Apply = default_apply
) -> dict[str, tuple[Any, ...]]:
    """Run `apply(model, batch)` and return the outputs of the modules at `paths`, one per call.

    Raises:
      ValueError: a selected module produced no output (not called by `apply`, or its class
        inherits `__call__`, which `nnx.capture` does not instrument).
    """
    _, captured = nnx.capture(apply, MonitorOutput, method_outputs=MonitorOutput)(model, batch)
    outputs = {
        path_name(key[:-1]): tuple(var.get_value())
        for key, var in nnx.to_flat_state(captured)
        if key[-1] == "__call__"
    }
    missing = [p for p in paths if p not in outputs]
    if missing:
        raise ValueError(
            f"no output was captured for {missing}: `apply` did not call these modules, or their "
            "class inherits __call__ from a parent (nnx.capture records methods a class defines "
            "itself); select other modules with `where`."
        )
    return {p: outputs[p] for p in paths}
