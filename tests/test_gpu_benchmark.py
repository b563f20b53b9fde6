"""benchmarks/gpu.py in its CPU mode: it says there is no GPU, runs the tiny pass of every section
and exits 0; the functional values it reports match NumPy on the same samples."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _numpy_effective_rank(x: np.ndarray) -> float:
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)
    p = lam / lam.sum()
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.slow
def test_cpu_tiny_mode_runs_every_section(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--repeats", "1", "--out_dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "No GPU" in proc.stdout
    report = json.loads((tmp_path / "gpu_cpu_tiny.json").read_text())
    assert report["mode"] == "tiny" and report["backend"] == "cpu"
    assert (tmp_path / "gpu_cpu_tiny.md").read_text().count("|") > 50
    # functional values against NumPy on the same samples (the benchmark's construction)
    for n, d in {(r["n"], r["d"]) for r in report["functionals"]}:
        x = jax.random.normal(jax.random.key(0), (n, d), jnp.float32)
        x = np.asarray(x + 0.5 * x[:, :1], np.float64)
        rows = {r["functional"]: r for r in report["functionals"] if (r["n"], r["d"]) == (n, d)}
        r_eff = _numpy_effective_rank(x)
        assert rows["effective_rank"]["value"] == pytest.approx(r_eff, rel=1e-3)
        assert rows["spectral_redundancy"]["value"] == pytest.approx(1 - r_eff / d, abs=1e-3)
        trace = np.trace(np.cov(x, rowvar=False))
        assert rows["covariance (Moments)"]["value"] == pytest.approx(trace, rel=1e-4)
    updates = report["transforms"]["updates"]
    assert set(updates) == {
        "sgd",
        "redreg+sgd",
        "redreg(idle)+sgd",
        "redreg(per_modality)+sgd",
        "ogm+sgd",
        "ogm_ge+sgd",
        "ogm_ge(fused_threefry)+sgd",
        "ogm_ge(inverse_cdf)+sgd",
    }
    assert updates["sgd"]["x_sgd"] == 1.0
    assert report["transforms"]["suppression_step"]["max_relative_error"] < 1e-4
    mae = report["mae"]
    assert mae["flops_per_step"] > 0 and mae["images_per_s"] > 0
    assert mae["mfu"] is None and "unknown" in mae["peak_note"]
    assert report["channels"]["finite"] and report["channels"]["num_images"] == 16
