"""Training engine shared by every experiment: one small module per job, imported on first
access (`from redundax.train import loop`, or `redundax.train.loop`).

- `mesh`: a 1-D `"data"` mesh over all devices, sharded batches, replicated state.
- `state`: `TrainState` (graphdef, params, other state, optimizer state, step, RNG), `create`.
- `step`: jitted train step (donated state, gradient accumulation, optax extra args, skipping
  non-finite updates) and eval step (masked per-example sums), from an experiment's
  `loss_fn(model, batch, rng)` and `metric_fn(model, batch)`.
- `loop`: `train` (steps, logging, divergence checks, evaluation, pluggable `Evaluator`s as in
  big_vision, checkpoints, preemption) and `evaluate` (a whole in-memory split).
- `evaluate`: `evaluate_batches` over any iterable of batches (fixed-size sharded batches, the
  last one padded and masked, sums over devices and hosts) and `array_batches`.
- `optim`: `build(section, total_steps)`, the one optimizer builder (SGD or AdamW, L2 or
  decoupled weight decay with a mask, schedules, clipping, transforms placed before it, a
  pruning mask).
- `checkpoint`: orbax checkpoints of the state, the grain iterator and the config; the config
  fields that may change on resume (`IGNORED_FIELDS`).
- `metrics`: `metrics.jsonl` and TensorBoard writer (process 0 only), strict JSON results.
- `progress`: a tqdm bar on a terminal, log lines otherwise.
- `cli`: `main(run_fn, default_config)`: config flags and checks, workdir, `jax.distributed`,
  exit codes.
- `host_memory`: `keep_host_memory()`, glibc `malloc` settings that keep XLA:CPU's per-step
  buffers mapped between steps (no page faults on fresh memory every step).
- `failures`: exit codes, preemption signals, divergence checks, the workdir lock.
- `config_schema`: `check_fields(config, schema)`: old or misspelt config fields fail naming the
  right one (`num_epochs` -> `train.epochs`, `data.dir` -> `data.data_dir`, ...);
  `epochs_to_steps`.
"""

from redundax import _lazy

__all__ = [
    "checkpoint",
    "cli",
    "config_schema",
    "evaluate",
    "failures",
    "host_memory",
    "loop",
    "mesh",
    "metrics",
    "optim",
    "progress",
    "state",
    "step",
]

__getattr__, __dir__ = _lazy.attach(__name__, __all__)
