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
- `evaluate(eval_step, state, arrays, *, batch_size, mesh) -> dict[str, float]`: means of the
  metrics of `redundax.train.step.make_eval_step` over whole in-memory arrays (identical on
  every process, e.g. `redundax.data.load_arrays`), in fixed-size padded batches (one
  compilation), each process feeding its part of every batch.

The loop is deliberately plain: read it top to bottom to see what a step does.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping
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


def _mean_metrics(host: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the steps of a logging interval; skipped (non-finite) steps are left out."""
    out = {}
    for name in host[0]:
        values = np.asarray([m[name] for m in host], np.float64)
        finite = values[np.isfinite(values)]
        out[name] = float(np.mean(finite if finite.size else values))
    return out


def _check_divergence(pending: list[dict[str, Any]], first_step: int) -> list[dict[str, Any]]:
    """Host copies of `pending`; `Diverged` at the first step with a non-finite loss or gradient
    norm, unless the train step skipped that update (its `skipped` metric is 1)."""
    host = mesh_lib.to_host(pending)
    for i, m in enumerate(host):
        if float(m.get(step_lib.SKIPPED, 0.0)) > 0:
            logging.warning(
                "step %d: non-finite loss or gradient, update skipped (%s)",
                first_step + i,
                ", ".join(f"{k}={v}" for k, v in failures.nonfinite_metrics(m).items()),
            )
            continue
        failures.check_finite_metrics(first_step + i, m)
    return host


@dataclasses.dataclass(frozen=True)
class Evaluator:
    """A named periodic evaluation: `fn(state) -> {key: float}` every `every` steps and at the end."""

    fn: Callable[[TrainState], Mapping[str, float]]
    every: int

    def __post_init__(self):
        if not callable(self.fn):
            raise ValueError("`Evaluator.fn` must be callable as fn(state) -> {key: float}.")
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"`Evaluator.every` must be an int >= 1 (steps); got {self.every!r}.")


def _run_evaluators(
    evaluators: Mapping[str, Evaluator], state: TrainState, step: int, last: bool
) -> dict[str, float]:
    """`{"<name>/<key>": value}` of the evaluators due at `step`."""
    return {
        f"{name}/{key}": float(value)
        for name, ev in evaluators.items()
        if step % ev.every == 0 or last
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
    eval_every: int = 0,
    log_every: int = 50,
    progress: bool | None = None,
    log_batches: bool = False,
    evaluators: Mapping[str, Evaluator] | None = None,
    desc: str = "train",
) -> TrainState:
    """Train until `num_steps` (or a preemption); see the module docstring."""
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"`num_steps` must be a non-negative int; got {num_steps!r}.")
    if not isinstance(log_every, int) or log_every < 1:
        raise ValueError(f"`log_every` must be an int >= 1; got {log_every!r}.")
    step = int(mesh_lib.to_host(state.step))
    data_iter = batches if hasattr(batches, "get_state") and hasattr(batches, "set_state") else None
    if checkpointer is not None and data_iter is None:
        logging.warning(
            "`batches` (%s) has no get_state/set_state: checkpoints will not hold the data "
            "position, so a resumed run restarts its data stream. Use a grain iterator "
            "(redundax.data.make_iterator) to resume exactly.",
            type(batches).__name__,
        )
    pending: list[dict[str, jax.Array]] = []
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
            if step % log_every == 0 or last:
                host = _check_divergence(pending, step - len(pending) + 1)
                record = {f"train/{k}": v for k, v in _mean_metrics(host).items()}
                elapsed = time.perf_counter() - timer_start
                if timed_steps and elapsed > 0:
                    record["examples_per_sec"] = examples / elapsed
                    record["steps_per_sec"] = timed_steps / elapsed
                if writer is not None:
                    writer.write(step, record)
                bar.update(step, record)
                pending = []
                timer_start, timed_steps, examples = time.perf_counter(), 0, 0
            else:
                bar.update(step)

            # ---------------------------------------------------------------- evaluation
            due = eval_fn is not None and ((eval_every and step % eval_every == 0) or last)
            if due or evaluators:
                paused = time.perf_counter()
                results = dict(eval_fn(state)) if due else {}
                if due:
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
                    _check_divergence(pending, step - len(pending) + 1)
                    if not failures.tree_is_finite(state.params):
                        raise failures.Diverged(
                            f"training diverged before step {step}: the parameters hold NaN or "
                            f"Inf values (not saved). {failures.DIVERGENCE_HINT}"
                        )
                checkpointer.save(step, state, data_iter, force=stop or last)
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
