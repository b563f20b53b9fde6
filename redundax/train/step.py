"""Jitted train and eval steps built from an experiment's loss and metric functions.

API:

- `train_step_fn(loss_fn, tx, *, learning_rate=None, skip_nonfinite=False)`: the same step,
  un-jitted (pure), for callers that transform it further (a sweep vmaps it over members).
- `make_train_step(loss_fn, tx, *, mesh=None, learning_rate=None, donate=True)` ->
  `train_step(state, batch, **extra_args) -> (state, metrics)`, jitted, `state` donated.
  - `loss_fn(model, batch, rng) -> (loss, aux)`: `model` is a live `nnx.Module` (training mode)
    merged from the state; BatchNorm statistics it updates are kept. `rng` is the step's key
    (`redundax.train.state.step_rng`). `aux` is a dict of scalar metrics, except for the optional
    entry `aux["extra_args"]`: a dict passed to `tx.update` as keyword arguments (per-step
    signals computed in the forward pass, for `optax.GradientTransformationExtraArgs` such as
    RedReg) and not reported.
  - `extra_args` given to `train_step` are passed to `tx.update` as well (signals computed
    outside the step). A plain `GradientTransformation` is wrapped with
    `optax.with_extra_args_support`, so it ignores them.
  - `metrics`: `loss`, the entries of `aux`, `grad_norm` (global L2 norm of the
    gradient) and, with `learning_rate` (an optax schedule of the optimizer-update count),
    `learning_rate`.
  - `skip_nonfinite=True`: a step whose loss, gradient norm or update is NaN/Inf leaves the
    parameters,
    the other model state and the optimizer state unchanged (the step counter still advances)
    and reports the metric `skipped` = 1 (0 otherwise); the loop then warns instead of
    stopping (`redundax.train.loop.train`). Default False: the loop stops on divergence.
  - Gradient accumulation: give `optax.MultiSteps(tx, k)` (or `accumulate(tx, k)`) as `tx` to
    both `state.create` and `make_train_step`: every call consumes one micro-batch; the
    parameters change every `k` calls, by the optimizer applied to the mean gradient.
    `state.step` counts calls (micro-batches).
- `make_eval_step(metric_fn, *, mesh=None) -> eval_step(state, batch) -> sums`: `metric_fn(model,
  batch)` returns a dict of per-example values `(b,)` for the model in evaluation mode
  (`model.eval()`: BatchNorm running statistics, no dropout); `eval_step` returns their sums
  over the examples whose `batch["mask"]` is 1 (all when there is no mask) and `"count"`,
  the number of such examples. `redundax.train.loop.evaluate` turns them into means.
- `make_gradient_eval_step(loss_fn, reduce_fn, *, mesh=None)`: the same sums for measurements
  made of the gradient of the masked per-example losses (eval mode, no update), e.g. Taylor
  channel scores (`redundax.prune.channels.taylor_scores`).

With `mesh` (`redundax.train.mesh`) the outputs are pinned to replicated shardings, so the
state stays replicated while batches are sharded over `"data"`; the loss written as a plain
mean over the global batch then yields gradients of the global-batch loss.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from redundax.train import mesh as mesh_lib
from redundax.train.state import TrainState, step_rng

EXTRA_ARGS = "extra_args"
SKIPPED = "skipped"  # metric of a step built with skip_nonfinite: 1.0 when its update was dropped

LossFn = Callable[[nnx.Module, Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]
MetricFn = Callable[[nnx.Module, Mapping[str, jax.Array]], Mapping[str, jax.Array]]


def accumulate(tx: optax.GradientTransformation, every_k: int) -> optax.GradientTransformation:
    """`tx` applied to the mean gradient of every `every_k` consecutive train-step calls."""
    if not isinstance(every_k, int) or every_k < 1:
        raise ValueError(
            f"`every_k` (gradient accumulation steps) must be an int >= 1; got {every_k!r}."
        )
    if every_k == 1:
        return tx
    return optax.MultiSteps(tx, every_k_schedule=every_k).gradient_transformation()


def _update_count(state: TrainState) -> jax.Array:
    """Optimizer updates applied so far (`state.step` unless gradients are accumulated)."""
    opt_state = state.opt_state
    if isinstance(opt_state, optax.MultiStepsState):
        return opt_state.gradient_step
    return state.step


def train_step_fn(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    learning_rate: optax.Schedule | None = None,
    skip_nonfinite: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """The un-jitted `train_step(state, batch, **extra_args) -> (state, metrics)`: a pure
    function that `make_train_step` jits, and that a sweep vmaps over a member axis
    (`redundax.sweep`); see the module docstring."""
    if not callable(loss_fn):
        raise ValueError("`loss_fn` must be callable as loss_fn(model, batch, rng) -> (loss, aux).")
    tx = optax.with_extra_args_support(tx)

    def train_step(state: TrainState, batch: Any, **extra_args: Any):
        rng = step_rng(state)

        def loss_of(params, other):
            model = nnx.merge(state.graphdef, params, other, copy=True)
            loss, aux = loss_fn(model, batch, rng)
            _, _, other = nnx.split(model, nnx.Param, ...)
            return loss, (dict(aux), other)

        (loss, (aux, other)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            state.params, state.other
        )
        tx_args = {**aux.pop(EXTRA_ARGS, {}), **extra_args}
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **tx_args)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
        if learning_rate is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate(_update_count(state)), jnp.float32)
        if skip_nonfinite:
            ok = (
                jnp.isfinite(loss)
                & jnp.isfinite(metrics["grad_norm"])
                & jnp.isfinite(optax.tree.norm(updates))
            )
            params, other, opt_state = jax.tree.map(
                lambda new, old: jnp.where(ok, new, old),
                (params, other, opt_state),
                (state.params, state.other, state.opt_state),
            )
            metrics[SKIPPED] = jnp.where(ok, 0.0, 1.0).astype(jnp.float32)
        new_state = state.replace(
            params=params, other=other, opt_state=opt_state, step=state.step + 1
        )
        return new_state, metrics

    return train_step


def make_train_step(
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    *,
    mesh: Mesh | None = None,
    learning_rate: optax.Schedule | None = None,
    donate: bool = True,
    skip_nonfinite: bool = False,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Jitted `train_step(state, batch, **extra_args) -> (state, metrics)` (module docstring)."""
    train_step = train_step_fn(
        loss_fn, tx, learning_rate=learning_rate, skip_nonfinite=skip_nonfinite
    )
    out_shardings = None if mesh is None else mesh_lib.replicated_sharding(mesh)
    return jax.jit(train_step, donate_argnums=(0,) if donate else (), out_shardings=out_shardings)


def _example_mask(batch: Any) -> tuple[int, jax.Array]:
    """`(n, mask)`: the batch's example count and its `"mask"` as float32 (ones without one)."""
    n = jax.tree.leaves(batch)[0].shape[0]
    mask = batch["mask"].astype(jnp.float32) if "mask" in batch else jnp.ones((n,), jnp.float32)
    return n, mask


def make_eval_step(
    metric_fn: MetricFn, *, mesh: Mesh | None = None
) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """Jitted `eval_step(state, batch) -> masked sums and "count"` (module docstring)."""
    if not callable(metric_fn):
        raise ValueError("`metric_fn` must be callable as metric_fn(model, batch) -> dict.")

    def eval_step(state: TrainState, batch: Any) -> dict[str, jax.Array]:
        model = state.model()
        model.eval()
        values = metric_fn(model, batch)
        n, mask = _example_mask(batch)
        sums = {}
        for name, v in values.items():
            v = jnp.asarray(v, jnp.float32)
            if v.shape != (n,):
                raise ValueError(
                    f"metric_fn must return per-example values of shape ({n},); {name!r} has "
                    f"shape {v.shape}."
                )
            sums[name] = jnp.sum(v * mask)
        sums["count"] = jnp.sum(mask)
        return sums

    out_shardings = None if mesh is None else mesh_lib.replicated_sharding(mesh)
    return jax.jit(eval_step, out_shardings=out_shardings)


def make_gradient_eval_step(
    loss_fn: MetricFn,
    reduce_fn: Callable[[Any, Any], Mapping[str, jax.Array]],
    *,
    mesh: Mesh | None = None,
) -> Callable[[TrainState, Any], dict[str, jax.Array]]:
    """Jitted `grad_step(state, batch) -> sums and "count"` for gradient-based measurements that
    update nothing (e.g. first-order Taylor channel importance): with the model in evaluation
    mode, `grads` = the gradient with respect to the parameters (`nnx.Param`) of the masked sum
    of the per-example losses `loss_fn(model, batch) -> (b,)`, and the outputs are
    `reduce_fn(params, grads)` (each a sum over the batch's examples, as the gradient of a sum
    is) and `"count"`, so `redundax.train.evaluate.evaluate_batches` turns them into means over
    whole (sharded, padded) batches like `make_eval_step`'s sums."""
    if not callable(loss_fn) or not callable(reduce_fn):
        raise ValueError(
            "`loss_fn(model, batch) -> (b,) losses` and `reduce_fn(params, grads) -> dict` "
            "must be callable."
        )

    def grad_step(state: TrainState, batch: Any) -> dict[str, jax.Array]:
        model = state.model()
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        n, mask = _example_mask(batch)

        def total(p):
            losses = jnp.asarray(loss_fn(nnx.merge(graphdef, p, rest), batch))
            if losses.shape != (n,):
                raise ValueError(
                    f"loss_fn must return per-example losses of shape ({n},); got {losses.shape}."
                )
            return jnp.sum(losses * mask)

        grads = jax.grad(total)(params)
        return {**reduce_fn(params, grads), "count": jnp.sum(mask)}

    out_shardings = None if mesh is None else mesh_lib.replicated_sharding(mesh)
    return jax.jit(grad_step, out_shardings=out_shardings)
