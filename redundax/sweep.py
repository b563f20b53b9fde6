"""Vectorised sweeps: many small models trained as one compiled program.

A sweep trains one *member* per pair (swept value, seed) — for the MAE experiment the value is the
penalty weight lambda_red of eq. 2 (Bi, Zhu & Calhoun, 2025) — with everything else equal. Members
that share shapes are independent copies of the same computation, so ``jax.vmap`` turns them into one
program: the per-member train state (parameters, optimiser state, RNG key, step) is stacked on a
leading *member axis*, the swept value is a vector over that axis, and the batch is broadcast to every
member. On several devices the member axis can be sharded over them (``MemberAxis(mesh=...)``; the
group is padded to a multiple of the device count with copies of its first member, whose results
are dropped).

What members share and what they do not:
  - shared: the data order (one iterator feeds the whole group; the sequential path gives every
    member a fresh iterator with the same seed, hence the same batches), the held-out evaluation
    data and any fixed evaluation key;
  - per member: the initialisation and the stochastic parts of training (MAE masking noise), both
    drawn from the member's seed alone, so two members with the same seed and different swept values
    start from the same parameters and see the same masks.

The sequential path (``vectorize=False``) runs the same per-member functions one member at a time,
unvectorised, and gives the same numbers up to float round-off (vmap changes how XLA batches the
arithmetic). Results of finished members are stored one JSON file each; a restarted sweep skips them.
A group's state is checkpointed with orbax every ``checkpoint_every`` steps and on SIGTERM, so an
interrupted group resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from redundax.train import failures
from redundax.train.metrics import dumps_strict

log = logging.getLogger(__name__)

MEMBER_AXIS = "members"


# --------------------------------------------------------------------------------------------------
# Members
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One sweep member: the swept scalar ``value`` and the ``seed`` of its randomness."""

    value: float
    seed: int
    name: str = "lam"

    @property
    def tag(self) -> str:
        """A stable identifier, safe in file names and TensorBoard tags: ``lam_0.01_seed_2``."""
        return f"{self.name}_{self.value:.6g}_seed_{self.seed}"


def grid(values: Sequence[float], seeds: Sequence[int], name: str = "lam") -> list[Member]:
    """Members for every (value, seed) pair, values outermost."""
    values, seeds = list(values), list(seeds)
    if not values:
        raise ValueError("The sweep needs at least one value; got an empty list.")
    if not seeds:
        raise ValueError("The sweep needs at least one seed; got an empty list.")
    if len(set(values)) != len(values) or len(set(seeds)) != len(seeds):
        raise ValueError(f"Sweep values and seeds must be distinct; got {values} and {seeds}.")
    return [Member(float(v), int(s), name) for v in values for s in seeds]


# --------------------------------------------------------------------------------------------------
# Stacking and the member axis
# --------------------------------------------------------------------------------------------------


def stack(trees: Sequence[Any]) -> Any:
    """Stack pytrees of identical structure on a new leading member axis (stacked on the host,
    then placed on the default device: one transfer per leaf, no per-shape compilation)."""
    if not trees:
        raise ValueError("stack needs at least one tree.")
    return jax.tree.map(lambda *xs: jnp.asarray(np.stack([np.asarray(x) for x in xs])), *trees)


def index(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[k], tree)


def unstack(tree: Any, count: int | None = None) -> list[Any]:
    """The first ``count`` (default: all) members of a stacked pytree, as a list."""
    n = jax.tree.leaves(tree)[0].shape[0] if count is None else count
    return [index(tree, k) for k in range(n)]


def member_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis ``"members"`` (Auto axis type) over ``devices`` (default: all)."""
    devices = list(devices) if devices is not None else jax.devices()
    return jax.make_mesh(
        (len(devices),), (MEMBER_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices
    )


@functools.lru_cache(maxsize=64)
def _compiled(fn: Callable, in_axes: tuple, donate_argnums: tuple[int, ...], vectorize: bool):
    """One jitted function per (function, layout): bound methods of the same object compare
    equal, so every group of a sweep reuses the compiled program."""
    if not vectorize:
        return jax.jit(fn, donate_argnums=donate_argnums)
    return jax.jit(jax.vmap(fn, in_axes=in_axes), donate_argnums=donate_argnums)


class MemberAxis:
    """How a group of members is laid out: vectorised (optionally sharded) or one at a time.

    ``map(fn, in_axes)`` compiles a per-member function for the layout: ``jit(vmap(fn))`` with the
    member axis leading when vectorised, plain ``jit(fn)`` otherwise. ``put`` places a stacked tree
    (padding it for the mesh), ``take`` reads a per-member output back without the padding.
    """

    def __init__(self, size: int, *, vectorize: bool, mesh: jax.sharding.Mesh | None = None):
        if size < 1:
            raise ValueError(f"A member group needs at least one member; got size={size}.")
        if mesh is not None and not vectorize:
            raise ValueError("A member mesh needs vectorize=True.")
        if not vectorize and size != 1:
            raise ValueError("The sequential layout trains one member at a time (size=1).")
        self.size, self.vectorize, self.mesh = size, vectorize, mesh
        shards = mesh.devices.size if mesh is not None else 1
        self.padded = math.ceil(size / shards) * shards

    def map(self, fn: Callable, in_axes: tuple, donate_argnums: tuple[int, ...] = ()) -> Callable:
        return _compiled(fn, in_axes, donate_argnums, self.vectorize)

    def put(self, tree: Any) -> Any:
        """Place a stacked tree (member axis leading; absent when not vectorised)."""
        if not self.vectorize:
            return tree
        if self.padded > self.size:
            tree = jax.tree.map(
                lambda x: jnp.concatenate([x, jnp.repeat(x[:1], self.padded - self.size, 0)]), tree
            )
        if self.mesh is None:
            return tree
        sharding = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec(MEMBER_AXIS))
        return jax.device_put(tree, sharding)

    def broadcast(self, tree: Any) -> Any:
        """Place data that every member reads (replicated over the member mesh)."""
        if self.mesh is None:
            return tree
        return jax.device_put(
            tree, jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        )

    def take(self, tree: Any) -> list[Any]:
        """Per-member host values of an output, padding dropped."""
        tree = jax.device_get(tree)
        if not self.vectorize:
            return [tree]
        return [jax.tree.map(lambda x, k=k: x[k], tree) for k in range(self.size)]


# --------------------------------------------------------------------------------------------------
# Finished members and group checkpoints
# --------------------------------------------------------------------------------------------------


class ResultStore:
    """One JSON file per finished member under ``directory``; a restart skips those members.

    Every result carries ``fingerprint`` (a digest of the configuration that produced it, without
    the sweep grid); a stored result with a different fingerprint raises instead of being reused.
    """

    def __init__(self, directory: str | pathlib.Path, fingerprint: str):
        self.directory = pathlib.Path(directory)
        self.fingerprint = fingerprint

    def path(self, member: Member) -> pathlib.Path:
        return self.directory / f"{member.tag}.json"

    def load(self, member: Member) -> dict | None:
        p = self.path(member)
        if not p.exists():
            return None
        try:
            result = json.loads(p.read_text())
        except json.JSONDecodeError as error:  # truncated or damaged: train the member again
            log.warning(
                "%s is not valid JSON (%s): dropped; the member is trained again.", p, error
            )
            return None
        if result.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"{p} was written by a different configuration than this run's; use a new "
                "--workdir (or delete that file) to run this configuration."
            )
        return result

    def save(self, member: Member, result: dict) -> None:
        if jax.process_index() != 0:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path(member).with_suffix(".tmp")
        tmp.write_text(dumps_strict({**result, "fingerprint": self.fingerprint}, indent=1))
        tmp.replace(self.path(member))

    def pending(self, members: Sequence[Member]) -> list[Member]:
        return [m for m in members if self.load(m) is None]


def fingerprint(obj: Any) -> str:
    """A short digest of a JSON-serialisable object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class GroupCheckpoint:
    """orbax checkpoints of one member group: stacked state + JSON (history, data state, step)."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 1):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        )

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict) -> None:
        ocp = self._ocp
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            force=True,
        )
        self.manager.wait_until_finished()

    def restore(self, template: Any) -> tuple[Any, dict]:
        ocp = self._ocp
        out = self.manager.restore(
            self.latest(),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template), meta=ocp.args.JsonRestore()
            ),
        )
        return out["state"], out["meta"]

    def close(self) -> None:
        self.manager.close()


# --------------------------------------------------------------------------------------------------
# The training loop of a member group
# --------------------------------------------------------------------------------------------------


class Program(Protocol):
    """Per-member pure functions a sweep trains; the engine vectorises them.

    ``init(member)`` -> state pytree (host side, one member);
    ``train_step(state, value, batch)`` -> ``(state, metrics)`` (pure, jit-able, one member);
    ``evaluate(state, value, data)`` -> metrics (pure, one member; ``data`` shared by all);
    ``finish(axis, state, members)`` -> one result dict per member (host side; may use
    ``axis.map`` for its own vectorised pure functions).
    """

    def init(self, member: Member) -> Any: ...

    def train_step(self, state: Any, value: jax.Array, batch: Any) -> tuple[Any, dict]: ...

    def evaluate(self, state: Any, value: jax.Array, data: Any) -> dict: ...

    def finish(self, axis: MemberAxis, state: Any, members: Sequence[Member]) -> list[dict]: ...


class DataIterator(Protocol):
    def __next__(self) -> Any: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass
class Schedule:
    """``num_steps`` steps in epochs of ``steps_per_epoch``; evaluate at every epoch end, every
    ``eval_every`` steps (0: only epochs) and at the last step; checkpoint every
    ``checkpoint_every`` steps (0: only at the end of the group)."""

    num_steps: int
    steps_per_epoch: int
    eval_every: int = 0
    checkpoint_every: int = 0

    def is_eval(self, step: int) -> bool:
        return (
            step % self.steps_per_epoch == 0
            or (self.eval_every > 0 and step % self.eval_every == 0)
            or step == self.num_steps
        )


def _sigterm_flag() -> failures.Preemption:
    """SIGTERM: save and stop after this step; a second signal stops at once (`failures`)."""
    return failures.Preemption()


class SweepProgress:
    """Member-steps done over the whole sweep: a tqdm bar on a terminal, else a log line every
    ``log_every`` member-steps (``redundax.train.progress.Progress``, process 0 only)."""

    def __init__(self, total: int, log_every: int | None = None, desc: str = "sweep"):
        from redundax.train.progress import Progress

        self.total, self.done = total, 0
        self.log_every = log_every or max(total // 20, 1)
        self._progress = Progress(total, desc=desc)
        self._t0 = time.perf_counter()

    def update(self, n: int) -> None:
        before, self.done = self.done, self.done + n
        crossed = self.done // self.log_every > before // self.log_every
        metrics = None
        if crossed or self.done == self.total:
            elapsed = time.perf_counter() - self._t0
            metrics = {"member_steps_per_s": self.done / max(elapsed, 1e-9)}
        self._progress.update(self.done, metrics)

    def close(self) -> None:
        self._progress.close()


def train_group(
    program: Program,
    members: Sequence[Member],
    axis: MemberAxis,
    *,
    data: Callable[[], DataIterator],
    eval_data: Any,
    schedule: Schedule,
    checkpoint_dir: str | pathlib.Path | None = None,
    place_batch: Callable[[Any], Any] | None = None,
    on_eval: Callable[[Member, dict], None] | None = None,
    on_start: Callable[[Sequence[Member], int], None] | None = None,
    bar: Any = None,
) -> tuple[Any, list[list[dict]]]:
    """Train one group of members for ``schedule.num_steps`` steps.

    Args:
      program: the per-member functions.
      members: the group (``axis.size`` members).
      axis: the layout (vectorised/sharded or sequential).
      data: makes a fresh iterator of batches (every call yields the same order).
      eval_data: held-out data handed to ``program.evaluate`` (shared by all members).
      schedule: steps, epochs, evaluation and checkpoint cadence.
      checkpoint_dir: where this group's orbax checkpoints live (None: no checkpoints).
      place_batch: puts a host batch on devices (e.g. sharded over a data mesh); default
        ``axis.broadcast``.
      on_eval: called with (member, record) after every evaluation.
      on_start: called with (members, step) before training: the step the group resumes from
        (-1 when it starts afresh); records of these members written after that step by an
        interrupted run are about to be written again, so a metric writer drops them.
      bar: a progress bar (``update(n)``), optional.

    Returns:
      The final state (stacked when vectorised) and each member's list of evaluation records
      ``{"step", "epoch", "train/<metric>", "val/<metric>", "time"}`` (``train/`` metrics are
      means since the previous evaluation; the first record, step 0, is the initialisation and
      has none).
    """
    if len(members) != axis.size:
        raise ValueError(f"{len(members)} members for an axis of size {axis.size}.")
    values = np.asarray([m.value for m in members], np.float32)
    if axis.vectorize:
        state = axis.put(stack([program.init(m) for m in members]))
        values = axis.put(jnp.asarray(values))
    else:
        state, values = program.init(members[0]), jnp.asarray(values[0])
    step_fn = axis.map(program.train_step, in_axes=(0, 0, None), donate_argnums=(0,))
    eval_fn = axis.map(program.evaluate, in_axes=(0, 0, None))
    place_batch = place_batch or axis.broadcast
    eval_data = axis.broadcast(eval_data)

    # Running sums of the per-step metrics since the last evaluation (checkpointed with the state).
    metric_shapes = jax.eval_shape(step_fn, state, values, place_batch(_peek(data)))[1]
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), metric_shapes)
    carry = {"state": state, "sums": zeros}

    iterator = data()
    histories: list[list[dict]] = [[] for _ in members]
    start, count = 0, 0
    ckpt = GroupCheckpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None and ckpt.latest() is not None:
        carry, meta = ckpt.restore(carry)
        start, count, histories = int(meta["step"]), int(meta["count"]), meta["histories"]
        iterator.set_state(meta["data_state"])
        log.info("Resumed %d member(s) at step %d from %s", len(members), start, checkpoint_dir)
    if on_start is not None:
        on_start(members, start if ckpt is not None and ckpt.latest() is not None else -1)
    if bar is not None and start:
        bar.update(start * len(members))

    def save(step: int) -> None:
        if ckpt is not None:
            meta = {
                "step": step,
                "count": count,
                "histories": histories,
                "data_state": iterator.get_state(),
            }
            ckpt.save(step, carry, meta)

    t0 = time.perf_counter()

    def evaluate(step: int, train: list[dict] | None) -> None:
        val = axis.take(eval_fn(carry["state"], values, eval_data))
        for k, m in enumerate(members):
            if train:  # divergence: the per-member training means fetched here must be finite
                failures.check_finite_metrics(
                    step,
                    train[k],
                    where=f"sweep member {m.tag}",
                    hint=f"Likely cause: the penalty strength ({m.name} = {m.value:g}) or the "
                    "learning rate is too large for this member; drop it from the grid or lower "
                    "the learning rate, in a new --workdir.",
                )
            record = {
                "step": step,
                "epoch": step / schedule.steps_per_epoch,
                **({f"train/{n}": float(v) for n, v in train[k].items()} if train else {}),
                **{f"val/{n}": float(v) for n, v in val[k].items()},
                "time": time.perf_counter() - t0,
            }
            histories[k].append(record)
            if on_eval is not None:
                on_eval(m, record)

    if start == 0:
        evaluate(0, None)  # the initialisation
    with _sigterm_flag() as stop:
        for step in range(start + 1, schedule.num_steps + 1):
            batch = place_batch(next(iterator))
            state, metrics = step_fn(carry["state"], values, batch)
            carry = {"state": state, "sums": jax.tree.map(jnp.add, carry["sums"], metrics)}
            count += 1
            if bar is not None:
                bar.update(len(members))
            if schedule.is_eval(step):
                evaluate(step, axis.take(jax.tree.map(lambda s, c=count: s / c, carry["sums"])))
                carry["sums"], count = jax.tree.map(jnp.zeros_like, carry["sums"]), 0
            if stop.requested:
                save(step)
                failures.note_preempted()
                raise failures.Preempted(f"SIGTERM: checkpoint saved at step {step}.")
            if schedule.checkpoint_every and step % schedule.checkpoint_every == 0:
                save(step)
    if ckpt is not None and ckpt.latest() != schedule.num_steps:
        save(schedule.num_steps)
    if ckpt is not None:
        ckpt.close()
    return carry["state"], histories


def _peek(data: Callable[[], DataIterator]) -> Any:
    """The first batch of a fresh iterator (for shapes)."""
    return next(data())


def run_sweep(
    program: Program,
    members: Sequence[Member],
    *,
    store: ResultStore,
    vectorize: bool,
    mesh: jax.sharding.Mesh | None = None,
    checkpoint_root: str | pathlib.Path | None = None,
    **group_kwargs,
) -> tuple[dict[str, dict], float]:
    """Train and finish every member not yet in ``store``; return all results and the wall time.

    Vectorised: the pending members form one group (``jit(vmap(...))``, member axis sharded over
    ``mesh`` if given). Sequential: one member at a time with the same per-member functions.
    Finished members are saved to ``store`` as soon as their group ends, so a restart skips them;
    each result records its group (``{"id", "size", "vectorize", "seconds"}``: the wall time of
    training and finishing that group in the run that trained it).

    Returns:
      ``({member.tag: result}, seconds spent training and finishing pending members)``.
    """
    pending = store.pending(members)
    if pending:
        log.info(
            "%d of %d member(s) to train (%s).",
            len(pending),
            len(members),
            "vectorised" if vectorize else "sequential",
        )
    else:
        log.info("All %d member(s) already trained: the sweep is complete.", len(members))
    groups = [list(pending)] if vectorize else [[m] for m in pending]
    groups = [g for g in groups if g]
    total_steps = group_kwargs["schedule"].num_steps
    bar = SweepProgress(len(pending) * total_steps) if pending else None
    t0 = time.perf_counter()
    try:
        for i, group in enumerate(groups, 1):
            log.info("sweep group %d/%d: %s", i, len(groups), ", ".join(m.tag for m in group))
            axis = MemberAxis(len(group), vectorize=vectorize, mesh=mesh)
            ckpt_dir = None
            if checkpoint_root is not None:
                name = (
                    group[0].tag
                    if len(group) == 1
                    else "group-" + fingerprint([m.tag for m in group])
                )
                ckpt_dir = pathlib.Path(checkpoint_root) / name
            g0 = time.perf_counter()
            state, histories = train_group(
                program, group, axis, checkpoint_dir=ckpt_dir, bar=bar, **group_kwargs
            )
            finals = program.finish(axis, state, group)
            group_info = {
                "id": fingerprint([m.tag for m in group]),
                "size": len(group),
                "vectorize": vectorize,
                "seconds": time.perf_counter() - g0,
            }
            for m, history, final in zip(group, histories, finals, strict=True):
                store.save(
                    m,
                    {
                        "value": m.value,
                        "seed": m.seed,
                        "history": history,
                        "group": group_info,
                        **final,
                    },
                )
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    return {m.tag: store.load(m) for m in members}, elapsed


__all__ = [
    "MEMBER_AXIS",
    "GroupCheckpoint",
    "Member",
    "MemberAxis",
    "Program",
    "ResultStore",
    "Schedule",
    "SweepProgress",
    "fingerprint",
    "grid",
    "index",
    "member_mesh",
    "run_sweep",
    "stack",
    "train_group",
    "unstack",
]
