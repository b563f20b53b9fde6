"""Stream batches through any NNX model and measure the redundancy of its layers.

API:

- `accumulate(model, batches, *, where, reduce="flatten", apply=None, mask=None, mesh=None)
  -> {layer: Moments}`: the count, mean and co-moment of every selected layer's outputs over all
  batches of all processes (exact full-dataset statistics).
- `measure(model, batches, *, where, metrics=DEFAULT_METRICS, reduce="flatten", ...)
  -> {layer: {metric: float}}`: `accumulate`, then the named metrics (`redundax.monitor.metrics`)
  of each layer, plus `undersampled` (1.0 when samples <= units: the spectral measures are then
  capped by the sample count, 0.0 otherwise).

The evaluator of the training loop and the `metrics.jsonl` helpers are in
`redundax.monitor.evaluator`.

How an output becomes samples x units (`reduce`; a string for every layer, or a mapping from a
regular expression on the layer path to a mode, first full match wins, "flatten" otherwise):

- `"flatten"`: `(b, ..., d) -> (b * ..., d)`: every spatial position or token is a sample.
- `"mean"`: the mean over the middle axes, `(b, ..., d) -> (b, d)`: one sample per input; needs
  an output of rank >= 3.

`batches` is any iterable of model inputs (the process's own part of each batch in a
multi-process run); `apply(model, batch)` runs the model (default: `model(batch)`, `model(*batch)`
for a tuple, `model(**batch)` for a dict). `mask(batch)` optionally gives 0/1 weights per input
`(b,)` or per position `(b, t)` (e.g. a padding mask of tokens); per-position weights apply to
outputs whose first two axes are `(b, t)`, other outputs keep the inputs with any weight.

Each process runs a jitted step on its local devices (a `"data"` mesh of `redundax.train.mesh`):
its batches are sharded over the devices (padded to a multiple of the device count with
zero-weight rows, to the first batch's size so that one compilation serves all), the per-layer
`Moments` of the batch are merged into a replicated running total inside the same jit, and after
the last batch the processes' totals are all-gathered and merged (`Moments.merge`, exact). The
model runs on a copy in evaluation mode (`model.eval()`: BatchNorm running statistics, no
dropout); the model passed is not changed. Every process must take part (with at least one batch).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from redundax.functionals import Moments
from redundax.functionals.moments import gram_t
from redundax.monitor import capture
from redundax.monitor import metrics as metrics_lib
from redundax.train import mesh as mesh_lib

REDUCE_MODES = ("flatten", "mean")
MaskFn = Callable[[Any], Any]


# ----------------------------------------------------------------------------------- reductions


def _reduce_modes(paths: tuple[str, ...], reduce: str | Mapping[str, str]) -> tuple[str, ...]:
    if isinstance(reduce, str):
        rules = [(re.compile(".*"), reduce)]
    elif isinstance(reduce, Mapping):
        rules = [(re.compile(k), v) for k, v in reduce.items()]
    else:
        raise ValueError(
            f"`reduce` must be one of {REDUCE_MODES} or a mapping from a layer-path regular "
            f"expression to one of them; got {reduce!r}."
        )
    for _, mode in rules:
        if mode not in REDUCE_MODES:
            raise ValueError(f"`reduce` modes must be one of {REDUCE_MODES}; got {mode!r}.")
    return tuple(next((mode for pat, mode in rules if pat.fullmatch(p)), "flatten") for p in paths)


def weighted_moments(x: jax.Array, w: jax.Array) -> Moments:
    """Moments of samples `x` `(n, d)` with weights `w` `(n,)` (0/1 weights select samples)."""
    count = jnp.sum(w)
    mean = jnp.sum(w[:, None] * x, axis=0) / jnp.where(count > 0, count, 1)
    xc = x - mean
    return Moments(count=count, mean=mean, comoment=gram_t(w[:, None] * xc, xc))


def output_moments(y: Any, mode: str, w: jax.Array, layer: str) -> Moments:
    """Moments of one module output `(b, ..., d)` reduced by `mode` with weights `w` (module doc)."""
    if not isinstance(y, jax.Array | np.ndarray):
        raise ValueError(
            f"layer {layer!r} returned {type(y).__name__}, not an array; select modules that "
            "return one array with `where`."
        )
    y = y.astype(jnp.float32)
    b = w.shape[0]
    if y.ndim < 2 or y.shape[0] != b:
        raise ValueError(
            f"layer {layer!r} has output shape {y.shape}; the monitor needs (batch={b}, ..., "
            "units) outputs. Select other modules with `where`."
        )
    per_position = w.ndim == 2 and y.ndim >= 3 and y.shape[:2] == w.shape
    row_w = (jnp.sum(w, axis=1) > 0).astype(jnp.float32) if w.ndim == 2 else w
    if mode == "mean":
        if y.ndim < 3:
            raise ValueError(
                f"`reduce`='mean' averages the middle axes of (b, ..., d) outputs, but layer "
                f"{layer!r} has output shape {y.shape} (rank {y.ndim}); use 'flatten' for it."
            )
        if per_position:
            pos = w.reshape(*w.shape, *([1] * (y.ndim - 2)))
            y = jnp.sum(y * pos, axis=1) / jnp.maximum(jnp.sum(pos, axis=1), 1)
        y = jnp.mean(y.reshape(b, -1, y.shape[-1]), axis=1)
        return weighted_moments(y, row_w)
    if per_position:
        ws = jnp.broadcast_to(w.reshape(*w.shape, *([1] * (y.ndim - 3))), y.shape[:-1])
    else:
        ws = jnp.broadcast_to(row_w.reshape(b, *([1] * (y.ndim - 2))), y.shape[:-1])
    return weighted_moments(y.reshape(-1, y.shape[-1]), ws.reshape(-1))


# ----------------------------------------------------------------------------------- jitted step


@functools.partial(jax.jit, static_argnames=("graphdef", "paths", "modes", "apply", "mesh"))
def _accumulate_step(acc, state, batch, w, *, graphdef, paths, modes, apply, mesh):
    model = nnx.merge(graphdef, state)
    model.eval()
    outputs = capture.capture_outputs(model, batch, paths, apply)
    out = {}
    for path, mode in zip(paths, modes, strict=True):
        parts = [output_moments(y, mode, w, path) for y in outputs[path]]
        m = functools.reduce(Moments.merge, parts)
        out[path] = m if acc is None else acc[path].merge(m)
    return jax.lax.with_sharding_constraint(out, NamedSharding(mesh, PartitionSpec()))


def _local_copy(x: Any) -> Any:
    """A process-local copy of an array of a (possibly multi-process) replicated state."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)
    return x


def _padded(tree: Any, size: int) -> Any:
    def pad(x):
        x = np.asarray(x)
        return np.concatenate([x, np.zeros((size - len(x), *x.shape[1:]), x.dtype)])

    return jax.tree.map(pad, tree)


def _batch_size(batch: Any) -> int:
    sizes = {np.shape(x)[0] for x in jax.tree.leaves(batch) if np.ndim(x)}
    if len(sizes) != 1:
        raise ValueError(
            f"every array of a batch needs the same leading (batch) axis; got sizes {sizes}."
        )
    return sizes.pop()


def _gather_processes(moments: dict[str, Moments]) -> dict[str, Moments]:
    if jax.process_count() == 1:
        return moments
    host = jax.tree.map(np.asarray, mesh_lib.to_host(moments))
    stacked = multihost_utils.process_allgather(host)  # leading axis: process
    return {
        path: functools.reduce(
            Moments.merge,
            [jax.tree.map(lambda a, i=i: jnp.asarray(a[i]), m) for i in range(jax.process_count())],
        )
        for path, m in stacked.items()
    }


def accumulate(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    where: capture.Where,
    reduce: str | Mapping[str, str] = "flatten",
    apply: capture.Apply | None = None,
    mask: MaskFn | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Moments]:
    """`{layer: Moments}` of the selected layers' outputs over all batches (module docstring)."""
    paths = capture.select(model, where)
    modes = _reduce_modes(paths, reduce)
    mesh = mesh_lib.make_data_mesh(jax.local_devices()) if mesh is None else mesh
    graphdef, state = nnx.split(model)
    state = mesh_lib.replicate(jax.tree.map(_local_copy, state), mesh)
    step = functools.partial(
        _accumulate_step,
        graphdef=graphdef,
        paths=paths,
        modes=modes,
        apply=capture.default_apply if apply is None else apply,
        mesh=mesh,
    )
    acc, size, devices = None, None, len(mesh.local_devices)
    for batch in batches:
        b = _batch_size(batch)
        w = np.ones((b,), np.float32) if mask is None else np.asarray(mask(batch), np.float32)
        if w.ndim not in (1, 2) or w.shape[0] != b:
            raise ValueError(
                f"`mask(batch)` must have shape ({b},) or ({b}, positions); got {w.shape}."
            )
        if size is None or b > size:
            size = -(-b // devices) * devices
        batch = mesh_lib.shard_batch(_padded(batch, size), mesh)
        w = mesh_lib.shard_batch(_padded(w, size), mesh)
        if acc is None:  # zero moments (the identity of merge): one compilation for all batches
            shapes = jax.eval_shape(step, None, state, batch, w)
            acc = mesh_lib.replicate(
                jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes), mesh
            )
        acc = step(acc, state, batch, w)
    if acc is None:
        raise ValueError("`batches` is empty; pass an iterable with at least one batch.")
    gathered = _gather_processes(acc)
    return {p: gathered[p] for p in paths}  # model order (jit returns dicts sorted by key)


@functools.partial(jax.jit, static_argnames="names")
def _metrics(stacked: Moments, names: tuple[str, ...]) -> dict[str, jax.Array]:
    return jax.vmap(lambda m: metrics_lib.from_moments(m, names))(stacked)


def measure(
    model: nnx.Module,
    batches: Iterable[Any],
    *,
    where: capture.Where,
    metrics: str | Iterable[str] = metrics_lib.DEFAULT_METRICS,
    reduce: str | Mapping[str, str] = "flatten",
    apply: capture.Apply | None = None,
    mask: MaskFn | None = None,
    mesh: Mesh | None = None,
) -> dict[str, dict[str, float]]:
    """`{layer: {metric: float, "undersampled": 0.0 or 1.0}}` over all batches (module docstring).

    Args:
      model: any `flax.nnx.Module` (not changed).
      batches: an iterable of model inputs (this process's part of each batch).
      where: the layers: a module type or tuple of types, a regular expression on the dotted path,
        or a predicate `where(path, module)` (`redundax.monitor.capture`).
      metrics: names from `redundax.monitor.metrics.METRICS`.
      reduce: "flatten" or "mean", or `{path regex: mode}` (module docstring).
      apply: `apply(model, batch)` runs the model (default: `model(batch)`).
      mask: `mask(batch)` -> 0/1 weights per input `(b,)` or per position `(b, t)`.
      mesh: a 1-D `"data"` mesh of this process's devices (default: all local devices).

    Raises:
      ValueError: `where` selects nothing, an unknown metric, a `reduce` mode that does not fit a
        layer's output rank, or an empty `batches`.
    """
    names = metrics_lib.check_names(metrics)
    moments = accumulate(
        model, batches, where=where, reduce=reduce, apply=apply, mask=mask, mesh=mesh
    )
    by_width: dict[int, list[str]] = {}
    for path, m in moments.items():
        by_width.setdefault(m.mean.shape[-1], []).append(path)
    results = {}
    for width, paths in by_width.items():  # one vmapped program per layer width
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(moments[p] for p in paths))
        # the moments are replicated: decompose them once, on one device, not on every device
        stacked = jax.device_put(jax.tree.map(_local_copy, stacked), jax.local_devices()[0])
        host = mesh_lib.to_host(_metrics(stacked, names))
        counts = mesh_lib.to_host(stacked.count)
        for i, path in enumerate(paths):
            results[path] = {k: float(host[k][i]) for k in names}
            results[path]["undersampled"] = float(counts[i] <= width)
    return {p: results[p] for p in moments}
