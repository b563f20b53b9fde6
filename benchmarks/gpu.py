"""Benchmark: every GPU number of the project in one run (``benchmarks/gpu.sh``).

On a GPU, in a few minutes (the budget is 8), measures

1. the functionals at activation sizes, (n, d) = (65536, 1024) and (8192, 4096) in float32:
   `spectral_redundancy`, `effective_rank`, `gaussian_total_correlation` and the covariance
   through `Moments`; the reference is the Gram matrix ``x^T x`` alone (the matmul every one of
   them needs), reported as TFLOP/s and as the ratio functional / Gram;
2. one MAE ViT-Base/16 training step (bfloat16, batch 256, mask ratio 0.75, eq. 2's penalty
   lambda R_spec(Z) with lambda = 0.01, AdamW): images/s and model FLOPs utilisation, i.e. the
   FLOPs of the compiled step from XLA's cost analysis over step time over the device's peak
   bfloat16 rate (:data:`PEAK_BF16_FLOPS`; reported as unknown for other devices);
3. RedReg and OGM-GE inside an SGD update on the 22.4M-parameter audio-visual ResNet-18 tree,
   as ratios to the bare SGD update, and the jitted suppression step against the NumPy loop
   (`benchmarks/redreg.py`);
4. the two-axis channel-metric extraction of a CIFAR ResNet-18 on 5000 images
   (`benchmarks/channel_metrics.py`; Safaai et al. report 0.8-1.3 minutes on an H100-class GPU).

It writes one JSON file and a markdown table (``benchmarks/results/gpu.json``, ``gpu.md``).
Without a GPU it says so and runs the same code paths at tiny shapes in seconds, writing
``gpu_cpu_tiny.json`` / ``.md`` (so that CI keeps the script working); ``--tiny`` forces that
mode on a GPU.

    bash benchmarks/gpu.sh [--repeats 10] [--out_dir benchmarks/results] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from benchmarks import channel_metrics, redreg
from redundax import functionals as F
from redundax.models.mae import MAE, mae_config, objective
from redundax.models.resnet import ResNet, resnet18_cifar
from redundax.prune import graph as G

# Dense bfloat16 tensor-core peaks (vendor data sheets, no sparsity), matched in this order
# against `device_kind`.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),  # SXM
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
)
MASK_RATIO = 0.75
LAMBDA = 0.01


def peak_bf16_flops(device_kind: str) -> float | None:
    """The device's peak dense bfloat16 FLOP/s, or None when it is not in the table."""
    return next((v for k, v in PEAK_BF16_FLOPS if k in device_kind), None)


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------- functionals
FUNCTIONALS = {
    "spectral_redundancy": F.spectral_redundancy,
    "effective_rank": F.effective_rank,
    "gaussian_total_correlation": F.gaussian_total_correlation,
    "covariance (Moments)": lambda x: F.Moments.from_samples(x).covariance(),
}


def bench_functionals(sizes, repeats: int) -> list[dict]:
    rows = []
    for n, d in sizes:
        x = jax.random.normal(jax.random.key(0), (n, d), jnp.float32)
        x = x + 0.5 * x[:, :1]  # correlated units, a non-trivial spectrum
        gram = jax.jit(lambda x: x.T @ x)
        t_gram = median_seconds(lambda x=x, f=gram: jax.block_until_ready(f(x)), repeats)
        rows.append(
            {
                "n": n,
                "d": d,
                "functional": "gram x^T x (reference)",
                "ms": 1e3 * t_gram,
                "x_gram": 1.0,
                "tflops": 2 * n * d * d / t_gram / 1e12,
            }
        )
        for name, fn in FUNCTIONALS.items():
            f = jax.jit(fn)
            out = jax.block_until_ready(f(x))
            t = median_seconds(lambda x=x, f=f: jax.block_until_ready(f(x)), repeats)
            value = float(out) if np.ndim(out) == 0 else float(jnp.trace(out))
            rows.append(
                {
                    "n": n,
                    "d": d,
                    "functional": name,
                    "ms": 1e3 * t,
                    "x_gram": t / t_gram,
                    "value": value,
                }
            )
    return rows


# ----------------------------------------------------------------------------------- MAE step
def bench_mae(size: str, batch: int, repeats: int) -> dict:
    """One jitted MAE training step (the step of experiments/mae.py), bfloat16 compute."""
    cfg = mae_config(size, dtype="bfloat16")
    graphdef, params = nnx.split(MAE(cfg, rngs=nnx.Rngs(0)))
    tx = optax.adamw(
        1e-4,
        b1=0.9,
        b2=0.95,
        weight_decay=0.05,
        mask=lambda p: jax.tree.map(lambda x: x.ndim == 2, p),
    )
    opt_state = tx.init(params)

    def step(params, opt_state, images, key):
        def loss_fn(p):
            return objective(nnx.merge(graphdef, p), images, key, LAMBDA, mask_ratio=MASK_RATIO)

        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    images = jax.random.normal(
        jax.random.key(1), (batch, cfg.image_size, cfg.image_size, cfg.in_channels)
    )
    key = jax.random.key(2)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, images, key).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = float((cost or {}).get("flops", float("nan")))
    state = [params, opt_state]

    def run():
        state[0], state[1], loss = compiled(state[0], state[1], images, key)
        jax.block_until_ready(loss)

    seconds = median_seconds(run, repeats, warmup=2)
    kind = jax.devices()[0].device_kind
    peak = peak_bf16_flops(kind)
    n_params = sum(x.size for x in jax.tree.leaves(params))
    return {
        "size": size,
        "batch": batch,
        "parameters": int(n_params),
        "compile_s": compile_s,
        "ms_per_step": 1e3 * seconds,
        "images_per_s": batch / seconds,
        "flops_per_step": flops,
        "tflops": flops / seconds / 1e12,
        "peak_bf16_flops": peak,
        "mfu": None if peak is None else flops / seconds / peak,
        "peak_note": None if peak is not None else f"peak of {kind!r} unknown",
    }


# ----------------------------------------------------------------------------------- transforms
def bench_transforms(tiny: bool, repeats: int) -> dict:
    params = redreg.param_tree(0, tiny=tiny)
    grads = jax.tree.map(lambda x: 1e-2 * x + 1e-3, redreg.param_tree(1, tiny=tiny))
    seconds = redreg.time_updates(redreg.KINDS, params, grads, repeats)
    rows = {k: {"ms": 1e3 * t, "x_sgd": t / seconds["sgd"]} for k, t in seconds.items()}
    return {
        "parameters": int(sum(x.size for x in jax.tree.leaves(params))),
        "updates": rows,
        "suppression_step": redreg.compare_suppression(params, grads, repeats),
    }


# ----------------------------------------------------------------------------------- channels
def bench_channels(num_images: int, batch: int, tiny: bool) -> dict:
    """Channel-metric extraction of a randomly initialised CIFAR ResNet-18 (``tiny``: a
    two-stage ResNet 16-32 wide) on synthetic images, as benchmarks/channel_metrics.py."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(num_images, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 100, num_images)
    if tiny:
        model = ResNet(100, widths=(16, 32), blocks=(1, 1), rngs=nnx.Rngs(0))
    else:
        model = resnet18_cifar(100, rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    start = time.perf_counter()
    channel_metrics.ours(model, g, x[: 2 * batch], y[: 2 * batch], batch)  # compile
    warm = time.perf_counter() - start
    per, timing = channel_metrics.ours(model, g, x, y, batch)
    finite = all(np.all(np.isfinite(np.asarray(per[u][k]))) for u in per for k in ("ix", "rx"))
    return {
        "num_images": num_images,
        "batch": batch,
        "model": "ResNet 16-32 (tiny)" if tiny else "ResNet-18",
        "layers": len(g.units),
        "warmup_s": warm,
        **timing,
        "finite": bool(finite),
        "published_minutes": [0.8, 1.3],
    }


# ----------------------------------------------------------------------------------- report
def markdown(r: dict) -> str:
    lines = [
        f"# GPU benchmark ({r['mode']}, {r['device']}, jax {r['jax']}, {r['wall_s']:.0f} s)",
        "",
        "## Functionals (float32; reference: the Gram matrix x^T x)",
        "",
        "| n x d | functional | ms | x Gram | TFLOP/s |",
        "|---|---|---:|---:|---:|",
    ]
    for row in r["functionals"]:
        tf = f"{row['tflops']:.1f}" if "tflops" in row else ""
        lines.append(
            f"| {row['n']} x {row['d']} | {row['functional']} | {row['ms']:.2f} | "
            f"{row['x_gram']:.2f} | {tf} |"
        )
    m = r["mae"]
    mfu = "unknown peak" if m["mfu"] is None else f"{100 * m['mfu']:.1f} %"
    lines += [
        "",
        f"## MAE {m['size']} step (bfloat16, batch {m['batch']})",
        "",
        "| ms/step | images/s | TFLOP/step (XLA) | TFLOP/s | MFU |",
        "|---:|---:|---:|---:|---:|",
        f"| {m['ms_per_step']:.1f} | {m['images_per_s']:.0f} | "
        f"{m['flops_per_step'] / 1e12:.3f} | {m['tflops']:.1f} | {mfu} |",
    ]
    t = r["transforms"]
    lines += [
        "",
        f"## RedReg / OGM-GE ({t['parameters'] / 1e6:.1f}M parameters; ratio to SGD)",
        "",
        "| update | ms | x sgd |",
        "|---|---:|---:|",
    ]
    lines += [f"| {k} | {v['ms']:.2f} | {v['x_sgd']:.2f} |" for k, v in t["updates"].items()]
    s = t["suppression_step"]
    lines += [
        "",
        f"Suppression step: {1e3 * s['redreg_update_s']:.2f} ms jitted vs "
        f"{1e3 * s['numpy_reference_s']:.2f} ms NumPy loop (x{s['speedup_vs_numpy']:.2f}).",
    ]
    c = r["channels"]
    lines += [
        "",
        f"## Channel metrics, CIFAR {c['model']} ({c['layers']} layers)",
        "",
        "| images | extract s | metrics s | total s | compile s |",
        "|---:|---:|---:|---:|---:|",
        f"| {c['num_images']} | {c['extract_s']:.2f} | {c['metrics_s']:.2f} | "
        f"{c['total_s']:.2f} | {c['warmup_s']:.1f} |",
        "",
        "Published: 0.8-1.3 minutes on one H100-class GPU (Safaai et al., Table 2).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tiny", action="store_true", help="tiny shapes even on a GPU")
    ap.add_argument("--out_dir", default=str(pathlib.Path(__file__).resolve().parent / "results"))
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {args.repeats}.")
    start = time.perf_counter()
    on_gpu = jax.default_backend() == "gpu"
    tiny = args.tiny or not on_gpu
    if not on_gpu:
        print(
            f"No GPU: JAX's backend is {jax.default_backend()!r}. Running the tiny mode (the "
            "same code paths at tiny shapes) and exiting; run this on a GPU for the numbers.",
            flush=True,
        )
    repeats = min(args.repeats, 3) if tiny else args.repeats
    dev = jax.devices()[0]
    report = {
        "mode": "tiny" if tiny else "full",
        "backend": jax.default_backend(),
        "device": dev.device_kind,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "repeats": repeats,
    }
    sections = (
        (
            "functionals",
            lambda: bench_functionals(
                [(256, 32), (64, 48)] if tiny else [(65536, 1024), (8192, 4096)], repeats
            ),
        ),
        ("mae", lambda: bench_mae("tiny" if tiny else "base", 8 if tiny else 256, repeats)),
        ("transforms", lambda: bench_transforms(tiny, repeats)),
        ("channels", lambda: bench_channels(16 if tiny else 5000, 8 if tiny else 250, tiny)),
    )
    for name, fn in sections:
        t0 = time.perf_counter()
        report[name] = fn()
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    report["wall_s"] = time.perf_counter() - start
    table = markdown(report)
    print(table)
    out = pathlib.Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu" if not tiny else ("gpu_tiny" if on_gpu else "gpu_cpu_tiny")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(f"wrote {out / stem}.json and .md")


if __name__ == "__main__":
    main()
