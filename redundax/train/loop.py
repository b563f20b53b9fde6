"""The training loop and full-split evaluation.

API:

- `train(state, train_step, batches, *, num_steps, mesh, writer=None, checkpointer=None,
  eval_fn=None, eval_every=0, log_every=50, progress=None, log_batches=False,
  evaluators=None, desc="train") -> TrainState`:
  runs `train_step` from `state.step` to `num_steps`, one process-local batch of `batches`
  per step, sharded over the mesh's `"data"` axis. `batches` is a grain iterator
  (`redundax.data.make_iterator`), whose position the checkpoints keep; any other iterator
  works, with a warning that a resumed run restarts it. Every `log_every` steps the loop writes
  the mean of the step metrics since the last log, prefixed `train/`, with `examples_per_sec`
  and `steps_per_sec` (compilation and evaluation excluded); every `eval_every` steps and at
  the end, `eval_fn(state)` (a dict of scalars, written as named). The checkpointer saves every `checkpointer.every` steps and at
  the end; on SIGTERM it saves and the loop returns early (`state.step < num_steps`, and
  `failures.was_preempted()` turns True: the CLI exits 143).
  Divergence: at every logging step and before every checkpoint the loop reads the step
  metrics; a non-finite `loss`, `grad_norm`, `learning_rate` (or any `*loss*` metric), or
  non-finite parameters before a save, raise `failures.Diverged` naming the step and the likely
  cause (the CLI exits 3), so a diverged state is never checkpointed. Steps that the train step
  skipped (`make_train_step(..., skip_nonfinite=True)`, metric `skipped` = 1) are logged as a
  warning instead and left out of the logged means.
  `progress` shows a bar named `desc` (None: when stdout is a terminal); `log_batches` records a
  fingerprint of every batch in `batches.jsonl` (process 0's part). `evaluators` (as in
  big_vision): `{name: Evaluator(fn, every)}`, each `fn(state) -> {key: float}` run every
  `every` steps and at the end, written as `<name>/<key>` (e.g. `redundax.monitor.evaluator`
  on a fixed held-out stream: `monitor/<layer>/<metric>`); their time is excluded from the
  throughput like `eval_fn`'s.
  `log_every`, `eval_every` and `Evaluator.every` are a step interval or a function
  `step -> bool` (e.g. "at every epoch end").
  Stacked members (`members=[name, ...]`, e.g. a sweep's vmapped step, `redundax.sweep`): every
  metric carries a leading member axis (padding past `len(members)` ignored); the loop checks
  divergence per member (naming it) and writes `<member>/train/<metric>`; the bar shows the
  means over members.
  Resume: each checkpoint's meta keeps the step metrics since the last log (and whatever
  `checkpoint_meta()` returns), so a resumed run logs the same means as an uninterrupted one.
- `host_step(state) -> int`: the state's step on the host (its first member's, when stacked).
- `evaluate(eval_step, state, arrays, *, batch_size, mesh) -> dict[str, float]`: means of the
  metrics of `redundax.train.step.make_eval_step` over whole in-memory arrays (identical on
  every process, e.g. `redundax.data.load_arrays`), in fixed-size padded batches (one
  compilation), each process feeding its part of every batch.

The loop is deliberately plain: read it top to bottom to see what a step does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from redundax.train import evaluate as evaluate_lib
from redundax.train import failures
from redundax.train import mesh as mesh_lib
from redundax.train import step as step_lib
from redundax.train.checkpoint import Checkpointer
from redundax.train.metrics import Writer, batch_fingerprint
from redundax.train.progress import Progress
from redundax.train.state import TrainState

PENDING_META = "pending_metrics"  # checkpoint meta: the step metrics since the last log


def _member_means(means: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Means over members, for the progress display."""
    return {k: np.mean(v) for k, v in means.items()}


def _mean_metrics(host: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Means over the steps of a logging interval (per member, when metrics have a member
    axis); skipped (non-finite) steps are left out."""
    out = {}
    for name in host[0]:
        values = np.asarray([m[name] for m in host], np.float64)
        finite = np.isfinite(values)
        count = finite.sum(0)
        kept = np.where(finite, values, 0.0).sum(0) / np.maximum(count, 1)
        out[name] = np.where(count > 0, kept, values.mean(0))
    return out


def _per_member(metrics: Mapping[str, Any], members: Sequence[str] | None):
    """`[(where, metrics)]`: the step's metrics whole, or one entry per member."""
    if members is None:
        return [("", metrics)]
    return [
        (f"member {tag}", {k: np.asarray(v)[i] for k, v in metrics.items()})
        for i, tag in enumerate(members)
    ]


def _check_divergence(
    pending: list[dict[str, Any]], first_step: int, members: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Host copies of `pending`; `Diverged` at the first step with a non-finite loss or gradient
    norm (of any member), unless the train step skipped that update (its `skipped` metric is 1)."""
    host = mesh_lib.to_host(pending)
    for i, step_metrics in enumerate(host):
        for where, m in _per_member(step_metrics, members):
            if float(m.get(step_lib.SKIPPED, 0.0)) > 0:
                logging.warning(
                    "step %d%s: non-finite loss or gradient, update skipped (%s)",
                    first_step + i,
                    f" ({where})" if where else "",
                    ", ".join(f"{k}={v}" for k, v in failures.nonfinite_metrics(m).items()),
                )
                continue
            failures.check_finite_metrics(first_step + i, m, where=where)
    return host


def _log_record(means: Mapping[str, np.ndarray], members: Sequence[str] | None) -> dict:
    """`train/<metric>` means, or `<member>/train/<metric>` for each member."""
    if members is None:
        return {f"train/{k}": float(v) for k, v in means.items()}
    return {
        f"{tag}/train/{k}": float(v[i]) for i, tag in enumerate(members) for k, v in means.items()
    }


def _due(every: int | Callable[[int], bool], step: int) -> bool:
    return every(step) if callable(every) else bool(every) and step % every == 0


def _check_every(name: str, every: Any, minimum: int) -> None:
    if not callable(every) and (not isinstance(every, int) or every < minimum):
        raise ValueError(
            f"`{name}` must be an int >= {minimum} (steps) or a function step -> bool; "
            f"got {every!r}."
        )


def host_step(state: TrainState) -> int:
    """The step of `state` (of its first member when states are stacked)."""
    return int(np.asarray(mesh_lib.to_host(state.step)).reshape(-1)[0])


def _restore_pending(checkpointer: Checkpointer | None, step: int) -> list[dict[str, Any]]:
    """The step metrics since the last log that the checkpoint of `step` kept, so a resumed
    run logs the same means as an uninterrupted one."""
    if checkpointer is None or step == 0:
        return []
    meta = checkpointer.restore_meta() or {}
    if int(meta.get("step", -1)) != step:
        return []
    return [{k: np.asarray(v) for k, v in m.items()} for m in meta.get(PENDING_META, [])]


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """A named periodic evaluation: `fn(state) -> {key: float}` every `every` steps (or at the
    steps where `every(step)` is true) and at the end."""

    fn: Callable[[TrainState], Mapping[str, float]]
    every: int | Callable[[int], bool]

    def __post_init__(self):
        if not callable(self.fn):
            raise ValueError("`Evaluator.fn` must be callable as fn(state) -> {key: float}.")
        _check_every("Evaluator.every", self.every, 1)


def _run_evaluators(
    evaluators: Mapping[str, Evaluator], state: TrainState, step: int, last: bool
) -> dict[str, float]:
    """`{"<name>/<key>": value}` of the evaluators due at `step`."""
    return {
        f"{name}/{key}": float(value)
        for name, ev in evaluators.items()
        if _due(ev.every, step) or last
        for key, value in ev.fn(state).items()
    }


def train(
    state: TrainState,
    train_step: Callable[..., tuple[TrainState, dict[str, jax.Array]]],
    batches: Iterator[Mapping[str, np.ndarray]],
    *,
    num_steps: int,
    mesh: Mesh,
    writer: Writer | None = None,
    checkpointer: Checkpointer | None = None,
    eval_fn: Callable[[TrainState], Mapping[str, float]] | None = None,
    eval_every: int | Callable[[int], bool] = 0,
    log_every: int | Callable[[int], bool] = 50,
    progress: bool | None = None,
    log_batches: bool = False,
    evaluators: Mapping[str, Evaluator] | None = None,
    desc: str = "train",
    members: Sequence[str] | None = None,
    checkpoint_meta: Callable[[], Mapping[str, Any]] | None = None,
) -> TrainState:
    """Train until `num_steps` (or a preemption); see the module docstring."""
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"`num_steps` must be a non-negative int; got {num_steps!r}.")
    _check_every("log_every", log_every, 1)
    _check_every("eval_every", eval_every, 0)
    if members is not None and (isinstance(members, str) or not len(members)):
        raise ValueError(f"`members` must be a non-empty sequence of names; got {members!r}.")
    step = host_step(state)
    data_iter = batches if hasattr(batches, "get_state") and hasattr(batches, "set_state") else None
    if checkpointer is not None and data_iter is None:
        logging.warning(
            "`batches` (%s) has no get_state/set_state: checkpoints will not hold the data "
            "position, so a resumed run restarts its data stream. Use a grain iterator "
            "(redundax.data.make_iterator) to resume exactly.",
            type(batches).__name__,
        )
    pending: list[dict[str, Any]] = _restore_pending(checkpointer, step)
    timer_start, timed_steps, examples = None, 0, 0
    if step >= num_steps and num_steps > 0:
        logging.info("Training already complete (step %d of %d): no step to run.", step, num_steps)

    with Progress(num_steps, initial=step, bar=progress, desc=desc) as bar:
        while step < num_steps:
            # ---------------------------------------------------------------- one step
            local = next(batches)
            if log_batches and writer is not None:
                writer.write_batch(step, batch_fingerprint(local))
            batch = mesh_lib.shard_batch(local, mesh)
            state, metrics = train_step(state, batch)
            step += 1
            pending.append(metrics)
            if timer_start is None:  # start timing once the step is compiled and has run
                jax.block_until_ready(metrics)
                timer_start = time.perf_counter()
            else:
                timed_steps += 1
                examples += jax.tree.leaves(batch)[0].shape[0]
            last = step == num_steps

            # ---------------------------------------------------------------- logging
            if _due(log_every, step) or last:
                host = _check_divergence(pending, step - len(pending) + 1, members)
                means = _mean_metrics(host)
                record = _log_record(means, members)
                shown = record if members is None else _log_record(_member_means(means), None)
                elapsed = time.perf_counter() - timer_start
                if timed_steps and elapsed > 0:
                    record["examples_per_sec"] = examples / elapsed
                    record["steps_per_sec"] = timed_steps / elapsed
                    shown |= {k: record[k] for k in ("examples_per_sec", "steps_per_sec")}
                if writer is not None:
                    writer.write(step, record)
                bar.update(step, shown)
                pending = []
                timer_start, timed_steps, examples = time.perf_counter(), 0, 0
            else:
                bar.update(step)

            # ---------------------------------------------------------------- evaluation
            due = eval_fn is not None and (_due(eval_every, step) or last)
            if due or evaluators:
                paused = time.perf_counter()
                results = dict(eval_fn(state)) if due else {}
                if due and members is None:
                    bar.update(step, results)
                results.update(_run_evaluators(evaluators or {}, state, step, last))
                if writer is not None and results:
                    writer.write(step, results)  # one record per evaluated step
                timer_start += time.perf_counter() - paused

            # ---------------------------------------------------------------- checkpoint
            if checkpointer is not None:
                paused = time.perf_counter()
                stop = checkpointer.should_stop(step)
                if stop or last or step % checkpointer.every == 0:
                    # never save a diverged state over the last good checkpoint
                    host = _check_divergence(pending, step - len(pending) + 1, members)
                    if not failures.tree_is_finite(state.params):
                        raise failures.Diverged(
                            f"training diverged before step {step}: the parameters hold NaN or "
                            f"Inf values (not saved). {failures.DIVERGENCE_HINT}"
                        )
                    meta = {
                        **(checkpoint_meta() if checkpoint_meta is not None else {}),
                        PENDING_META: [
                            {k: np.asarray(v).tolist() for k, v in m.items()} for m in host
                        ],
                    }
                    checkpointer.save(step, state, data_iter, force=stop or last, meta=meta)
                timer_start += time.perf_counter() - paused
                if stop:
                    checkpointer.wait()
                    if writer is not None:
                        writer.flush()
                    failures.note_preempted()
                    break
    if writer is not None:
        writer.flush()
    return state


def evaluate(
    eval_step: Callable[[TrainState, Any], dict[str, jax.Array]],
    state: TrainState,
    arrays: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    mesh: Mesh,
) -> dict[str, float]:
    """Means of `eval_step`'s metrics over all examples of `arrays` (module docstring): the
    arrays cut into this process's parts of fixed-size global batches, evaluated by
    `redundax.train.evaluate.evaluate_batches`."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
    if not arrays:
        raise ValueError("evaluate needs at least one array in `arrays`.")
    n = min(len(v) for v in arrays.values())
    size = max(1, min(batch_size, n))
    batches = evaluate_lib.array_batches(arrays, size, mesh)
    return evaluate_lib.evaluate_batches(eval_step, state, batches, batch_size=size, mesh=mesh)
