"""Sweeps on the training engine: many members trained as one vmapped program, on every device.

A sweep trains one *member* per pair (swept value, seed) — for the MAE experiment the value is the
penalty weight lambda_red of eq. 2 (Bi, Zhu & Calhoun, 2025) — with everything else equal.
Members that share shapes are independent copies of one computation, so ``jax.vmap`` turns them
into one program: the members' ``redundax.train.state.TrainState`` are stacked on a leading
*member axis*, the swept value is a vector over it, and every member reads the same batch.

The pieces are the engine's (``redundax.train``):

- the step is ``redundax.train.step.train_step_fn`` (the un-jitted core of ``make_train_step``),
  vmapped over the member axis: the same loss/gradient/optimizer update and metrics
  (``loss``, the loss's aux, ``grad_norm``, ``learning_rate``) as any other training;
- the training loop is ``redundax.train.loop.train`` with stacked members (per-member metric
  means and divergence checks; the sequential path trains one member like any run);
- held-out evaluation is ``redundax.train.evaluate.evaluate_batches`` (fixed-size sharded batches,
  the last one padded and masked; sums over devices and hosts) with one count per member;
- checkpoints are ``redundax.train.checkpoint.Checkpointer`` (orbax, the data iterator's
  position, the config check, SIGTERM: save and stop with exit status 143), one per group;
- metric records go through ``redundax.train.metrics.Writer`` (``metrics.jsonl`` and TensorBoard),
  one per group, so a resumed group drops the records past its checkpoint exactly as a resumed
  run does (``resume_step``): every (step, member) record appears once.

One 2-D mesh ``(members, data)`` (``sweep_mesh``) holds every device of every process: the member
axis of the stacked state is sharded over ``members`` (a group is padded to a multiple of that
axis with copies of its first member, whose results are dropped) and each batch over ``data``, so
a member's batch statistics (R_spec of eq. 2) are those of the global batch. The sequential path
(``vectorize=False``) trains one member at a time, unvectorised, data-parallel over the whole
mesh; it gives the same numbers up to float round-off (vmap changes how XLA batches arithmetic).

What members share: the data order (one iterator feeds a group; every group starts a fresh one
with the same seed), the held-out data and any fixed evaluation key. Per member: the
initialisation and the stochastic parts of training (e.g. MAE masking noise), from its seed alone.
Finished members are stored one JSON file each (``ResultStore``); a restarted sweep skips them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import logging
import math
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from redundax.train import checkpoint as checkpoint_lib
from redundax.train import evaluate as evaluate_lib
from redundax.train import failures
from redundax.train import loop as loop_lib
from redundax.train import mesh as mesh_lib
from redundax.train import metrics as metrics_lib
from redundax.train import step as step_lib
from redundax.train.state import TrainState

log = logging.getLogger(__name__)

MEMBER_AXIS = "members"
DATA_AXIS = mesh_lib.DATA_AXIS


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
# Stacking, the mesh and the member layout
# --------------------------------------------------------------------------------------------------


def stack(trees: Sequence[Any]) -> Any:
    """Stack pytrees of identical structure on a new leading member axis (on the host)."""
    if not trees:
        raise ValueError("stack needs at least one tree.")

    def join(*xs):
        if isinstance(xs[0], jax.Array) and jax.dtypes.issubdtype(xs[0].dtype, jax.dtypes.prng_key):
            data = np.stack([np.asarray(jax.random.key_data(x)) for x in xs])
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(xs[0]))
        return np.stack([np.asarray(x) for x in xs])

    return jax.tree.map(join, *trees)


def index(tree: Any, k: int) -> Any:
    """Member ``k`` of a stacked pytree."""
    return jax.tree.map(lambda x: x[k], tree)


def unstack(tree: Any, count: int | None = None) -> list[Any]:
    """The first ``count`` (default: all) members of a stacked pytree, as a list."""
    n = jax.tree.leaves(tree)[0].shape[0] if count is None else count
    return [index(tree, k) for k in range(n)]


def sweep_mesh(member_shards: int = 1, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The 2-D mesh ``(members, data)`` over ``devices`` (default: every device of every process).

    ``member_shards`` devices hold different members; the remaining factor splits each batch. The
    data axis is laid out across processes (device ``k`` sits at data index ``k // member_shards``),
    so each process feeds its own part of every batch, as on the 1-D data mesh of
    ``redundax.train.mesh``; ``member_shards`` must divide every process's device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(member_shards, int) or member_shards < 1:
        raise ValueError(f"`member_shards` must be a positive int; got {member_shards!r}.")
    if len(devices) % member_shards or jax.local_device_count() % member_shards:
        raise ValueError(
            f"member_shards={member_shards} must divide the {len(devices)} devices and the "
            f"{jax.local_device_count()} devices of each process; choose a divisor (1: every "
            "device splits the batch)."
        )
    layout = np.asarray(devices, dtype=object).reshape(-1, member_shards).T
    auto = jax.sharding.AxisType.Auto
    return Mesh(layout, (MEMBER_AXIS, DATA_AXIS), axis_types=(auto, auto))


def place(tree: Any, sharding: NamedSharding) -> Any:
    """Host (or device) values identical on every process -> global arrays with ``sharding``."""

    def put(x: Any) -> jax.Array:
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(
                put(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        host = np.asarray(jax.device_get(x) if isinstance(x, jax.Array) else x)
        return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])

    return jax.tree.map(put, tree)


def check_chunk(chunk: Any) -> int | None:
    """``chunk`` (``sweep.member_chunk``) as a positive int, or None for "all members at once"
    (None or 0); anything else raises a ``ValueError``."""
    if chunk is None or (isinstance(chunk, int) and not isinstance(chunk, bool) and chunk >= 0):
        return chunk or None
    raise ValueError(
        f"sweep.member_chunk must be an int >= 0 (0 or None: every member in one vmap; c: c "
        f"members at a time); got {chunk!r}."
    )


def vectorized(fn: Callable, in_axes: tuple, chunk: int | None = None) -> Callable:
    """``fn`` over a leading member axis of the arguments whose ``in_axes`` entry is 0 (the
    others, None, are shared): ``jax.vmap(fn, in_axes)``, or with ``chunk``
    ``jax.lax.map(vmap(fn), batch_size=chunk)``: ``chunk`` members at a time in a loop inside the
    program (a last, smaller vmap takes the remainder). A chunk keeps the working set
    (activations x members) small enough for the CPU's caches (``benchmarks/sweep_step.py``).
    Each member runs the same operations either way, but XLA compiles the loop body to other
    kernels: results agree to float round-off (about 1 ulp per step), not bit for bit."""
    chunk = check_chunk(chunk)
    if chunk is None:
        return jax.vmap(fn, in_axes=in_axes)
    if any(ax not in (0, None) for ax in in_axes):
        raise ValueError(f"A chunked member map takes in_axes of 0 or None; got {in_axes}.")

    def run(*args):
        mapped = [a for a, ax in zip(args, in_axes, strict=True) if ax == 0]

        def one(xs):
            it = iter(xs)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes, strict=True)))

        return jax.lax.map(one, mapped, batch_size=chunk)

    return run


@functools.lru_cache(maxsize=64)
def _compiled(
    fn: Callable,
    in_axes: tuple,
    donate: tuple,
    vectorize: bool,
    chunk: int | None,
    out_shardings: Any,
):
    """One jitted function per (function, layout): every group of a sweep reuses it."""
    body = vectorized(fn, in_axes, chunk) if vectorize else fn
    return jax.jit(body, donate_argnums=donate, out_shardings=out_shardings)


_jit = functools.lru_cache(maxsize=32)(jax.jit)  # one compiled function per (bound) function


class Layout:
    """How a group of members lies on the ``(members, data)`` mesh.

    Vectorised: states stacked on a leading member axis sharded over ``members`` (``padded``
    members: a multiple of that axis). Sequential: one member, replicated. Batches are always
    sharded over ``data``. ``member_chunk`` (vectorised, member axis not sharded: ``members`` of
    size 1): map functions over ``member_chunk`` members at a time (:func:`vectorized`); None, 0
    or a chunk of at least ``size``: every member in one vmap.
    """

    def __init__(
        self,
        size: int,
        *,
        vectorize: bool,
        mesh: Mesh | None = None,
        member_chunk: int | None = None,
    ):
        member_chunk = check_chunk(member_chunk)
        if size < 1:
            raise ValueError(f"A member group needs at least one member; got size={size}.")
        if not vectorize and size != 1:
            raise ValueError("The sequential layout trains one member at a time (size=1).")
        self.mesh = sweep_mesh() if mesh is None else mesh
        shards = self.mesh.shape[MEMBER_AXIS]
        if not vectorize and shards != 1:
            raise ValueError("Sequential members train data-parallel: use member_shards=1.")
        self.size, self.vectorize = size, vectorize
        self.padded = math.ceil(size / shards) * shards if vectorize else 1
        chunked = vectorize and shards == 1 and member_chunk is not None
        self.chunk = member_chunk if chunked and member_chunk < self.padded else None
        spec = PartitionSpec(MEMBER_AXIS) if vectorize else PartitionSpec()
        self.state_sharding = NamedSharding(self.mesh, spec)
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    def map(
        self, fn: Callable, in_axes: tuple, donate: tuple[int, ...] = (), out_shardings: Any = None
    ) -> Callable:
        """``jit(vmap(fn, in_axes))`` (vectorised; in chunks of ``self.chunk`` members when set)
        or ``jit(fn)``; outputs replicated unless ``out_shardings`` says otherwise."""
        out = self.replicated if out_shardings is None else out_shardings
        return _compiled(fn, in_axes, donate, self.vectorize, self.chunk, out)

    def put(self, tree: Any) -> Any:
        """A stacked host tree (vectorised: padded, member axis sharded) or one member's tree
        (sequential: replicated) on the mesh."""
        if self.vectorize and self.padded > self.size:
            tree = jax.tree.map(
                lambda x: jnp.concatenate([x, jnp.repeat(x[:1], self.padded - self.size, 0)]),
                tree,
            )
        return place(tree, self.state_sharding)

    def batch(self, local: Any) -> Any:
        """This process's part of a batch -> global arrays sharded over ``data``."""
        return mesh_lib.shard_batch(local, self.mesh)

    def take(self, tree: Any) -> list[Any]:
        """Per-member host values of a replicated output, padding dropped."""
        host = mesh_lib.to_host(tree)
        if not self.vectorize:
            return [host]
        return [jax.tree.map(lambda x, k=k: x[k], host) for k in range(self.size)]


# --------------------------------------------------------------------------------------------------
# Finished members
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
        tmp.write_text(
            metrics_lib.dumps_strict({**result, "fingerprint": self.fingerprint}, indent=1)
        )
        tmp.replace(self.path(member))

    def pending(self, members: Sequence[Member]) -> list[Member]:
        return [m for m in members if self.load(m) is None]


def fingerprint(obj: Any) -> str:
    """A short digest of a JSON-serialisable object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# The program a sweep trains
# --------------------------------------------------------------------------------------------------


class Program(Protocol):
    """What a sweep trains, per member; the sweep vectorises it.

    ``tx``, ``learning_rate``: the optimizer and its schedule (``redundax.train.optim.build``);
    ``init(member)`` -> the member's ``TrainState`` (host side);
    ``loss_fn(model, batch, rng, value)`` -> ``(loss, aux)``: the engine's loss function with the
    member's swept value;
    ``eval_step(state, value, batch[, center])`` -> masked sums over the batch's examples
    (``batch["mask"]``) and ``"count"`` (as ``redundax.train.step.make_eval_step``'s; pure, one
    member); a first pass without ``center``, a second with ``eval_center(means of the first)``
    (e.g. the mean of a representation, for centred second moments);
    ``eval_metrics(means, centered_means)`` -> metrics from both passes' means over the held-out
    data (pure; leading member axis when vectorised);
    ``finish(layout, state, members)`` -> one result dict per member (host side).
    """

    tx: optax.GradientTransformation
    learning_rate: optax.Schedule | None

    def init(self, member: Member) -> TrainState: ...

    def loss_fn(self, model: Any, batch: Any, rng: jax.Array, value: jax.Array) -> tuple: ...

    def eval_step(
        self, state: TrainState, value: jax.Array, batch: Any, center: Any = None
    ) -> dict: ...

    def eval_center(self, means: Mapping[str, Any]) -> Any: ...

    def eval_metrics(self, means: Mapping[str, Any], centered: Mapping[str, Any]) -> dict: ...

    def finish(
        self, layout: Layout, state: TrainState, members: Sequence[Member]
    ) -> list[dict]: ...


@functools.lru_cache(maxsize=16)
def member_step(program: Program) -> Callable:
    """The engine's un-jitted train step of one member: ``(state, value, batch) -> (state,
    metrics)`` (``redundax.train.step.train_step_fn`` with the member's value in the loss)."""

    def train_step(state: TrainState, value: jax.Array, batch: Any):
        def loss_fn(model, batch, rng):
            return program.loss_fn(model, batch, rng, value)

        core = step_lib.train_step_fn(loss_fn, program.tx, learning_rate=program.learning_rate)
        return core(state, batch)

    return train_step


def init_members(program: Program, members: Sequence[Member], layout: Layout) -> tuple[Any, Any]:
    """``(state, values)`` of a group on the mesh (stacked when vectorised)."""
    values = np.asarray([m.value for m in members], np.float32)
    if layout.vectorize:
        return layout.put(stack([program.init(m) for m in members])), layout.put(values)
    return layout.put(program.init(members[0])), layout.put(values[0])


def evaluate_members(
    program: Program,
    layout: Layout,
    state: Any,
    values: Any,
    batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    *,
    batch_size: int,
) -> list[dict[str, float]]:
    """Each member's ``program.eval_metrics`` over the held-out ``batches()`` (process-local
    parts), in two passes of ``redundax.train.evaluate.evaluate_batches``: the first gives the
    means ``program.eval_center`` turns into a per-member center, the second the sums around it
    (centred second moments, accurate in float32 whatever the mean)."""
    first = layout.map(program.eval_step, in_axes=(0, 0, None))
    second = layout.map(program.eval_step, in_axes=(0, 0, None, 0))

    def run(step, *args):
        return evaluate_lib.evaluate_batches(
            lambda s, b: step(s, values, b, *args),
            state,
            batches(),
            batch_size=batch_size,
            mesh=layout.mesh,
        )

    means = run(first)
    center = place(np.asarray(program.eval_center(means), np.float32), layout.replicated)
    out = jax.device_get(_jit(program.eval_metrics)(means, run(second, center)))
    if not layout.vectorize:
        return [{k: float(v) for k, v in out.items()}]
    return [{k: float(v[i]) for k, v in out.items()} for i in range(layout.size)]


# --------------------------------------------------------------------------------------------------
# The training loop of a member group
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Schedule:
    """``num_steps`` steps in epochs of ``steps_per_epoch``; evaluate at every epoch end, every
    ``eval_every`` steps (0: only epochs) and at the last step; checkpoint every
    ``checkpoint_every`` steps (0: only at the end of the group) and on SIGTERM."""

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

    def is_checkpoint(self, step: int) -> bool:
        every = self.checkpoint_every
        return step == self.num_steps or (every > 0 and step % every == 0)


class _Histories:
    """The metric writer ``redundax.train.loop.train`` writes to: the loop's
    ``<tag>/train/<metric>`` means of a step, then the sweep's ``<tag>/val/<metric>``,
    ``<tag>/epoch``, ``<tag>/time`` of that step become one record per member
    ``{"step", "epoch", "train/...", "val/...", "time"}``: appended to its history, handed to
    ``on_eval`` and written (``<tag>/<name>``) to ``writer``."""

    def __init__(
        self,
        members: Sequence[Member],
        histories: list[list[dict]],
        writer: metrics_lib.Writer | None,
        on_eval: Callable[[Member, dict], None] | None,
        stacked: bool,
    ):
        self.members, self.histories, self.writer, self.on_eval = (
            members,
            histories,
            writer,
            on_eval,
        )
        self.stacked = stacked
        self._train: dict[str, dict[str, float]] = {}

    def write(self, step: int, record: Mapping[str, Any]) -> None:
        if not self.stacked:  # one unstacked member: its training means are `train/<metric>`
            tag = self.members[0].tag
            record = {f"{tag}/{n}" if n.startswith("train/") else n: v for n, v in record.items()}
        for k, m in enumerate(self.members):
            prefix = m.tag + "/"
            mine = {n[len(prefix) :]: float(v) for n, v in record.items() if n.startswith(prefix)}
            if "epoch" not in mine:  # the training means, kept for the evaluation of this step
                self._train[m.tag] = mine
                continue
            train = self._train.pop(m.tag, {}) if step else {}
            entry = {"step": int(step), "epoch": mine.pop("epoch"), **train}
            entry |= {n: v for n, v in mine.items() if n != "time"} | {"time": mine["time"]}
            self.histories[k].append(entry)
            if self.writer is not None:  # one record per member and evaluation
                self.writer.write(
                    step, {f"{prefix}{n}": v for n, v in entry.items() if n != "step"}
                )
            if self.on_eval is not None:
                self.on_eval(m, entry)

    def write_batch(self, step: int, fingerprint: str) -> None:
        if self.writer is not None:
            self.writer.write_batch(step, fingerprint)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()


def train_group(
    program: Program,
    members: Sequence[Member],
    layout: Layout,
    *,
    data: Callable[[], Any],
    eval_batches: Callable[[], Iterable[Mapping[str, np.ndarray]]],
    eval_batch_size: int,
    schedule: Schedule,
    checkpoint_dir: str | pathlib.Path | None = None,
    config: Any = None,
    log_dir: str | pathlib.Path | None = None,
    on_eval: Callable[[Member, dict], None] | None = None,
    progress: bool | None = None,
) -> tuple[Any, list[list[dict]]]:
    """Train one group of members for ``schedule.num_steps`` steps (resuming from a checkpoint)
    with the engine's loop, ``redundax.train.loop.train`` (stacked members when vectorised).

    Args:
      program: what each member trains.
      members: the group (``layout.size`` members).
      layout: vectorised (member axis on the mesh) or sequential.
      data: makes a fresh iterator of process-local batches (every call yields the same order),
        with ``get_state``/``set_state`` (a grain iterator, ``redundax.data.make_iterator``).
      eval_batches: makes the held-out batches (process-local parts) handed to
        ``program.eval_step`` through ``evaluate_batches``; ``eval_batch_size``: their global size.
      schedule: steps, epochs, evaluation and checkpoint cadence.
      checkpoint_dir: this group's ``Checkpointer`` directory (None: no checkpoints, no SIGTERM
        save); ``config`` is recorded there and a checkpoint of another config is refused.
      log_dir: this group's ``metrics.Writer`` directory (``metrics.jsonl``, TensorBoard):
        ``<member tag>/train/<metric>`` means since the previous evaluation, then
        ``<member tag>/val/<metric>``, ``/epoch``, ``/time``, at every evaluation.
      on_eval: called with (member, record) after every evaluation.
      progress: the loop's progress bar (None: when stdout is a terminal).

    Returns:
      The final state (stacked when vectorised, padding included) and each member's evaluation
      records ``{"step", "epoch", "train/<metric>", "val/<metric>", "time"}`` (``train/`` metrics
      are means since the previous evaluation; the first record, step 0, is the initialisation).

    Raises:
      failures.Preempted: after a SIGTERM, once the checkpoint of the current step is saved.
    """
    if len(members) != layout.size:
        raise ValueError(f"{len(members)} members for a layout of size {layout.size}.")
    state, values = init_members(program, members, layout)
    step_fn = layout.map(
        member_step(program),
        in_axes=(0, 0, None),
        donate=(0,),
        out_shardings=(layout.state_sharding, layout.replicated),
    )
    iterator = data()
    histories: list[list[dict]] = [[] for _ in members]
    start, ckpt = 0, None
    if checkpoint_dir is not None:
        every = schedule.checkpoint_every or schedule.num_steps
        ckpt = checkpoint_lib.Checkpointer(
            checkpoint_dir, every=max(every, 1), keep=1, config=config
        )
    resumed = ckpt is not None and ckpt.latest_step() is not None
    if resumed:
        state = ckpt.restore(state, iterator)
        meta = ckpt.restore_meta()
        start, histories = int(meta["step"]), meta["histories"]
        log.info("Resumed %d member(s) at step %d from %s", len(members), start, checkpoint_dir)
    writer = None
    if log_dir is not None:  # a resumed group rewrites its records after `start`: drop them
        writer = metrics_lib.Writer(log_dir, resume_step=start if resumed else -1)
    recorder = _Histories(members, histories, writer, on_eval, stacked=layout.vectorize)
    t0 = time.perf_counter()

    def evaluate(state: Any) -> dict[str, float]:
        val = evaluate_members(
            program, layout, state, values, eval_batches, batch_size=eval_batch_size
        )
        step = loop_lib.host_step(state)
        return {
            f"{m.tag}/{name}": value
            for m, v in zip(members, val, strict=True)
            for name, value in [
                ("epoch", step / schedule.steps_per_epoch),
                *((f"val/{n}", x) for n, x in v.items()),
                ("time", time.perf_counter() - t0),
            ]
        }

    with contextlib.ExitStack() as stack_:
        if ckpt is not None:
            stack_.enter_context(ckpt)
        if writer is not None:
            stack_.enter_context(writer)
        if start == 0:
            recorder.write(0, evaluate(state))  # the initialisation
        state = loop_lib.train(
            state,
            lambda state, batch: step_fn(state, values, batch),
            iterator,
            num_steps=schedule.num_steps,
            mesh=layout.mesh,
            writer=recorder,
            checkpointer=ckpt,
            eval_fn=evaluate,
            eval_every=schedule.is_eval,
            log_every=schedule.is_eval,
            progress=progress,
            desc="sweep",
            members=[m.tag for m in members] if layout.vectorize else None,
            checkpoint_meta=lambda: {"histories": copy.deepcopy(histories)},
        )
        step = loop_lib.host_step(state)
        if step < schedule.num_steps:
            raise failures.Preempted(f"SIGTERM: checkpoint saved at step {step}.")
    return state, histories


def run_sweep(
    program: Program,
    members: Sequence[Member],
    *,
    store: ResultStore,
    vectorize: bool,
    mesh: Mesh | None = None,
    member_chunk: int | None = None,
    checkpoint_root: str | pathlib.Path | None = None,
    log_root: str | pathlib.Path | None = None,
    progress: bool | None = None,
    **group_kwargs,
) -> tuple[dict[str, dict], float]:
    """Train and finish every member not yet in ``store``; return all results and the wall time.

    Vectorised: the pending members form one group (``jit(vmap(...))`` on ``mesh``, default
    ``sweep_mesh()``; ``member_chunk``: see :class:`Layout`). Sequential: one member at a time,
    data-parallel on the mesh. Each group
    checkpoints under ``checkpoint_root/<group>`` and writes its metric records under
    ``log_root/<group>``; finished members are saved to ``store`` as soon as their group ends, so
    a restart skips them; each result records its group (``{"id", "size", "vectorize",
    "seconds"}``: the wall time of training and finishing that group in the run that trained it).

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
    t0 = time.perf_counter()
    for i, group in enumerate(groups, 1):
        log.info("sweep group %d/%d: %s", i, len(groups), ", ".join(m.tag for m in group))
        layout = Layout(len(group), vectorize=vectorize, mesh=mesh, member_chunk=member_chunk)
        ids = [m.tag for m in group]
        name = group[0].tag if len(group) == 1 else "group-" + fingerprint(ids)
        g0 = time.perf_counter()
        state, histories = train_group(
            program,
            group,
            layout,
            checkpoint_dir=None
            if checkpoint_root is None
            else pathlib.Path(checkpoint_root) / name,
            log_dir=None if log_root is None else pathlib.Path(log_root) / name,
            progress=progress,
            **group_kwargs,
        )
        finals = program.finish(layout, state, group)
        group_info = {
            "id": fingerprint(ids),
            "size": len(group),
            "vectorize": vectorize,
            "seconds": time.perf_counter() - g0,
        }
        for m, history, final in zip(group, histories, finals, strict=True):
            result = {"value": m.value, "seed": m.seed, "history": history, **final}
            store.save(m, {**result, "group": group_info})
        if jax.process_count() > 1:  # every process reads the stored results
            multihost_utils.sync_global_devices(f"sweep group {name}")
    elapsed = time.perf_counter() - t0
    return {m.tag: store.load(m) for m in members}, elapsed


__all__ = [
    "DATA_AXIS",
    "MEMBER_AXIS",
    "Layout",
    "Member",
    "Program",
    "ResultStore",
    "Schedule",
    "check_chunk",
    "evaluate_members",
    "fingerprint",
    "grid",
    "index",
    "init_members",
    "member_step",
    "place",
    "run_sweep",
    "stack",
    "sweep_mesh",
    "train_group",
    "unstack",
    "vectorized",
]
