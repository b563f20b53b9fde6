"""Benchmark: the classify train step (steps/s, examples/s) on 1 and 8 CPU devices and a GPU.

The step under test is `redundax.train.step.make_train_step` with the classify experiment's
loss and optimizer (default preset: the digits ResNet, SGD with Nesterov momentum and weight
decay), state replicated and the batch sharded over a `"data"` mesh. The reference is the
idiomatic Flax NNX loop of the Flax examples: `nnx.Optimizer` updated inside `nnx.jit`, same
model, optimizer, loss, batch and shardings. Both are checked to produce the same parameters
after the timed steps; ratio = reference time / redundax time (> 1: redundax is faster).

Each configuration runs in its own subprocess: 1 CPU device, 8 simulated CPU devices
(`JAX_NUM_CPU_DEVICES=8`, which share the machine's cores: this measures sharding overhead,
not a speed-up), and the default backend when `jax.devices()` reports a GPU. Median of repeats;
compilation excluded.

    python benchmarks/train_step.py [--batch 64] [--steps 50] [--repeats 5]
                                    [--preset ""] [--out benchmarks/results/train_step.json]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> dict:
    if args.platform == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    import jax
    import numpy as np
    from flax import nnx

    from configs import classify as classify_config
    from experiments import classify
    from redundax import data
    from redundax.train import mesh as mesh_lib
    from redundax.train import state as state_lib
    from redundax.train import step as step_lib

    config = classify_config.get_config(args.preset or None)
    spec = data.dataset_info(config.data.name)
    rng = np.random.default_rng(0)
    h, w, c = spec.image_shape
    # Random standardised images: the step's cost does not depend on pixel values.
    batch = {
        "image": rng.normal(size=(args.batch, h, w, c)).astype(np.float32),
        "label": rng.integers(0, spec.num_classes, args.batch).astype(np.int32),
    }
    mesh = mesh_lib.make_data_mesh()
    tx, _ = classify.make_optimizer(config, steps_per_epoch=100)
    loss_fn = classify.make_loss_fn(0.0)
    sharded = mesh_lib.shard_batch(batch, mesh)

    # ------------------------------------------------------------------ redundax
    state = mesh_lib.replicate(state_lib.create(classify.make_model(config, spec), tx, 0), mesh)
    train_step = step_lib.make_train_step(loss_fn, tx, mesh=mesh)

    def run_ours(n: int) -> None:
        nonlocal state
        for _ in range(n):
            state, m = train_step(state, sharded)
        jax.block_until_ready(m)

    # ------------------------------------------------------------------ reference: nnx.jit
    model = classify.make_model(config, spec)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    replicated = mesh_lib.replicated_sharding(mesh)
    nnx.update((model, optimizer), jax.device_put(nnx.state((model, optimizer)), replicated))

    @nnx.jit
    def reference_step(model, optimizer, batch):
        def loss_of(model):
            return loss_fn(model, batch, None)

        (loss, _), grads = nnx.value_and_grad(loss_of, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss

    def run_reference(n: int) -> None:
        for _ in range(n):
            loss = reference_step(model, optimizer, sharded)
        jax.block_until_ready(loss)

    results = {}
    for name, fn in (("redundax", run_ours), ("nnx_jit_reference", run_reference)):
        fn(2)  # compile and warm up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn(args.steps)
            times.append(time.perf_counter() - t)
        sec = statistics.median(times) / args.steps
        results[name] = {"sec_per_step": sec, "steps_per_sec": 1 / sec,
                         "examples_per_sec": args.batch / sec}  # fmt: skip

    # Both ran 2 + repeats * steps identical updates from the same initialisation.
    ours = jax.tree.leaves(mesh_lib.to_host(state.params))
    ref = jax.tree.leaves(mesh_lib.to_host(nnx.state(model, nnx.Param)))
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ours, ref, strict=True))
    return {
        "platform": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "batch": args.batch,
        "preset": args.preset or "default",
        "params_max_abs_diff": max_diff,
        **results,
        "ratio": results["nnx_jit_reference"]["sec_per_step"] / results["redundax"]["sec_per_step"],
    }


def _spawn(args: argparse.Namespace, platform_name: str, devices: int | None) -> dict | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if devices is not None:
        env["JAX_NUM_CPU_DEVICES"] = str(devices)
    cmd = [sys.executable, __file__, "--worker", "--platform", platform_name,
           "--batch", str(args.batch), "--steps", str(args.steps),
           "--repeats", str(args.repeats), "--preset", args.preset]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_gpu() -> bool:
    probe = "import jax; print(any(d.platform == 'gpu' for d in jax.devices()))"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return proc.returncode == 0 and proc.stdout.strip().endswith("True")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default="")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--platform", default="cpu", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    runs = [("cpu", 1), ("cpu", 8)]
    if _has_gpu():
        runs.append(("gpu", None))
    else:
        print("no GPU visible to jax.devices(): GPU row skipped")
    rows = [r for r in (_spawn(args, p, d) for p, d in runs) if r is not None]
    header = (f"{'platform':<8} {'devices':>7} {'batch':>5} {'redundax steps/s':>17} "
              f"{'examples/s':>11} {'nnx.jit steps/s':>16} {'ratio':>6} {'max |dparam|':>13}")  # fmt: skip
    print(header)
    for r in rows:
        print(f"{r['platform']:<8} {r['devices']:>7} {r['batch']:>5} "
              f"{r['redundax']['steps_per_sec']:>17.1f} {r['redundax']['examples_per_sec']:>11.0f} "
              f"{r['nnx_jit_reference']['steps_per_sec']:>16.1f} {r['ratio']:>6.2f} "
              f"{r['params_max_abs_diff']:>13.2e}")  # fmt: skip
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "steps": args.steps, "repeats": args.repeats}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
