"""Benchmark: `redundax.monitor` against collecting activations + NumPy, and its training overhead.

(a) Every conv layer (20) of a CIFAR ResNet-18 (random init) over `--num_images` synthetic
    32x32x3 images: `monitor.measure` (per-layer `Moments` streamed inside jit, metrics from the
    d x d matrices) against the common alternative in the same run: capture the activations of
    every batch (`nnx.capture`), concatenate them on the host and compute the same metrics in
    float64 NumPy (`eigvalsh` of the covariance, an SVD of the embedding matrix for RankMe).
    Reduce "mean" (one sample per image: the reference fits in memory at 4096 images) at
    `--num_images`; reduce "flatten" (every spatial position a sample) with the reference at
    `--flatten_images` only (its activations grow with images x positions) and the monitor at both
    sizes. Reports wall time, the time ratio, the largest relative metric difference and memory:
    peak Python/NumPy allocations (tracemalloc) of the reference, the growth of the process's peak
    RSS during each method (the monitor runs first), and the bytes of what each method keeps
    (all activations vs one d x d co-moment per layer).
(b) The classify experiment's default preset (digits, 30 epochs) with its default monitor
    cadence: time spent in monitor evaluations over the training time of the same run
    (target <= 5%), and the wall time of the same run with the monitor off.

    python benchmarks/monitor.py [--num_images 4096] [--flatten_images 128] [--skip_overhead]
        [--skip_a]  # (b) only, keeping (a) of an earlier run in --out
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import tempfile
import time
import tracemalloc

import jax
import numpy as np
from flax import nnx

from configs import classify as classify_config
from experiments import classify
from redundax import monitor
from redundax.models.resnet import resnet18_cifar
from redundax.train import loop

METRICS = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numpy_metrics(x: np.ndarray) -> dict[str, float]:
    """The monitor's metrics of samples (n, d) in float64 NumPy."""
    x = np.asarray(x, np.float64)
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))[::-1]
    lam = np.where(lam > 4 * np.sqrt(lam.size) * 1.2e-7 * lam[0], lam, 0)  # float32 round-off
    p = lam[lam > 0] / lam.sum()
    h = -np.sum(p * np.log(p))
    s = np.linalg.svd(x, compute_uv=False)
    q = s / s.sum() + monitor.RANKME_EPS
    pos = lam[lam > 0]
    slope = np.polyfit(np.log(np.arange(1, pos.size + 1)), np.log(pos), 1)[0]
    return {
        "spectral_redundancy": 1 - np.exp(h) / x.shape[1],
        "effective_rank": np.exp(h),
        "rankme": np.exp(-np.sum(q * np.log(q))),
        "alpha_req": -slope,
    }


def run_monitor(model, images, batch, reduce):
    t0 = time.perf_counter()
    rss0 = peak_rss_mib()
    batches = (images[i : i + batch] for i in range(0, len(images), batch))
    res = monitor.measure(model, batches, where=nnx.Conv, metrics=METRICS, reduce=reduce)
    return res, {"total_s": time.perf_counter() - t0, "peak_rss_growth_mib": peak_rss_mib() - rss0}


def run_reference(model, images, batch, reduce, layers):
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, x):
        m = nnx.merge(graphdef, state)
        m.eval()
        _, inter = nnx.capture(lambda mm, xx: mm(xx), nnx.Intermediate,
                               method_outputs=nnx.Intermediate)(m, x)  # fmt: skip
        flat = {".".join(map(str, k[:-1])): v.get_value()[0] for k, v in nnx.to_flat_state(inter)}
        return {k: flat[k] for k in layers}

    t0 = time.perf_counter()
    rss0 = peak_rss_mib()
    tracemalloc.start()
    collected = {k: [] for k in layers}
    for i in range(0, len(images), batch):
        for k, a in forward(state, images[i : i + batch]).items():
            a = np.asarray(a)
            collected[k].append(a.mean((1, 2)) if reduce == "mean" else a.reshape(-1, a.shape[-1]))
    acts = {k: np.concatenate(v) for k, v in collected.items()}
    act_bytes = sum(a.nbytes for a in acts.values())
    res = {k: numpy_metrics(a) for k, a in acts.items()}
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return res, {
        "total_s": time.perf_counter() - t0,
        "tracemalloc_peak_mib": traced / 2**20,
        "activations_mib": act_bytes / 2**20,
        "peak_rss_growth_mib": peak_rss_mib() - rss0,
    }


def compare(ours, ref):
    return {
        m: float(max(abs(ours[k][m] - ref[k][m]) / max(abs(ref[k][m]), 1e-6) for k in ref))
        for m in METRICS
    }


def part_a(num_images: int, flatten_images: int, batch: int) -> list[dict]:
    rng = np.random.default_rng(0)
    images = rng.normal(size=(num_images, 32, 32, 3)).astype(np.float32)
    model = resnet18_cifar(10, rngs=nnx.Rngs(0))
    layers = monitor.select(model, nnx.Conv)
    moment_mib = (
        sum(
            (c.out_features**2 + c.out_features + 1) * 4
            for _, c in nnx.iter_modules(model)
            if isinstance(c, nnx.Conv)
        )
        / 2**20
    )
    monitor.measure(model, [images[:batch]], where=nnx.Conv, metrics=METRICS)  # compile
    rows = []
    for reduce, n_ours, n_ref in (
        ("mean", num_images, num_images),
        ("flatten", flatten_images, flatten_images),
        ("flatten", num_images, None),
    ):
        ours, t_ours = run_monitor(model, images[:n_ours], batch, reduce)
        row = {"reduce": reduce, "images": n_ours, "layers": len(layers),
               "monitor": {**t_ours, "moments_mib": moment_mib}}  # fmt: skip
        if n_ref is not None:
            ref, t_ref = run_reference(model, images[:n_ref], batch, reduce, layers)
            row["reference"] = t_ref
            row["time_ratio_reference_over_monitor"] = t_ref["total_s"] / t_ours["total_s"]
            row["max_rel_diff"] = compare(ours, ref)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def part_b() -> dict:
    timings = {"calls": []}
    original = classify.monitor_evaluators

    def timed(config, images):
        evs = original(config, images)
        for name, ev in evs.items():

            def fn(state, f=ev.fn):
                t = time.perf_counter()
                out = f(state)
                timings["calls"].append(time.perf_counter() - t)
                return out

            evs[name] = loop.Evaluator(fn, every=ev.every)
        return evs

    classify.monitor_evaluators = timed
    out = {}
    try:
        for enabled in (True, False):
            config = classify_config.get_config()
            config.monitor.enabled = enabled
            config.checkpoint.every_steps = 10**6  # only the final save, in both runs
            with tempfile.TemporaryDirectory() as workdir:
                t = time.perf_counter()
                res = classify.run(config, pathlib.Path(workdir))
                out["on" if enabled else "off"] = {
                    "wall_s": time.perf_counter() - t,
                    "steps": res["steps"],
                    "test_accuracy": res["test_accuracy"],
                }
    finally:
        classify.monitor_evaluators = original
    calls = timings["calls"]
    on = out["on"]["wall_s"]
    out["monitor_every_steps"] = classify_config.get_config().monitor.every_steps
    out["monitor_calls"] = len(calls)
    out["monitor_s"] = sum(calls)
    out["monitor_first_call_s"] = calls[0]
    out["overhead_fraction"] = sum(calls) / (on - sum(calls))
    out["overhead_fraction_after_compile"] = sum(calls[1:]) / (on - sum(calls))
    out["wall_ratio_on_over_off"] = on / out["off"]["wall_s"]
    print(json.dumps(out), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_images", type=int, default=4096)
    ap.add_argument("--flatten_images", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=128)
    ap.add_argument("--skip_overhead", action="store_true")
    ap.add_argument("--skip_a", action="store_true", help="keep (a) from an existing --out file")
    ap.add_argument("--out", default="benchmarks/results/monitor.json")
    args = ap.parse_args()
    dev = jax.devices()[0]
    result = {"device": f"{dev.platform}:{dev.device_kind}", "devices": jax.device_count()}
    out = pathlib.Path(args.out)
    if args.skip_a:
        result["a"] = json.loads(out.read_text())["a"]
    else:
        result["a"] = part_a(args.num_images, args.flatten_images, args.batch_size)
    if not args.skip_overhead:
        result["b"] = part_b()
    print(f"\n(a) CIFAR ResNet-18, all {result['a'][0]['layers']} conv layers, {result['device']}")
    print(f"{'reduce':>8} {'images':>7} {'monitor s':>10} {'numpy s':>8} {'ratio':>6} "
          f"{'monitor MiB':>12} {'numpy MiB':>10} {'acts MiB':>9} max rel diff")  # fmt: skip
    for r in result["a"]:
        ref = r.get("reference", {})
        print(f"{r['reduce']:>8} {r['images']:>7} {r['monitor']['total_s']:>10.1f} "
              f"{ref.get('total_s', float('nan')):>8.1f} "
              f"{r.get('time_ratio_reference_over_monitor', float('nan')):>6.2f} "
              f"{r['monitor']['peak_rss_growth_mib']:>12.0f} "
              f"{ref.get('tracemalloc_peak_mib', float('nan')):>10.0f} "
              f"{ref.get('activations_mib', float('nan')):>9.0f} "
              f"{max(r.get('max_rel_diff', {'-': float('nan')}).values()):.1e}")  # fmt: skip
    if "b" in result:
        b = result["b"]
        print(f"\n(b) classify default, monitor every {b['monitor_every_steps']} steps: "
              f"{b['monitor_calls']} evaluations, {b['monitor_s']:.1f} s "
              f"(first, with compilation: {b['monitor_first_call_s']:.1f} s) = "
              f"{100 * b['overhead_fraction']:.1f}% of training "
              f"({100 * b['overhead_fraction_after_compile']:.1f}% after compilation); "
              f"wall on/off {b['wall_ratio_on_over_off']:.3f}")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
