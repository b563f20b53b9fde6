"""Benchmark: the eq. 25 redundancy score against the Theorem 1 first-order estimator, growing d.

Liang (2025, App. C, Table 2) states per-batch costs O(dB) for the cosine score (Theorem 2 / eq. 25)
and O(d^3 + d^2 B) for the first-order linear-Gaussian estimator (Theorem 1). Both are timed here on
one layer of width d, z_{l+1} = tanh(W z_l) + s n (n: noise coordinates, so that the conditional
entropy is finite), for a batch of B = 64 samples:

- eq. 25: `layer_redundancy_scores` on the hidden states (2, B, d) (jitted);
- Theorem 1: `first_order_entropy_rate` around the batch mean: Jacobians by `jax.jacfwd` (p = 2d
  forward directions), covariance blocks, tr A and ln det(I - A) (jitted);
- references in the same run: a vectorised NumPy eq. 25 and a NumPy/LAPACK Theorem 1 with the
  analytic Jacobian diag(1 - tanh^2) W; each reference is checked to agree with the JAX value.

Reports the minimum over repeats (robust on a shared machine; medians are stored too),
compilation excluded and reported separately, the ratio Theorem 1 / eq. 25 and NumPy / JAX for each
estimator. For stable numbers on a busy machine pin both sides to one thread:
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false".

    python benchmarks/entropy_rate.py [--dims 16,32,64,128,256,512,768] [--batch 64] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from redundax.functionals import entropy_rate as er

NOISE = 0.3
RIDGE = 1e-6


def np_eq25(h: np.ndarray) -> np.ndarray:
    dz = h[:, 1:] - h[:, :-1]
    num = np.einsum("lid,lid->li", dz[1:], dz[:-1]) ** 2
    den = np.einsum("lid,lid->li", dz[1:], dz[1:]) * np.einsum("lid,lid->li", dz[:-1], dz[:-1])
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0).sum(-1) / (2 * (h.shape[1] - 1))


def np_theorem1(w: np.ndarray, x0: np.ndarray, sigma2: float = 1.0):
    d = w.shape[0]
    j_layer = (1 - np.tanh(w @ x0) ** 2)[:, None] * w
    j_u = np.concatenate([j_layer, NOISE * np.eye(d)], axis=1)
    j_v = np.concatenate([np.eye(d), np.zeros((d, d))], axis=1)
    s_uu, s_vv, s_uv = sigma2 * j_u @ j_u.T, sigma2 * j_v @ j_v.T, sigma2 * j_u @ j_v.T
    s_uu = s_uu + RIDGE * np.trace(s_uu) / d * np.eye(d)
    s_vv = s_vv + RIDGE * np.trace(s_vv) / d * np.eye(d)
    explained = s_uv @ np.linalg.solve(s_vv, s_uv.T)
    trace_a = np.trace(np.linalg.solve(s_uu, explained))
    logdet_cond = np.linalg.slogdet(s_uu - explained)[1]
    first = 0.5 * d * math.log(2 * math.pi * math.e * sigma2) - 0.5 * trace_a
    return first, trace_a, logdet_cond


def _time(fn, repeats: int) -> tuple[float, float]:
    """(minimum, median) wall time over `repeats` calls."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def bench(d: int, batch: int, repeats: int) -> dict:
    rng = np.random.default_rng(d)
    w = (rng.normal(size=(d, d)) / math.sqrt(d)).astype(np.float32)
    x = rng.normal(size=(batch, d)).astype(np.float32)
    noise = rng.normal(size=(batch, d)).astype(np.float32)
    hidden = np.stack([x, np.tanh(x @ w.T) + NOISE * noise]).astype(np.float32)
    wj = jnp.asarray(w)

    def fn(v):
        z, n = v[:d], v[d:]
        return jnp.tanh(wj @ z) + NOISE * n, z

    x0 = np.concatenate([x.mean(0), np.zeros(d, np.float32)])
    hidden_dev, x0_dev = jnp.asarray(hidden), jnp.asarray(x0)  # on the device before timing
    score = jax.jit(er.layer_redundancy_scores)
    thm1 = jax.jit(lambda p: er.first_order_entropy_rate(fn, p, ridge=RIDGE))

    t0 = time.perf_counter()
    jax.block_until_ready(score(hidden))
    compile_score = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = jax.block_until_ready(thm1(x0))
    compile_thm1 = time.perf_counter() - t0

    ref_score = np_eq25(hidden.astype(np.float64))
    np.testing.assert_allclose(np.asarray(score(hidden)), ref_score, rtol=1e-3, atol=1e-5)
    first, trace_a, _ = np_theorem1(w.astype(np.float64), x0[:d].astype(np.float64))
    np.testing.assert_allclose(float(res.trace_a), trace_a, rtol=2e-2, atol=2e-2 * d**0.5)

    h64 = hidden.astype(np.float64)
    w64, x064 = w.astype(np.float64), x0[:d].astype(np.float64)
    (t_score, m_score) = _time(lambda: score(hidden_dev), repeats)
    (t_thm1, m_thm1) = _time(lambda: thm1(x0_dev), repeats)
    (t_np_score, m_np_score) = _time(lambda: np_eq25(h64), repeats)
    (t_np_thm1, m_np_thm1) = _time(lambda: np_theorem1(w64, x064), repeats)
    return {
        "d": d,
        "batch": batch,
        "eq25_jax_s": t_score,
        "thm1_jax_s": t_thm1,
        "eq25_numpy_s": t_np_score,
        "thm1_numpy_s": t_np_thm1,
        "median_s": {
            "eq25_jax": m_score,
            "thm1_jax": m_thm1,
            "eq25_numpy": m_np_score,
            "thm1_numpy": m_np_thm1,
        },
        "thm1_over_eq25_jax": t_thm1 / t_score,
        "thm1_over_eq25_numpy": t_np_thm1 / t_np_score,
        "numpy_over_jax_eq25": t_np_score / t_score,
        "numpy_over_jax_thm1": t_np_thm1 / t_thm1,
        "compile_eq25_s": compile_score,
        "compile_thm1_s": compile_thm1,
        "R": float(np.asarray(score(hidden))[0]),
        "thm1_first_order": float(res.first_order),
        "thm1_trace_a": float(res.trace_a),
        "numpy_first_order": float(first),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="16,32,64,128,256,512,768")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--out", default=str(pathlib.Path(__file__).parent / "results" / "entropy_rate.json")
    )
    args = parser.parse_args()
    rows = [bench(int(d), args.batch, args.repeats) for d in args.dims.split(",")]
    header = (
        f"{'d':>5} {'eq25 jax':>10} {'thm1 jax':>10} {'thm1/eq25':>10} {'eq25 np':>10} "
        f"{'thm1 np':>10} {'np/jax eq25':>11} {'np/jax thm1':>11}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['d']:>5} {1e3 * r['eq25_jax_s']:>8.3f}ms {1e3 * r['thm1_jax_s']:>8.3f}ms "
            f"{r['thm1_over_eq25_jax']:>10.1f} {1e3 * r['eq25_numpy_s']:>8.3f}ms "
            f"{1e3 * r['thm1_numpy_s']:>8.3f}ms {r['numpy_over_jax_eq25']:>11.2f} "
            f"{r['numpy_over_jax_thm1']:>11.2f}"
        )
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "platform": platform.platform(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "repeats": args.repeats,
    }
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
