"""The monitor as an evaluator of the training loop, and its records in `metrics.jsonl`.

API:

- `evaluator(batches, *, where, metrics, reduce, apply, mask) -> fn(state)`: `measure` of
  `state.model()` (a `redundax.train.state.TrainState`) on a fixed held-out stream, as
  `{"<layer>/<metric>": float}`; give it to `redundax.train.loop.train` as
  `evaluators={"monitor": loop.Evaluator(fn, every=k)}` to log `monitor/<layer>/<metric>`. In a
  hand-written loop call `measure(model, held_out, ...)` every k steps instead.
- `flatten(results) -> {"<layer>/<metric>": float}`: `measure`'s nested results as flat names.
- `history(records, metric, name="monitor") -> (steps, layers, values)`: one metric of every layer
  at every evaluation, from `metrics.jsonl` records (`redundax.train.metrics.read_jsonl`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from redundax.monitor import capture
from redundax.monitor import metrics as metrics_lib
from redundax.monitor.streaming import MaskFn, measure


def flatten(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """`{layer: {metric: v}}` -> `{"<layer>/<metric>": v}` (the names written to metrics.jsonl)."""
    return {f"{layer}/{k}": v for layer, values in results.items() for k, v in values.items()}


def evaluator(
    batches: Iterable[Any] | Callable[[], Iterable[Any]],
    *,
    where: capture.Where,
    metrics: str | Iterable[str] = metrics_lib.DEFAULT_METRICS,
    reduce: str | Mapping[str, str] = "flatten",
    apply: capture.Apply | None = None,
    mask: MaskFn | None = None,
) -> Callable[[Any], dict[str, float]]:
    """`fn(state) -> {"<layer>/<metric>": float}`: `measure` of `state.model()` on a fixed stream.

    `batches` is re-read at every call: a sequence (e.g. a list of held-out batches) or a function
    returning a fresh iterable. Give it to `redundax.train.loop.train` as
    `evaluators={"monitor": loop.Evaluator(fn, every=k)}` to log `monitor/<layer>/<metric>`.
    """
    names = metrics_lib.check_names(metrics)
    if not callable(batches) and iter(batches) is batches:
        raise ValueError(
            "`batches` of a monitor evaluator is read at every evaluation: pass a sequence of "
            "batches or a function returning an iterable, not a one-shot iterator."
        )

    def evaluate(state: Any) -> dict[str, float]:
        stream = batches() if callable(batches) else batches
        return flatten(
            measure(
                state.model(),
                stream,
                where=where,
                metrics=names,
                reduce=reduce,
                apply=apply,
                mask=mask,
            )
        )

    return evaluate


def history(
    records: Iterable[Mapping[str, Any]], metric: str, *, name: str = "monitor"
) -> tuple[list[int], list[str], np.ndarray]:
    """`(steps, layers, values)` of one metric from `metrics.jsonl` records (`<name>/<layer>/<metric>`).

    `values` is `(layers, steps)` (NaN where a record lacks a layer), layers in first-seen order:
    the input of `redundax.plots.monitor.heatmap` and `profile`.
    """
    prefix, suffix = f"{name}/", f"/{metric}"
    table: dict[int, dict[str, float]] = {}
    layers: dict[str, None] = {}
    for r in records:
        for key, value in r.items():
            if key.startswith(prefix) and key.endswith(suffix) and value is not None:
                layer = key[len(prefix) : -len(suffix)]
                layers[layer] = None
                table.setdefault(int(r["step"]), {})[layer] = float(value)
    if not table:
        raise ValueError(
            f"no `{prefix}<layer>{suffix}` values in the records; check `metric` ({metric!r}) "
            f"and `name` ({name!r})."
        )
    steps = sorted(table)
    values = np.array([[table[s].get(layer, np.nan) for s in steps] for layer in layers])
    return steps, list(layers), values
