"""`redundax.monitor.measure` of a model with nested lists of blocks, streamed in batches.

Imported by tests/test_monitor.py (model, data, layers) and run as a script on 8 CPU devices
(JAX_NUM_CPU_DEVICES=8) or as one of 2 processes (jax.distributed on localhost): each process
measures its own rows (process 0 the first `split` rows, process 1 the rest) in batches of
`--batch_size`, and process `i` writes the results as JSON to `--out` + `.{i}`.
"""

import argparse
import json

import jax
import numpy as np
from flax import nnx

from redundax.train import cli

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch_size", type=int, action="append", required=True)
    parser.add_argument("--coordinator_address")
    parser.add_argument("--num_processes", type=int)
    parser.add_argument("--process_id", type=int)
    args = parser.parse_args()
    # before importing redundax.functionals, whose f-kernel definitions run JAX code at import
    cli.maybe_initialize_distributed(args.coordinator_address, args.num_processes, args.process_id)

from redundax import monitor

N, T, D_IN = 100, 3, 6
LAYERS = ("embed", "stages.1.blocks.0.fc1", "head")
REDUCE = {r"stages\.1\.blocks\.0\.fc1": "mean"}  # the others: "flatten"
SPLIT = 70  # rows of process 0 in a 2-process run (uneven on purpose)


class MLP(nnx.Module):
    def __init__(self, width: int, hidden: int, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, rngs=rngs)

    def __call__(self, x):
        return self.fc2(jax.nn.relu(self.fc1(x)))


class Stage(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.blocks = nnx.List([MLP(width, 16, rngs) for _ in range(2)])

    def __call__(self, x):
        for block in self.blocks:
            x = x + block(x)
        return x


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Linear(D_IN, 8, rngs=rngs)
        self.stages = nnx.List([Stage(8, rngs) for _ in range(2)])
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        x = self.embed(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def make_model() -> Net:
    return Net(nnx.Rngs(0))


def make_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(D_IN, D_IN)) * np.linspace(1.0, 0.2, D_IN)
    return (rng.normal(size=(N, T, D_IN)) @ mix + 0.5).astype(np.float32)


def batches(x: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [x[i : i + batch_size] for i in range(0, len(x), batch_size)]


def run(x: np.ndarray, batch_size: int) -> dict:
    return monitor.measure(
        make_model(),
        batches(x, batch_size),
        where=lambda path, m: path in LAYERS,
        metrics=tuple(monitor.METRICS),
        reduce=REDUCE,
    )


if __name__ == "__main__":
    x = make_data()
    if jax.process_count() == 2:
        x = x[:SPLIT] if jax.process_index() == 0 else x[SPLIT:]
    out = {
        "devices": jax.device_count(),
        "processes": jax.process_count(),
        "results": {str(b): run(x, b) for b in args.batch_size},
    }
    with open(f"{args.out}.{jax.process_index()}", "w") as f:
        json.dump(out, f)
