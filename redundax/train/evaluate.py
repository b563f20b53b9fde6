"""Evaluation over any iterable of batches: fixed-size sharded batches, the last one padded and
masked, sums reduced over devices and hosts.

- `evaluate_batches(eval_step, state, batches, *, batch_size, mesh) -> dict[str, float]`: `batches`
  yields process-local mappings of arrays of any (even varying) leading size; they are regrouped into
  global batches of a fixed size (one compilation), each process feeding `batch_size / processes`
  examples, the last batch padded with zeros and a `mask` of valid examples. `eval_step` is
  `redundax.train.step.make_eval_step(metric_fn)`: masked per-batch sums and a `"count"`; the result
  is the mean of every metric over every real example of every process, whatever the batch size or
  the device count. Sums may be arrays (a `"count"` per leading index, e.g. one per sweep member
  of a vmapped eval step, or vector-valued statistics such as second moments): their means come
  back as float64 NumPy arrays, scalars as floats. With several processes, the processes agree at
  every batch on whether any of them still has data, so they may hold different numbers of
  examples.
- `array_batches(arrays, batch_size)`: this process's slices of whole in-memory arrays (identical on
  every process), for `evaluate_batches`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from redundax.train import mesh as mesh_lib

Batch = Mapping[str, np.ndarray]


def _global_batch_size(batch_size: int, mesh: Mesh) -> int:
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    unit = mesh.size
    return -(-int(batch_size) // unit) * unit  # a multiple of the device count


def _regroup(batches: Iterable[Batch], local: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
    """Process-local batches of any size -> chunks of exactly `local` examples (last one padded)."""
    buffer: dict[str, list[np.ndarray]] | None = None
    held = 0
    for batch in batches:
        if not isinstance(batch, Mapping) or not batch:
            raise ValueError(
                "`batches` must yield non-empty mappings of arrays (name -> array with a leading "
                f"example axis); got {type(batch).__name__}."
            )
        sizes = {len(np.asarray(v)) for v in batch.values()}
        if len(sizes) != 1:
            raise ValueError(f"every array of a batch needs the same leading size; got {sizes}.")
        if "mask" in batch:
            raise ValueError("`batches` must not carry a 'mask' entry: evaluation adds its own.")
        if buffer is None:
            buffer = {name: [] for name in batch}
        elif set(batch) != set(buffer):
            raise ValueError(f"batches changed their keys: {sorted(buffer)} then {sorted(batch)}.")
        for name, value in batch.items():
            buffer[name].append(np.asarray(value))
        held += sizes.pop()
        while held >= local:
            joined = {name: np.concatenate(parts) for name, parts in buffer.items()}
            yield {name: v[:local] for name, v in joined.items()}, local
            buffer = {name: [v[local:]] for name, v in joined.items()}
            held -= local
    if buffer is not None and held:
        joined = {name: np.concatenate(parts) for name, parts in buffer.items()}
        pad = {
            name: np.concatenate([v, np.zeros((local - held, *v.shape[1:]), v.dtype)])
            for name, v in joined.items()
        }
        yield pad, held


def evaluate_batches(
    eval_step: Callable[[Any, Any], dict[str, jax.Array]],
    state: Any,
    batches: Iterable[Batch],
    *,
    batch_size: int,
    mesh: Mesh,
) -> dict[str, float]:
    """Means of `eval_step`'s metrics over every example of `batches` (module docstring)."""
    size = _global_batch_size(batch_size, mesh)
    procs = jax.process_count()
    local = size // procs
    chunks = _regroup(batches, local)
    template: dict[str, np.ndarray] | None = None
    totals = None
    while True:
        item = next(chunks, None)
        if procs > 1:
            alive = multihost_utils.process_allgather(np.array([item is not None]))
            if not np.any(alive):
                break
        elif item is None:
            break
        if item is None:  # this process is done, others are not: feed an all-masked chunk
            if template is None:
                raise ValueError(
                    "a process got no evaluation examples at all; give every process data."
                )
            chunk, valid = {k: np.zeros_like(v) for k, v in template.items()}, 0
        else:
            chunk, valid = item
            template = chunk
        chunk = {**chunk, "mask": np.arange(local) < valid}
        sums = eval_step(state, mesh_lib.shard_batch(chunk, mesh))
        totals = sums if totals is None else jax.tree.map(lambda a, c: a + c, totals, sums)
    if totals is None:
        raise ValueError("`batches` yielded no examples; evaluation needs at least one.")
    host = mesh_lib.to_host(totals)
    count = np.asarray(host.pop("count"), np.float64)
    if np.any(count == 0):
        raise ValueError("`batches` yielded no examples; evaluation needs at least one.")
    if count.ndim == 0 and all(np.ndim(v) == 0 for v in host.values()):
        return {name: float(v) / float(count) for name, v in host.items()}
    # array-valued sums (e.g. a vmapped eval step: one count per member, leading axes shared)
    return {
        name: np.asarray(v, np.float64)
        / count.reshape(count.shape + (1,) * (np.ndim(v) - count.ndim))
        for name, v in host.items()
    }


def array_batches(arrays: Mapping[str, np.ndarray], batch_size: int, mesh: Mesh) -> Iterator[Batch]:
    """This process's part of every fixed-size global batch of whole in-memory `arrays`."""
    if not arrays:
        raise ValueError("`arrays` needs at least one array.")
    sizes = {len(v) for v in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"all arrays need the same number of examples; got sizes {sizes}.")
    n = sizes.pop()
    if n == 0:
        raise ValueError("`arrays` are empty (no examples).")
    size = _global_batch_size(min(batch_size, n), mesh)
    procs, p = jax.process_count(), jax.process_index()
    local = size // procs
    for start in range(0, n, size):
        stop = min(start + size, n)
        lo, hi = min(start + p * local, stop), min(start + (p + 1) * local, stop)
        if hi > lo:
            yield {name: np.asarray(v[lo:hi]) for name, v in arrays.items()}
