"""Benchmark: jitted redundax functionals against straightforward NumPy/SciPy implementations.

Each functional (and the gradient of `spectral_redundancy`) is timed at (n, d) = (256, 768),
(4096, 768) and (512, 4096) in float32, against a direct NumPy transcription of the same formula
(d x d covariance or correlation, LAPACK through NumPy). Both sides get the same float32 input and
their results are checked to agree before timing. Reports the median of repeats and the ratio
NumPy time / redundax time (> 1: redundax is faster).

    python benchmarks/functionals.py [--repeats 7] [--sizes 256x768,4096x768,512x4096] [--out FILE]
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

import redundax.functionals as F

SHRINK = 1e-4


# ----------------------------------------------------------------------------- NumPy references
def np_cov(x):
    return np.cov(x, rowvar=False)


def np_corr(x):
    return np.corrcoef(x, rowvar=False)


def np_tc(x):
    c = np.corrcoef(x, rowvar=False)
    d = c.shape[0]
    return -0.5 * np.linalg.slogdet((1 - SHRINK) * c + SHRINK * np.eye(d, dtype=c.dtype))[1]


def np_chi2(x):
    c = np.corrcoef(x, rowvar=False)
    return 0.25 * np.sum((c - np.eye(c.shape[0], dtype=c.dtype)) ** 2)


def _np_spectrum(x):
    lam = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    lam = np.where(lam > 4 * np.sqrt(len(lam)) * np.finfo(lam.dtype).eps * lam.max(), lam, 0)
    return lam / lam.sum()


def np_spectral_entropy(x):
    p = _np_spectrum(x)
    p = p[p > 0]
    return -np.sum(p * np.log(p))


def np_spectral_redundancy(x):
    return 1 - np.exp(np_spectral_entropy(x)) / x.shape[1]


def np_spectral_redundancy_grad(x):
    """Analytic gradient: dR/dSigma = V diag(dR/dlambda) V^T, Sigma = Xc^T Xc / (n - 1)."""
    n, d = x.shape
    xc = x - x.mean(0)
    lam, v = np.linalg.eigh(xc.T @ xc / (n - 1))
    lam = np.clip(lam, 0, None)
    total = lam.sum()
    p = lam / total
    pos = p > 4 * np.sqrt(d) * np.finfo(p.dtype).eps * p.max()  # the documented round-off cutoff
    logp = np.where(pos, np.log(np.where(pos, p, 1)), 0)
    h = -np.sum(p * logp)
    dh = np.where(pos, -(logp + h) / total, 0)
    dr = -(np.exp(h) / d) * dh
    g_sigma = (v * dr) @ v.T
    return 2 * xc @ g_sigma / (n - 1)


def np_head_redundancy(attn):
    h = attn.shape[-3]
    flat = attn.reshape(h, -1)
    unit = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    cos = unit @ unit.T
    return (np.sum(cos**2) - np.sum(np.diag(cos) ** 2)) / (h * (h - 1))


CASES = {
    "covariance": (F.covariance, np_cov),
    "correlation": (F.correlation, np_corr),
    "gaussian_total_correlation": (F.gaussian_total_correlation, np_tc),
    "chi2_redundancy": (F.chi2_redundancy, np_chi2),
    "spectral_entropy": (F.spectral_entropy, np_spectral_entropy),
    "spectral_redundancy": (F.spectral_redundancy, np_spectral_redundancy),
    "grad spectral_redundancy": (jax.grad(F.spectral_redundancy), np_spectral_redundancy_grad),
}


def median_time(fn, arg, repeats: int) -> float:
    fn(arg)  # warm-up (compilation for the jitted side)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn(arg)
        if isinstance(out, jax.Array):
            out.block_until_ready()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check_agreement(name, ours, ref, x_np, x_j):
    a, b = np.asarray(ours(x_j), np.float64), np.asarray(ref(x_np), np.float64)
    scale = np.max(np.abs(b)) + 1e-12
    err = np.max(np.abs(a - b)) / scale
    if err > 2e-2:
        raise AssertionError(f"{name}: redundax and NumPy disagree (max rel err {err:.2e})")
    return err


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sizes", default="256x768,4096x768,512x4096")
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "functionals.json")
    )
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]

    rng = np.random.default_rng(0)
    rows = []
    header = f"{'functional':28s} {'n x d':>11s} {'redundax ms':>12s} {'numpy ms':>10s} {'ratio':>7s} {'rel err':>8s}"
    print(
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}); numpy {np.__version__}"
    )
    print(header)
    print("-" * len(header))
    for n, d in sizes:
        mix = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
        x_np = (rng.normal(size=(n, d)).astype(np.float32) @ mix).astype(np.float32)
        x_j = jax.device_put(jnp.asarray(x_np))
        for name, (ours, ref) in CASES.items():
            jitted = jax.jit(ours)
            err = check_agreement(name, jitted, ref, x_np, x_j)
            t_ours = median_time(jitted, x_j, args.repeats)
            t_ref = median_time(ref, x_np, args.repeats)
            rows.append(
                dict(
                    functional=name,
                    n=n,
                    d=d,
                    redundax_s=t_ours,
                    numpy_s=t_ref,
                    ratio=t_ref / t_ours,
                    rel_err=err,
                )
            )
            print(
                f"{name:28s} {f'{n}x{d}':>11s} {1e3 * t_ours:12.2f} {1e3 * t_ref:10.2f} {t_ref / t_ours:7.2f} {err:8.1e}"
            )
    # Attention-head redundancy on ViT-Base-sized maps: 12 heads x 197 tokens.
    logits = rng.normal(size=(12, 197, 197)).astype(np.float32)
    attn = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    jitted = jax.jit(F.head_redundancy)
    err = check_agreement("head_redundancy", jitted, np_head_redundancy, attn, jnp.asarray(attn))
    t_ours = median_time(jitted, jnp.asarray(attn), args.repeats)
    t_ref = median_time(np_head_redundancy, attn, args.repeats)
    rows.append(
        dict(
            functional="head_redundancy",
            n=197,
            d=12,
            redundax_s=t_ours,
            numpy_s=t_ref,
            ratio=t_ref / t_ours,
            rel_err=err,
        )
    )
    print(
        f"{'head_redundancy':28s} {'12x197x197':>11s} {1e3 * t_ours:12.2f} {1e3 * t_ref:10.2f} {t_ref / t_ours:7.2f} {err:8.1e}"
    )

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(
        jax=jax.__version__,
        numpy=np.__version__,
        backend=jax.default_backend(),
        device=jax.devices()[0].device_kind,
        machine=platform.machine(),
        repeats=args.repeats,
        dtype="float32",
    )
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
