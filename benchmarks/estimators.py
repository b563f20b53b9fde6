"""Benchmark: higher-order measures over all multiplets, and the KSG total-correlation estimator.

1. O-information (with TC, DTC, S) of every triplet and every quadruplet of d = 20 and d = 40 units
   from n = 5000 samples: `correlation` + `gaussian_multiplets` (jitted, batched on device) against a
   NumPy loop over subsets (np.corrcoef once, then slogdet and inverse per subset, float64).
2. KSG total correlation (k = 3, d = 4) at n = 2000 and n = 10000: `ksg_total_correlation` (blocked
   exact max-norm k-NN in JAX) against NumPy code built on `scipy.spatial.cKDTree` (joint k-NN and
   marginal ball counts).
3. Optional: `hoi`'s Gaussian O-information over the same multiplets, when the package is importable.

Both sides get the same input and their results are checked to agree before timing. Reports the
median of repeats (compile time excluded and listed separately) and ratio = reference time / redundax
time (> 1: redundax is faster).

    python benchmarks/estimators.py [--repeats 3] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma

import redundax.functionals as F


# ----------------------------------------------------------------------------- NumPy references
def np_o_information_loop(x: np.ndarray, k: int) -> np.ndarray:
    """O-information of every k-subset: one correlation, then a Python loop over subsets."""
    c = np.corrcoef(x, rowvar=False)
    out = []
    for s in itertools.combinations(range(c.shape[0]), k):
        sub = c[np.ix_(s, s)]
        logdet = np.linalg.slogdet(sub)[1]
        out.append(-logdet - 0.5 * np.sum(np.log(np.diag(np.linalg.inv(sub)))))
    return np.asarray(out)


def np_ksg(x: np.ndarray, k: int = 3) -> float:
    """KSG eq. 9 with cKDTree: joint k-NN under the max-norm, strict marginal ball counts."""
    x = (x - x.mean(0)) / x.std(0)
    n, d = x.shape
    eps = cKDTree(x).query(x, k=k + 1, p=np.inf)[0][:, k]
    total = np.zeros(n)
    for j in range(d):
        col = x[:, j : j + 1]
        inside = cKDTree(col).query_ball_point(
            col, np.nextafter(eps, 0), p=np.inf, return_length=True
        )
        total += digamma(inside)
    return float(digamma(k) + (d - 1) * digamma(n) - total.mean())


# ----------------------------------------------------------------------------- timing
def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def o_information_rows(n: int, dims: list[int], ks: list[int], repeats: int) -> list[dict]:
    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        x64 = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d) + rng.normal(
            size=(n, d)
        )
        x = jnp.asarray(x64, jnp.float32)
        for k in ks:

            def ours(x=x, k=k):
                return F.gaussian_multiplets(F.correlation(x), k, shrinkage=0.0).o

            t = time.perf_counter()
            got = np.asarray(jax.block_until_ready(ours()))
            compile_s = time.perf_counter() - t
            ref = np_o_information_loop(x64, k)
            err = float(np.max(np.abs(got - ref)))
            assert err < 1e-3, f"O-information mismatch {err}"
            t_ours = median_time(ours, repeats)
            t_ref = median_time(lambda x64=x64, k=k: np_o_information_loop(x64, k), repeats)
            row = {
                "case": f"O-info all {k}-subsets",
                "n": n,
                "d": d,
                "subsets": len(ref),
                "redundax_s": t_ours,
                "numpy_loop_s": t_ref,
                "ratio": t_ref / t_ours,
                "first_call_s": compile_s,
                "max_abs_diff": err,
            }
            rows.append(row)
            print(
                f"{row['case']:24s} n={n:<6d} d={d:<3d} m={row['subsets']:<6d} "
                f"redundax {t_ours:8.4f}s  numpy {t_ref:8.4f}s  ratio {row['ratio']:7.1f}x",
                flush=True,
            )
    return rows


def ksg_rows(ns: list[int], d: int, repeats: int) -> list[dict]:
    rows = []
    for n in ns:
        rng = np.random.default_rng(n)
        c = np.full((d, d), 0.5) + 0.5 * np.eye(d)
        x64 = rng.multivariate_normal(np.zeros(d), c, size=n)
        x = jnp.asarray(x64)
        t = time.perf_counter()
        got = float(F.ksg_total_correlation(x))
        compile_s = time.perf_counter() - t
        ref = np_ksg(np.asarray(x, np.float64))
        assert abs(got - ref) < 5e-3, f"KSG mismatch {got} vs {ref}"
        t_ours = median_time(lambda x=x: F.ksg_total_correlation(x), repeats)
        t_ref = median_time(lambda x64=x64: np_ksg(x64), repeats)
        row = {
            "case": "KSG TC (k=3)",
            "n": n,
            "d": d,
            "redundax_s": t_ours,
            "ckdtree_s": t_ref,
            "ratio": t_ref / t_ours,
            "first_call_s": compile_s,
            "estimate": got,
            "reference_estimate": ref,
            "closed_form": float(-0.5 * np.linalg.slogdet(c)[1]),
        }
        rows.append(row)
        print(
            f"{row['case']:24s} n={n:<6d} d={d:<3d}          redundax {t_ours:8.4f}s  "
            f"cKDTree {t_ref:8.4f}s  ratio {row['ratio']:7.2f}x  (TC {got:.4f} vs {ref:.4f})",
            flush=True,
        )
    return rows


def hoi_rows(n: int, d: int, k: int) -> list[dict]:
    try:
        from hoi.metrics import Oinfo  # optional dependency
    except ImportError:
        print("hoi is not installed: skipping the optional hoi comparison.")
        return []
    x = np.random.default_rng(0).normal(size=(n, d))
    t = time.perf_counter()
    Oinfo(x).fit(minsize=k, maxsize=k, method="gc")
    t_hoi = time.perf_counter() - t
    t_ours = median_time(lambda: F.gaussian_multiplets(F.correlation(jnp.asarray(x)), k).o, 3)
    print(f"hoi Oinfo k={k} d={d}: {t_hoi:.3f}s vs redundax {t_ours:.4f}s")
    return [
        {"case": f"hoi Oinfo {k}-subsets", "n": n, "d": d, "hoi_s": t_hoi, "redundax_s": t_ours}
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes (development run)")
    ap.add_argument(
        "--out",
        default=str(pathlib.Path(__file__).resolve().parent / "results" / "estimators.json"),
    )
    args = ap.parse_args()
    if args.quick:
        o_rows = o_information_rows(1000, [12], [3, 4], args.repeats)
        k_rows = ksg_rows([500], 4, args.repeats)
    else:
        o_rows = o_information_rows(5000, [20, 40], [3, 4], args.repeats)
        k_rows = ksg_rows([2000, 10000], 4, args.repeats)
    result = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "jax": jax.__version__,
        "python": platform.python_version(),
        "repeats": args.repeats,
        "o_information": o_rows,
        "ksg": k_rows,
        "hoi": hoi_rows(5000, 20, 3),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
