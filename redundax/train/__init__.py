"""Training platform shared by the experiments: one small module per job.

- `mesh`: a 1-D `"data"` mesh over all devices, sharded batches, replicated state.
- `state`: `TrainState` (graphdef, params, other state, optimizer state, step, RNG), `create`.
- `step`: jitted train step (donated state, gradient accumulation, optax extra args) and
  eval step, from an experiment's `loss_fn(model, batch, rng)` and `metric_fn(model, batch)`.
- `loop`: `train` (steps, logging, evaluation, checkpoints, preemption) and `evaluate`.
- `checkpoint`: orbax checkpoints of the state, the grain iterator and the config; SIGTERM.
- `metrics`: `metrics.jsonl` and TensorBoard writer (process 0 only).
- `progress`: a tqdm bar on a terminal, log lines otherwise.
- `cli`: `main(run_fn, default_config)`: config flags, workdir, `jax.distributed`.
- `failures`: exit codes, preemption signals, divergence checks, the workdir lock.
- `config_schema`: `check_fields(config, schema)`: old or misspelt config fields fail naming the
  right one (`num_epochs` -> `train.epochs`, `data.dir` -> `data.data_dir`, ...).

Import the submodules directly: `from redundax.train import mesh, state, step, loop`.
"""
