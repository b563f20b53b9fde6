"""Train state: a Flax NNX model in functional-core form, its optimizer state, step and RNG.

API:

- `TrainState`: a pytree with fields
  - `graphdef`: the model's static structure (`nnx.split`), not a leaf;
  - `params`: `nnx.State` of the `nnx.Param` variables (what the optimizer updates);
  - `other`: `nnx.State` of every other variable (BatchNorm statistics, RNG counters, ...);
  - `opt_state`: the optax state of `params`;
  - `step`: int32 scalar, optimizer steps taken (train-step calls);
  - `rng`: a typed PRNG key; step `t` uses `jax.random.fold_in(rng, t)`, so the randomness of
    a step depends only on the seed and the step number (resumes reproduce it exactly).
  `state.model()` merges a live `nnx.Module` back (for evaluation, analysis, saving).
- `create(model, tx, rng) -> TrainState`: split `model` and initialise `tx` on its params.
- `step_rng(state) -> key`: the key of the current step.

The state is replicated over the mesh (`redundax.train.mesh.replicate`) and donated to the
jitted train step (`redundax.train.step`).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx


@flax.struct.dataclass
class TrainState:
    """Everything a training run updates (module docstring)."""

    graphdef: nnx.GraphDef = flax.struct.field(pytree_node=False)
    params: nnx.State
    other: nnx.State
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array

    def model(self) -> nnx.Module:
        """A live module holding this state's parameters and statistics."""
        return nnx.merge(self.graphdef, self.params, self.other, copy=True)


def _as_key(rng: Any) -> jax.Array:
    if isinstance(rng, int):
        return jax.random.key(rng)
    rng = jnp.asarray(rng)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return rng
    if rng.dtype == jnp.uint32 and rng.shape == (2,):
        return jax.random.wrap_key_data(rng)
    raise ValueError(
        f"`rng` must be an int seed or a PRNG key (jax.random.key); got {rng.dtype}{rng.shape}."
    )


def create(model: nnx.Module, tx: optax.GradientTransformation, rng: Any) -> TrainState:
    """Split `model` into params and other state and initialise `tx` on the params.

    Args:
      model: an NNX module in training mode.
      tx: the optimizer (any optax transform, `optax.MultiSteps` included).
      rng: int seed or PRNG key for the per-step randomness given to the loss function.
    """
    if not isinstance(model, nnx.Module):
        raise ValueError(f"`model` must be a flax.nnx.Module; got {type(model).__name__}.")
    graphdef, params, other = nnx.split(model, nnx.Param, ...)
    return TrainState(
        graphdef=graphdef,
        params=params,
        other=other,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=_as_key(rng),
    )


def step_rng(state: TrainState) -> jax.Array:
    """The PRNG key of step `state.step`: `fold_in(state.rng, state.step)`."""
    return jax.random.fold_in(state.rng, state.step)
