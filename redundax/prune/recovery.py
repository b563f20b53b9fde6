"""Training of pruned CNNs on the engine: base training, masked recovery fine-tunes, evaluation.

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (App. C: the base networks
are trained by SGD with momentum and weight decay under a cosine schedule; every pruned network is
fine-tuned by SGD, lr 0.01, momentum 0.9, weight decay 1e-4, for min(5 epochs, 200 batches)).

Everything runs through `redundax.train`: `optim.build` (the one optimizer builder), the step
factory `step.make_train_step`, the loop `loop.train` (checkpoints, SIGTERM, progress) and
`evaluate.evaluate_batches`, on a `data` mesh (batches sharded, state replicated, BatchNorm with
global-batch statistics).

- `ArrayStream(arrays, batch_size, seed)`: endless shuffled global minibatches of in-memory arrays
  (remainder dropped), this process's part of each; checkpointable (`get_state` / `set_state`), so a
  resumed fine-tune continues on the same batches.
- `train(model, batches, *, steps, optim, mesh, ...) -> TrainState | None`: `steps` steps of
  softmax cross-entropy; with `masks` (and `graph`) the masked channels start at zero
  (`redundax.prune.graph.apply_masks`) and `keep_pruned_zero` keeps them exactly zero after every
  update; with `checkpoint_dir` it resumes from and saves to an orbax `Checkpointer` (None when
  stopped by SIGTERM: rerun to resume).
- `evaluate(model_or_state, images, labels, *, batch_size, mesh, metric_fn=None)
  -> {"accuracy", "loss"}`: eval-mode means over a whole split (fixed-size padded batches, one
  compilation per model); with `metric_fn`, the means of its per-example values instead (the
  lesions of `redundax.prune.channels.lesion_damage`).
- `Recoveries`: the recovery fine-tunes of one trained model, each resumable, accuracies recorded
  in `<directory>/recovery.json` (a rerun skips the recorded ones).
"""

from __future__ import annotations

import functools
import json
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from redundax.prune import graph as graph_lib
from redundax.train import checkpoint as checkpoint_lib
from redundax.train import evaluate as evaluate_lib
from redundax.train import failures, loop, metrics, optim
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib
from redundax.train import step as step_lib
from redundax.transforms.masking import KeepPrunedZeroState, keep_pruned_zero

PRUNE_MASK = "prune_mask"  # the train step's extra argument holding the 0/1 parameter mask


# ------------------------------------------------------------------------------------------------
# Loss, metrics, masked updates


def loss_fn(model: nnx.Module, batch: Mapping[str, jax.Array], rng: jax.Array):
    """Mean softmax cross-entropy of `batch["image"]` against `batch["label"]` (train mode)."""
    del rng  # no stochastic layers
    logits = model(batch["image"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean(), {}


def metric_fn(model: nnx.Module, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Per-example cross-entropy and accuracy (eval mode)."""
    logits = model(batch["image"])
    return {
        "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
        "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
    }


def keep_masked_zero() -> optax.GradientTransformationExtraArgs:
    """`redundax.transforms.masking.keep_pruned_zero` whose mask is the step's extra argument
    `prune_mask` (no mask: updates unchanged). One compiled train step then serves every mask of
    a pruning curve, where a mask baked into the transform would compile one step per mask."""

    def init_fn(params: Any) -> KeepPrunedZeroState:
        del params
        return KeepPrunedZeroState()

    def update_fn(updates, state, params=None, *, prune_mask=None, **extra):
        del extra
        if prune_mask is None:
            return updates, state
        return keep_pruned_zero(prune_mask).update(updates, state, params)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _frozen(section: Mapping[str, Any] | Any) -> tuple:
    items = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in items.items()))


@functools.lru_cache(maxsize=32)
def _compiled(section: tuple, total_steps: int, mesh: Mesh):
    """`(tx, train_step)` built once per optimizer section, step count and mesh: every model
    (and every mask) of the same shapes reuses one compilation."""
    tx, schedule = optim.build(dict(section), max(total_steps, 1))
    tx = optax.chain(tx, keep_masked_zero())
    train_step = step_lib.make_train_step(loss_fn, tx, mesh=mesh, learning_rate=schedule)
    return tx, train_step


@functools.lru_cache(maxsize=8)
def _eval_step(mesh: Mesh):
    return step_lib.make_eval_step(metric_fn, mesh=mesh)


# ------------------------------------------------------------------------------------------------
# Data


class ArrayStream:
    """Endless shuffled global minibatches of in-memory arrays (module docstring).

    Epoch e draws the e-th permutation of `np.random.default_rng(seed)` and yields its consecutive
    `batch_size` slices, dropping the remainder; every process gets its `1 / process_count` part
    of each global batch (`redundax.train.mesh.shard_batch` joins them in process order).
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, seed: int):
        sizes = {len(v) for v in arrays.values()}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"`arrays` need one common, non-zero length; got {sizes}.")
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
        self.arrays, self.n, self.seed = dict(arrays), sizes.pop(), int(seed)
        self.batch_size = min(int(batch_size), self.n)
        if self.batch_size % jax.process_count():
            raise ValueError(
                f"`batch_size` {self.batch_size} must split evenly over {jax.process_count()} "
                "processes."
            )
        self.set_state(b'{"epoch": 0, "position": 0}')

    def __iter__(self) -> ArrayStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.position + self.batch_size > self.n:
            self.epoch, self.position = self.epoch + 1, 0
            self._perm = self._rng.permutation(self.n)
        idx = self._perm[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        local = self.batch_size // jax.process_count()
        idx = idx[jax.process_index() * local : (jax.process_index() + 1) * local]
        return {k: v[idx] for k, v in self.arrays.items()}

    def get_state(self) -> bytes:
        return json.dumps({"epoch": self.epoch, "position": self.position}).encode()

    def set_state(self, state: bytes) -> None:
        s = json.loads(state)
        self._rng = np.random.default_rng(self.seed)
        for _ in range(int(s["epoch"]) + 1):
            self._perm = self._rng.permutation(self.n)
        self.epoch, self.position = int(s["epoch"]), int(s["position"])

    def start_prefetch(self) -> None:
        """Nothing to prefetch (grain's checkpoint handler calls this after a restore)."""


# ------------------------------------------------------------------------------------------------
# Training and evaluation


def train(
    model: nnx.Module,
    batches: Any,
    *,
    steps: int,
    optim_section: Mapping[str, Any] | Any,
    mesh: Mesh,
    seed: int = 0,
    graph: graph_lib.ChannelGraph | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    checkpoint_dir: str | pathlib.Path | None = None,
    checkpoint_every: int = 1000,
    config: Any = None,
    writer: metrics.Writer | None = None,
    log_every: int = 50,
    progress: bool | None = None,
    desc: str = "train",
) -> state_lib.TrainState | None:
    """`steps` steps of cross-entropy training on the engine (module docstring).

    Args:
      model: the network (not modified: a copy is trained).
      batches: process-local `{"image", "label"}` batches (`ArrayStream`, a grain iterator).
      steps: optimizer steps (the schedule of `optim_section` spans them).
      optim_section: the fields of `redundax.train.optim.build` (SGD, AdamW, schedules).
      mesh: the `data` mesh (`redundax.train.mesh.make_data_mesh`).
      seed: the train state's RNG seed.
      graph, masks: prune these channels and keep them at zero (a recovery fine-tune).
      checkpoint_dir: resume from and save to this directory every `checkpoint_every` steps and at
        the end; `config` (optional) is recorded there and checked on resume.
      writer, log_every, progress, desc: metrics and progress of `redundax.train.loop.train`.

    Returns:
      The final state (`state.model()` is the trained network), or None when a SIGTERM stopped
      training after saving a checkpoint.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"`steps` must be a non-negative int; got {steps!r}.")
    model = nnx.clone(model)
    mask = None
    if masks is not None:
        if graph is None:
            raise ValueError("`masks` needs the model's `graph`.")
        model = graph_lib.apply_masks(model, graph, masks)
    model.train()
    tx, train_step = _compiled(_frozen(optim_section), steps, mesh)
    state = state_lib.create(model, tx, seed)
    if masks is not None:
        mask = mesh_lib.replicate(graph_lib.multipliers_like(state.params, graph, masks), mesh)
        train_step = functools.partial(train_step, **{PRUNE_MASK: mask})
    state = mesh_lib.replicate(state, mesh)
    if checkpoint_dir is None:
        return loop.train(
            state, train_step, batches, num_steps=steps, mesh=mesh, writer=writer,
            log_every=log_every, progress=progress, desc=desc,
        )  # fmt: skip
    with checkpoint_lib.Checkpointer(
        checkpoint_dir, every=checkpoint_every, keep=1, config=config
    ) as ckpt:
        state = ckpt.restore(state, batches)
        state = loop.train(
            state, train_step, batches, num_steps=steps, mesh=mesh, writer=writer,
            checkpointer=ckpt, log_every=log_every, progress=progress, desc=desc,
        )  # fmt: skip
    return state if int(mesh_lib.to_host(state.step)) >= steps else None


def as_state(model: nnx.Module | state_lib.TrainState, mesh: Mesh) -> state_lib.TrainState:
    """A replicated train state holding `model` (no optimizer) for evaluation."""
    if isinstance(model, state_lib.TrainState):
        return model
    return mesh_lib.replicate(state_lib.create(model, optax.identity(), 0), mesh)


def evaluate(
    model: nnx.Module | state_lib.TrainState,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 512,
    mesh: Mesh | None = None,
    metric_fn: step_lib.MetricFn | None = None,
) -> dict[str, float]:
    """Eval-mode means over whole arrays (module docstring): accuracy and cross-entropy, or the
    per-example values of `metric_fn(model, batch)` (`redundax.train.step.make_eval_step`)."""
    mesh = mesh_lib.make_data_mesh() if mesh is None else mesh
    arrays = {"image": np.asarray(images), "label": np.asarray(labels)}
    size = max(1, min(int(batch_size), len(arrays["label"])))
    eval_step = (
        _eval_step(mesh) if metric_fn is None else step_lib.make_eval_step(metric_fn, mesh=mesh)
    )
    return evaluate_lib.evaluate_batches(
        eval_step,
        as_state(model, mesh),
        evaluate_lib.array_batches(arrays, size, mesh),
        batch_size=size,
        mesh=mesh,
    )


class Recoveries:
    """The masked recovery fine-tunes of one trained model, each resumable (module docstring).

    `recoveries(key, masks) -> accuracy | None` fine-tunes `model` under `masks` for `steps`
    steps on a fresh `ArrayStream(train, batch_size, seed)` and returns the test accuracy; None
    when a SIGTERM stopped it (its checkpoint is under `directory/<key>`; a rerun resumes it).
    With `directory`, a finished key's accuracy is recorded in `directory/recovery.json` and
    returned without training on a rerun; its checkpoint is then removed.
    """

    RECORD = "recovery.json"

    def __init__(
        self,
        model: nnx.Module,
        graph: graph_lib.ChannelGraph,
        train_arrays: tuple[np.ndarray, np.ndarray],
        test_arrays: tuple[np.ndarray, np.ndarray],
        *,
        steps: int,
        optim_section: Mapping[str, Any] | Any,
        batch_size: int,
        seed: int,
        mesh: Mesh,
        eval_batch_size: int = 512,
        directory: str | pathlib.Path | None = None,
        checkpoint_every: int = 1000,
    ):
        self.model, self.graph, self.mesh = model, graph, mesh
        self.train_arrays = {"image": train_arrays[0], "label": train_arrays[1]}
        self.test_arrays = test_arrays
        self.steps, self.optim_section = steps, optim_section
        self.batch_size, self.seed, self.eval_batch_size = batch_size, seed, eval_batch_size
        self.checkpoint_every = checkpoint_every
        self.directory = None if directory is None else pathlib.Path(directory)
        self.done: dict[str, float] = {}
        if self.directory is not None and (self.directory / self.RECORD).is_file():
            self.done = metrics.loads_json_file(self.directory / self.RECORD)

    def __call__(self, key: str, masks: Mapping[str, np.ndarray]) -> float | None:
        if key in self.done:
            return self.done[key]
        ckpt_dir = None if self.directory is None else self.directory / key
        try:
            state = train(
                self.model,
                ArrayStream(self.train_arrays, self.batch_size, self.seed),
                steps=self.steps,
                optim_section=self.optim_section,
                mesh=self.mesh,
                graph=self.graph,
                masks=masks,
                checkpoint_dir=ckpt_dir,
                checkpoint_every=self.checkpoint_every,
                progress=False,
                log_every=max(self.steps, 1),
                desc=f"recovery {key}",
            )
        except failures.Diverged as error:
            # One point of a pruning curve, not the run: score the network the diverged
            # fine-tune ends in (non-finite parameters), as an unchecked fine-tune would.
            logging.warning("recovery %s diverged, scored as a non-finite network: %s", key, error)
            state = as_state(self.model, self.mesh)
            state = state.replace(params=jax.tree.map(lambda p: p * jnp.nan, state.params))
        if state is None:
            return None
        acc = evaluate(state, *self.test_arrays, batch_size=self.eval_batch_size, mesh=self.mesh)[
            "accuracy"
        ]
        self.done[key] = acc
        if self.directory is not None and jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"recovery {key} finished")
        if self.directory is not None and jax.process_index() == 0:
            metrics.write_json(self.directory / self.RECORD, self.done)
            shutil.rmtree(ckpt_dir, ignore_errors=True)
        return acc
