"""Fine-tuning a (pruned) model on the training engine: resumable, data-parallel, one call.

The recovery fine-tunes of layer pruning (distillation towards the unpruned model's embeddings)
and the GLUE fine-tunes (`redundax.glue`) run through the platform's pieces, so they train on a
`data` mesh over every device and process, checkpoint, resume and stop on SIGTERM like every
other experiment:

- `ShuffledBatches(num_examples, batch_size, seed, fetch)`: an endless iterator of global batches
  of example indices (a fresh `np.random.default_rng(seed)` permutation per epoch, the last partial
  batch dropped), `fetch(indices) -> dict of arrays`; each process receives its rows of the
  global batch. Its position is a step count, saved with the checkpoints (`get_state` /
  `set_state`), so a resumed fine-tune sees the batches an uninterrupted one would.
- `optim_section(section, total_steps) -> dict`: an `optim` config section for
  `redundax.train.optim.build`, with `warmup_fraction` (of `total_steps`, at least one step when
  positive) turned into `warmup_steps` (e.g. RoBERTa's 6% linear warm-up, Liu et al., 2019).
- `finetune(model, loss_fn, batches, *, num_steps, optim, mesh, rundir, ...) -> TrainState | None`:
  `optim.build` -> `step.make_train_step` -> `loop.train` with a `Checkpointer` in
  `rundir/checkpoints` and metrics in `rundir/metrics.jsonl`; None when a SIGTERM stopped it
  (rerun to resume). A finished fine-tune rerun restores its last checkpoint and trains no step.
- `host_model(state)`: the trained model with process-local NumPy-backed parameters (the same
  on every process), for analyses that run outside the mesh.
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from redundax.train import checkpoint as checkpoint_lib
from redundax.train import failures, loop, optim, step
from redundax.train import mesh as mesh_lib
from redundax.train import metrics as metrics_lib
from redundax.train import state as state_lib


class ShuffledBatches:
    """Endless shuffled global batches, this process's rows of each (module docstring)."""

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int,
        fetch: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int; got {batch_size!r}.")
        if batch_size > num_examples:
            raise ValueError(
                f"`batch_size`={batch_size} exceeds the {num_examples} training examples; lower "
                "the batch size (config.data.batch_size)."
            )
        procs = jax.process_count()
        if batch_size % procs:
            raise ValueError(
                f"`batch_size`={batch_size} must be a multiple of the {procs} processes."
            )
        self.num_examples, self.batch_size, self.seed, self.fetch = (
            num_examples,
            batch_size,
            seed,
            fetch,
        )
        self.per_epoch = num_examples // batch_size
        self.step = 0
        self._rng = np.random.default_rng(seed)
        self._orders: list[np.ndarray] = []

    def indices(self, step: int) -> np.ndarray:
        """The example indices of global batch `step`."""
        epoch, i = divmod(int(step), self.per_epoch)
        while len(self._orders) <= epoch:
            self._orders.append(self._rng.permutation(self.num_examples))
        return self._orders[epoch][i * self.batch_size : (i + 1) * self.batch_size]

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.fetch(self.indices(self.step))
        self.step += 1
        local = self.batch_size // jax.process_count()
        lo = jax.process_index() * local
        return {k: np.asarray(v)[lo : lo + local] for k, v in batch.items()}

    # grain's checkpoint handler saves and restores any iterator with these (bytes) methods.
    def get_state(self) -> bytes:
        return json.dumps({"step": self.step}).encode()

    def set_state(self, state: bytes) -> None:
        self.step = int(json.loads(state)["step"])

    def start_prefetch(self) -> None:
        """Nothing to prefetch (called by grain after a restore)."""


def optim_section(section: Any, total_steps: int) -> dict[str, Any]:
    """`section` as a dict for `optim.build`, `warmup_fraction` turned into `warmup_steps`."""
    fields = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    fraction = fields.pop("warmup_fraction", None)
    if fraction is not None:
        if "warmup_steps" in fields:
            raise ValueError(
                "optim.warmup_fraction and optim.warmup_steps are both set; keep one of them."
            )
        if not 0 <= float(fraction) < 1:
            raise ValueError(f"optim.warmup_fraction must lie in [0, 1); got {fraction}.")
        fields["warmup_steps"] = max(1, int(float(fraction) * total_steps)) if fraction else 0
    return fields


def _frozen(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value


@functools.lru_cache(maxsize=16)
def _train_step(loss_fn: Callable, fields: tuple, total_steps: int, mesh: Mesh):
    """`(tx, train_step)`, cached: fine-tunes with the same settings share one compilation per
    model shape (`loss_fn` must be the same object)."""
    tx, schedule = optim.build(dict(fields), total_steps)
    return tx, step.make_train_step(loss_fn, tx, mesh=mesh, learning_rate=schedule)


def detached_copy(model: nnx.Module) -> nnx.Module:
    """A copy of `model` with its own buffers (safe to donate to a jitted train step)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda x: jnp.array(x, copy=True), state))


def finetune(
    model: nnx.Module,
    loss_fn: step.LossFn,
    batches: ShuffledBatches,
    *,
    num_steps: int,
    optim_config: Any,
    mesh: Mesh,
    rundir: str | pathlib.Path,
    config: Any = None,
    checkpoint_every: int = 100,
    log_every: int = 10,
    progress: bool | None = None,
    desc: str = "finetune",
    seed: int = 0,
    evaluators: Mapping[str, loop.Evaluator] | None = None,
) -> state_lib.TrainState | None:
    """Fine-tune `model` for `num_steps` steps (module docstring); `model` is not changed.

    Args:
      loss_fn: `loss_fn(model, batch, rng) -> (loss, aux)` (`redundax.train.step`).
      optim_config: the `optim` section (`optim_section` fields).
      rundir: where this fine-tune keeps `checkpoints/` and `metrics.jsonl`.
      config: recorded with the checkpoints; a rerun under a different config is refused.

    Returns:
      The final `TrainState`, replicated over `mesh`; None when a SIGTERM arrived (a checkpoint
      was saved; rerun to resume), also at the last step, so that the run stops there.
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"`num_steps` must be a positive int; got {num_steps!r}.")
    fields = optim_section(optim_config, num_steps)
    frozen = tuple(sorted((k, _frozen(v)) for k, v in fields.items()))
    tx, train_step = _train_step(loss_fn, frozen, num_steps, mesh)
    state = mesh_lib.replicate(state_lib.create(detached_copy(model), tx, seed), mesh)
    rundir = pathlib.Path(rundir)
    ckpt = checkpoint_lib.Checkpointer(
        rundir / checkpoint_lib.CHECKPOINT_DIR, every=checkpoint_every, keep=1, config=config
    )
    state = ckpt.restore(state, batches)
    resumed = int(mesh_lib.to_host(state.step))
    with metrics_lib.Writer(rundir, resume_step=resumed, tensorboard=False) as writer, ckpt:
        state = loop.train(
            state,
            train_step,
            batches,
            num_steps=num_steps,
            mesh=mesh,
            writer=writer,
            checkpointer=ckpt,
            log_every=log_every,
            progress=progress,
            desc=desc,
            evaluators=evaluators,
        )
    if int(mesh_lib.to_host(state.step)) < num_steps or failures.was_preempted():
        return None  # a SIGTERM, even one at the last step, stops the run after the save
    return state


def host_model(state: state_lib.TrainState) -> nnx.Module:
    """`state`'s model with process-local parameters (identical on every process)."""

    def local(x: jax.Array) -> jax.Array:
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):  # dropout RNG streams
            data = jnp.asarray(mesh_lib.to_host(jax.random.key_data(x)))
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jnp.asarray(mesh_lib.to_host(x))

    graphdef, variables = nnx.split(state.model())
    return nnx.merge(graphdef, jax.tree.map(local, variables))


__all__ = ["ShuffledBatches", "detached_copy", "finetune", "host_model", "optim_section"]
