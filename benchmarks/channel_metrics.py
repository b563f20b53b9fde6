"""Benchmark: two-axis channel-metric extraction for CIFAR ResNet-18 (Safaai et al., App. D, Table 2).

Times `redundax.analysis.channels.extract_stats` + `compute_metrics` (one frozen forward pass over the
calibration images streaming mergeable moments, then per-layer I_X, R_X, task MI, Red_T, Syn, hulls,
graph modularity and triplets) and a reference implementation in the same run: the same captured
activations accumulated in float64 NumPy (sums and cross-products) and the closed forms evaluated
in NumPy (R_X, task MI, Red_T, Syn, E_full by regression). Reports wall time, peak memory (process RSS
on CPU, device peak bytes on GPU), the time ratio and the largest metric differences.

    python benchmarks/channel_metrics.py --num_images 5000 [--out benchmarks/results/channel_metrics.json]

Images are synthetic standardised 32x32x3 draws (the timing does not depend on content); the model is
a randomly initialised CIFAR ResNet-18 (100 classes). The paper reports 0.8-1.3 minutes of metric
extraction for CIFAR-10 CNNs on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.analysis import channels as ana
from redundax.models.resnet import resnet18_cifar
from redundax.prune import graph as G
from redundax.regularizers import conv_outputs


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_peak_mib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**20


def ours(model, g, x, y, batch):
    t0 = time.perf_counter()
    stats = ana.extract_stats(model, g, x, y, batch_size=batch)
    jax.block_until_ready(jax.tree.leaves(stats))
    t1 = time.perf_counter()
    per, _ = ana.compute_metrics(model, g, stats)
    t2 = time.perf_counter()
    return per, {"extract_s": t1 - t0, "metrics_s": t2 - t1, "total_s": t2 - t0}


def g_mi(r2):
    return -0.5 * np.log1p(-np.clip(r2, 0.0, 1 - 1e-6))


def reference(model, g, x, y, batch, m=10):
    """float64 NumPy accumulation of the captured activations, closed forms in NumPy."""
    t0 = time.perf_counter()
    view = nnx.view(model, use_running_average=True)
    gdef, state = nnx.split(view)
    paths = [u.conv for u in g.units]

    @jax.jit
    def fwd(state, xb):
        return conv_outputs(nnx.merge(gdef, state), xb, paths)

    acc = {u.name: None for u in g.units}
    for i in range(0, len(y), batch):
        logits, acts = fwd(state, jnp.asarray(x[i : i + batch]))
        lg = np.asarray(logits, np.float64)
        yb = y[i : i + batch]
        true = lg[np.arange(len(yb)), yb]
        lg[np.arange(len(yb)), yb] = -np.inf
        t = true - lg.max(1)
        for u, a in zip(g.units, acts, strict=True):
            a = np.asarray(a, np.float64)
            f = a.reshape(-1, a.shape[-1])
            p = np.column_stack([a.mean((1, 2)), t])
            s = acc[u.name]
            new = [len(f), f.sum(0), f.T @ f, len(p), p.sum(0), p.T @ p]
            acc[u.name] = new if s is None else [u_ + v for u_, v in zip(s, new, strict=True)]
    out = {}
    for u in g.units:
        n, s1, s2, npool, p1, p2 = acc[u.name]
        cov = (s2 - np.outer(s1, s1) / n) / (n - 1)
        sd = np.sqrt(np.diag(cov))
        corr = cov / np.outer(sd, sd)
        covp = (p2 - np.outer(p1, p1) / npool) / (npool - 1)
        sdp = np.sqrt(np.diag(covp))
        cp = covp / np.outer(sdp, sdp)
        c, r = cp[:-1, :-1], cp[:-1, -1]
        k = c.shape[0]
        rg = g_mi(corr**2)
        np.fill_diagonal(rg, 0)
        tmi = g_mi(r**2)
        mm = min(m, k - 1)
        red, syn = np.zeros(k), np.zeros(k)
        for i in range(k):
            order = [j for j in np.argsort(-tmi, kind="stable") if j != i][:mm]
            red[i] = np.mean(np.minimum(tmi[i], tmi[order]))
            vals = []
            for j in order:
                sub = c[np.ix_([i, j], [i, j])]
                rr = r[[i, j]]
                r2 = rr @ np.linalg.solve(sub + 1e-6 * np.eye(2), rr)
                vals.append(g_mi(r2) - max(tmi[i], tmi[j]))
            syn[i] = np.mean(vals)
        inv = np.linalg.inv(corr + 1e-6 * np.eye(k))
        out[u.name] = {
            "rx": rg.sum(1) / (k - 1),
            "task_mi": tmi,
            "red_t": red,
            "syn": syn,
            "e_full": np.clip(1 + 1e-6 - 1 / np.diag(inv), 0, 1),
            "ix": 0.5 * np.log1p(np.diag(cov) / np.median(np.diag(cov))),
        }
    return out, {"total_s": time.perf_counter() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_images", type=int, default=5000)
    ap.add_argument("--batch_size", type=int, default=250)
    ap.add_argument("--skip_reference", action="store_true")
    ap.add_argument("--out", default="benchmarks/results/channel_metrics.json")
    args = ap.parse_args()
    if args.num_images < 2 or args.batch_size < 1:
        raise ValueError("--num_images must be >= 2 and --batch_size >= 1.")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.num_images, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 100, args.num_images)
    model = resnet18_cifar(100, rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    dev = jax.devices()[0]
    # warm-up (compilation) on two batches, reported separately
    t = time.perf_counter()
    ours(model, g, x[: 2 * args.batch_size], y[: 2 * args.batch_size], args.batch_size)
    warm = time.perf_counter() - t
    print(f"warm-up (compile + 2 batches): {warm:.1f} s", flush=True)
    per, timing = ours(model, g, x, y, args.batch_size)
    print(f"redundax: {timing}; peak RSS {rss_mib():.0f} MiB", flush=True)
    result = {
        "device": f"{dev.platform}:{dev.device_kind}",
        "num_images": args.num_images,
        "batch_size": args.batch_size,
        "layers": len(g.units),
        "warmup_s": warm,
        "redundax": timing,
        "peak_rss_mib": rss_mib(),
        "device_peak_mib": device_peak_mib(),
    }
    if not args.skip_reference:
        ref, rt = reference(model, g, x, y, args.batch_size)
        result["reference"] = rt
        result["ratio_reference_over_redundax"] = rt["total_s"] / timing["total_s"]
        result["max_abs_diff"] = {
            k: float(max(np.max(np.abs(np.asarray(per[u][k]) - ref[u][k])) for u in ref))
            for k in ("ix", "rx", "task_mi", "red_t", "syn", "e_full")
        }
    print(f"{'device':>24}: {result['device']}")
    print(f"{'images / layers':>24}: {args.num_images} / {len(g.units)}")
    print(f"{'warm-up (compile) s':>24}: {warm:.1f}")
    for k, v in timing.items():
        print(f"{'redundax ' + k:>24}: {v:.1f}")
    if "reference" in result:
        print(
            f"{'numpy reference s':>24}: {result['reference']['total_s']:.1f}  "
            f"(ratio {result['ratio_reference_over_redundax']:.2f}x)"
        )
        print(
            f"{'max |diff|':>24}: "
            + ", ".join(f"{k} {v:.1e}" for k, v in result["max_abs_diff"].items())
        )
    print(
        f"{'peak RSS MiB':>24}: {result['peak_rss_mib']:.0f}; device peak MiB: "
        f"{result['device_peak_mib']}"
    )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
