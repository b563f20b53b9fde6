"""CNN image classification on the shared training platform.

`python -m experiments.classify --config configs/classify.py[:preset] --workdir DIR`

A ResNet (`redundax.models.resnet`) trained with softmax cross-entropy by SGD with momentum,
linear warm-up and cosine decay; evaluated on the test split. Writes to the workdir:
`config.json`, `metrics.jsonl` (with `monitor/<layer>/<metric>`: the redundancy of every conv
layer on held-out images, `redundax.monitor`), TensorBoard events, `checkpoints/`, `results.json`
and `results.md`. Re-running with the same workdir resumes from the newest checkpoint (and after a
finished run, only evaluates). The sections below follow the order of a run.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from configs import classify as classify_config
from redundax import data, monitor
from redundax.models.resnet import ResNet
from redundax.train import checkpoint, cli, config_schema, loop, metrics, optim, step
from redundax.train import mesh as mesh_lib
from redundax.train import state as state_lib

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "classify.py")


def make_model(config: ml_collections.ConfigDict, spec: data.DatasetSpec) -> ResNet:
    return ResNet(
        spec.num_classes,
        in_channels=spec.image_shape[-1],
        widths=tuple(config.model.widths),
        blocks=tuple(config.model.blocks),
        rngs=nnx.Rngs(config.seed),
    )


def num_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """`config.train.steps` if set, else `config.train.epochs` epochs."""
    steps = config.train.steps
    if steps is not None:
        if steps < 1:
            raise ValueError(f"config.train.steps must be >= 1 or None; got {steps}.")
        return steps
    return config.train.epochs * steps_per_epoch


def make_optimizer(
    config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """`config.optim` through the one optimizer builder (`redundax.train.optim.build`): SGD with
    momentum, L2 weight decay on the gradient, warm-up and cosine decay.

    The schedule counts optimizer updates; with gradient accumulation an epoch has
    `steps_per_epoch / accumulate_steps` of them.
    """
    o = config.optim
    updates_per_epoch = max(1, steps_per_epoch // o.accumulate_steps)
    total = max(1, num_steps(config, steps_per_epoch) // o.accumulate_steps)
    section = config_schema.epochs_to_steps(o, updates_per_epoch)
    section["warmup_steps"] = min(section["warmup_steps"], total - 1)
    tx, schedule = optim.build(section, total)
    return step.accumulate(tx, o.accumulate_steps), schedule


def make_loss_fn(label_smoothing: float):
    def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        del rng  # no stochastic layers
        logits = model(batch["image"])
        num_classes = logits.shape[-1]
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], num_classes), label_smoothing)
        loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"accuracy": accuracy}

    return loss_fn


def metric_fn(model: nnx.Module, batch: dict) -> dict[str, jax.Array]:
    logits = model(batch["image"])
    return {
        "loss": optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]),
        "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32),
    }


def monitor_evaluators(
    config: ml_collections.ConfigDict, images: np.ndarray
) -> dict[str, loop.Evaluator]:
    """`{"monitor": Evaluator}` measuring `config.monitor.where` layers on the first
    `config.monitor.num_examples` images (this process's share of each batch); `{}` when off."""
    c = config.monitor
    if not c.enabled:
        return {}
    held_out = images[: c.num_examples]
    procs, p = jax.process_count(), jax.process_index()
    local = [np.array_split(held_out[i : i + c.batch_size], procs)[p]
             for i in range(0, len(held_out), c.batch_size)]  # fmt: skip
    fn = monitor.evaluator(local, where=c.where, metrics=tuple(c.metrics), reduce=c.reduce)
    return {"monitor": loop.Evaluator(fn, every=c.every_steps)}


def write_results(workdir: pathlib.Path, results: dict[str, Any]) -> None:
    if jax.process_index() != 0:
        return
    metrics.write_json(workdir / "results.json", results)
    rows = "\n".join(
        f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
        for k, v in results.items()
    )
    (workdir / "results.md").write_text(
        f"# classify: {results['dataset']}\n\n| quantity | value |\n| --- | --- |\n{rows}\n"
    )


def run(
    config: ml_collections.ConfigDict,
    workdir: pathlib.Path,
    *,
    schema: ml_collections.ConfigDict | None = None,
) -> dict[str, Any] | None:
    """Train and evaluate; returns the results (None when stopped by a preemption).

    `config` must have the fields of `schema` (default: configs/classify.py's default config;
    `redundax.train.config_schema.check_fields`), checked before anything is created.
    """
    start = time.time()
    config_schema.check_fields(config, classify_config.get_config() if schema is None else schema)
    # ------------------------------------------------------------------ mesh
    mesh = mesh_lib.make_data_mesh()

    # ------------------------------------------------------------------ data
    spec = data.dataset_info(config.data.name)
    train_source = data.get_source(config.data.name, "train", config.data.data_dir)
    steps_per_epoch = data.steps_per_epoch(len(train_source), config.data.batch_size)
    total_steps = num_steps(config, steps_per_epoch)
    batches = data.make_iterator(
        train_source,
        global_batch_size=config.data.batch_size,
        seed=config.seed,
        augment=config.data.augment,
    )
    test_images, test_labels = data.load_arrays(config.data.name, "test", config.data.data_dir)
    test_set = {"image": test_images, "label": test_labels}

    # ------------------------------------------------------------------ model and optimizer
    model = make_model(config, spec)
    num_params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    tx, schedule = make_optimizer(config, steps_per_epoch)
    state = mesh_lib.replicate(state_lib.create(model, tx, config.seed), mesh)

    # ------------------------------------------------------------------ checkpoint (resume)
    ckpt = checkpoint.Checkpointer(
        workdir / checkpoint.CHECKPOINT_DIR,
        every=config.checkpoint.every_steps,
        keep=config.checkpoint.keep,
        config=config,
    )
    state = ckpt.restore(state, batches)
    resumed_from = int(mesh_lib.to_host(state.step))

    # ------------------------------------------------------------------ steps
    train_step = step.make_train_step(
        make_loss_fn(config.optim.label_smoothing),
        tx,
        mesh=mesh,
        learning_rate=schedule,
        skip_nonfinite=config.optim.skip_nonfinite,
    )
    eval_step = step.make_eval_step(metric_fn, mesh=mesh)

    last_eval: dict[int, dict[str, float]] = {}

    def evaluate(s: state_lib.TrainState) -> dict[str, float]:
        values = loop.evaluate(eval_step, s, test_set, batch_size=config.eval.batch_size, mesh=mesh)
        last_eval.clear()
        last_eval[int(mesh_lib.to_host(s.step))] = {f"test/{k}": v for k, v in values.items()}
        return next(iter(last_eval.values()))

    # ------------------------------------------------------------------ train
    with metrics.Writer(workdir, resume_step=resumed_from) as writer, ckpt:
        state = loop.train(
            state,
            train_step,
            batches,
            num_steps=total_steps,
            mesh=mesh,
            writer=writer,
            checkpointer=ckpt,
            eval_fn=evaluate,
            eval_every=config.eval.every_epochs * steps_per_epoch,
            log_every=config.run.log_every,
            progress=config.run.progress,
            log_batches=config.run.log_batches,
            evaluators=monitor_evaluators(config, test_images),
        )
    final_step = int(mesh_lib.to_host(state.step))
    if final_step < total_steps:
        return None  # preempted: the checkpoint holds everything; re-run to resume

    # ------------------------------------------------------------------ results
    test = last_eval.get(final_step) or evaluate(state)  # the loop evaluates at the end
    results = {
        "dataset": config.data.name,
        "test_accuracy": test["test/accuracy"],
        "test_loss": test["test/loss"],
        "test_examples": len(test_labels),
        "steps": final_step,
        "epochs": final_step / steps_per_epoch,
        "resumed_from_step": resumed_from,
        "num_params": int(num_params),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "wall_time_sec": time.time() - start,
    }
    write_results(workdir, results)
    return results


def main() -> None:
    cli.main(run, DEFAULT_CONFIG)


if __name__ == "__main__":
    main()
