"""redundax.monitor against independent references: NumPy on the concatenated activations (SVD,
eigvalsh, corrcoef), closed-form spectra, and the expected module paths of a nested model."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import redundax.functionals as F
from redundax import monitor
from redundax.functionals import Moments

SCRIPTS = pathlib.Path(__file__).parent / "scripts"
sys.path.insert(0, str(SCRIPTS))
import monitor_streaming as ms  # noqa: E402

METRICS = tuple(monitor.METRICS)


# --------------------------------------------------------------------------- NumPy references


def numpy_metrics(x: np.ndarray) -> dict[str, float]:
    """Every monitor metric of samples x (n, d), in float64 NumPy (SVD for RankMe)."""
    x = np.asarray(x, np.float64)
    n, d = x.shape
    lam = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0, None)[::-1]
    lam = np.where(lam > 1e-9 * lam[0], lam, 0)
    p = lam[lam > 0] / lam.sum()
    entropy = -np.sum(p * np.log(p))
    sd = x.std(0)
    corr = np.eye(d)
    ok = sd > 1e-6 * (np.abs(x.mean(0)) + 1)
    corr[np.ix_(ok, ok)] = np.corrcoef(x[:, ok], rowvar=False)
    s = np.linalg.svd(x, compute_uv=False)
    q = s / s.sum() + monitor.RANKME_EPS
    pos = lam[lam > 0]
    slope = np.polyfit(np.log(np.arange(1, pos.size + 1)), np.log(pos), 1)[0] if pos.size > 1 else 0
    return {
        "spectral_redundancy": 1 - np.exp(entropy) / d,
        "effective_rank": np.exp(entropy),
        "spectral_entropy": entropy,
        "gaussian_total_correlation": -0.5
        * np.linalg.slogdet((1 - 1e-4) * corr + 1e-4 * np.eye(d))[1],
        "chi2_redundancy": 0.25 * np.sum((corr - np.eye(d)) ** 2),
        "rankme": np.exp(-np.sum(q * np.log(q))),
        "alpha_req": -slope,
        "num_samples": float(n),
    }


def reference_activations(model: ms.Net, x: np.ndarray) -> dict[str, np.ndarray]:
    """Samples x units of `ms.LAYERS` from a NumPy forward pass with the model's parameters."""

    def linear(layer, h):
        return h @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...])

    h = linear(model.embed, x.astype(np.float64))
    acts = {"embed": h}
    for si, stage in enumerate(model.stages):
        for bi, block in enumerate(stage.blocks):
            a = linear(block.fc1, h)
            acts[f"stages.{si}.blocks.{bi}.fc1"] = a
            h = h + linear(block.fc2, np.maximum(a, 0))
    acts["head"] = linear(model.head, h)
    return {
        "embed": acts["embed"].reshape(-1, 8),  # flatten: every token a sample
        "stages.1.blocks.0.fc1": acts["stages.1.blocks.0.fc1"].mean(1),  # mean over tokens
        "head": acts["head"].reshape(-1, 3),
    }


@pytest.fixture(scope="module")
def expected():
    acts = reference_activations(ms.make_model(), ms.make_data())
    return {layer: numpy_metrics(a) for layer, a in acts.items()}


def assert_matches(results, expected):
    assert sorted(results) == sorted(expected)
    for layer, ref in expected.items():
        got = results[layer]
        assert got["undersampled"] == 0.0
        for name in METRICS:
            np.testing.assert_allclose(
                got[name], ref[name], rtol=2e-3, atol=2e-4, err_msg=f"{layer} {name}"
            )


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("batch_size", [25, 30, 100])  # divides, does not divide, one batch
def test_streaming_equals_numpy_on_concatenated_activations(batch_size, expected):
    assert_matches(ms.run(ms.make_data(), batch_size), expected)


def _script(tmp_path, env_extra, *flags):
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [sys.executable, str(SCRIPTS / "monitor_streaming.py"), "--out", str(tmp_path / "r"),
         "--batch_size", "25", "--batch_size", "30", *flags],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _finish(proc):
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]


@pytest.mark.slow
def test_streaming_on_8_devices_equals_numpy(tmp_path, expected):
    _finish(_script(tmp_path, {"JAX_NUM_CPU_DEVICES": "8"}))
    out = json.loads((tmp_path / "r.0").read_text())
    assert out["devices"] == 8
    for b in ("25", "30"):
        assert_matches(out["results"][b], expected)


@pytest.mark.slow
def test_streaming_over_2_processes_equals_numpy(tmp_path, expected):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        _script(tmp_path, {"JAX_NUM_CPU_DEVICES": "2"}, "--coordinator_address",
                f"127.0.0.1:{port}", "--num_processes", "2", "--process_id", str(i))
        for i in range(2)
    ]  # fmt: skip
    for p in procs:
        _finish(p)
    for i in range(2):  # every process holds the full-dataset values
        out = json.loads((tmp_path / f"r.{i}").read_text())
        assert out["processes"] == 2 and out["devices"] == 4
        for b in ("25", "30"):
            assert_matches(out["results"][b], expected)


# --------------------------------------------------------------------------- metrics


def test_rankme_equals_numpy_svd_of_the_embedding_matrix():
    rng = np.random.default_rng(1)
    for n, d in [(200, 10), (6, 10)]:  # n > d, and n < d (min(n, d) singular values)
        z = (rng.normal(size=(n, d)) * np.geomspace(3, 0.01, d) + 0.7).astype(np.float32)
        s = np.linalg.svd(z.astype(np.float64), compute_uv=False)
        p = s / s.sum() + 1e-7
        ref = np.exp(-np.sum(p * np.log(p)))
        got = float(monitor.from_samples(z, "rankme")["rankme"])
        np.testing.assert_allclose(got, ref, rtol=1e-4)


@pytest.mark.parametrize("n", [12, 40])  # the functionals' Gram path (n <= d) and covariance path
def test_from_samples_equals_the_sample_functionals_under_vmap(n):
    """What MAE's per-epoch metrics of Z need: the same values as the sample functionals."""
    z = np.random.default_rng(5).normal(size=(3, n, 16)).astype(np.float32)
    z[..., 1] = z[..., 0] * 2 + 1  # a duplicated unit
    names = (
        "spectral_redundancy",
        "effective_rank",
        "chi2_redundancy",
        "gaussian_total_correlation",
    )
    got = jax.jit(jax.vmap(lambda x: monitor.from_samples(x, names)))(z)
    for name in names:
        ref = jax.vmap(getattr(F, name))(z)
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("alpha", [0.7, 1.5])
def test_alpha_req_recovers_a_power_law_exponent(alpha):
    d, n = 32, 1000
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(d, d)))
    lam = np.arange(1, d + 1) ** -alpha
    exact = Moments(
        count=jnp.float32(n),
        mean=jnp.zeros(d, jnp.float32),
        comoment=jnp.asarray((n - 1) * (q * lam) @ q.T, jnp.float32),
    )
    np.testing.assert_allclose(monitor.from_moments(exact, "alpha_req")["alpha_req"], alpha, 1e-3)
    # ... and from samples of that spectrum (sampling noise in the tail only)
    x = np.random.default_rng(3).normal(size=(50_000, d)) * np.sqrt(lam) @ q.T
    got = monitor.from_samples(x.astype(np.float32), "alpha_req")["alpha_req"]
    np.testing.assert_allclose(got, alpha, rtol=0.05)


def test_every_metric_is_finite_on_collapsed_and_constant_layers():
    rng = np.random.default_rng(4)
    d = 6
    rank1 = np.outer(rng.normal(size=50), rng.normal(size=d)).astype(np.float32)
    const_units = rng.normal(size=(50, d)).astype(np.float32)
    const_units[:, :3] = 2.5
    cases = {"rank1": rank1, "constant_units": const_units, "constant": np.full((50, d), 3.0)}
    for case, x in cases.items():
        values = monitor.from_samples(jnp.asarray(x, jnp.float32), METRICS)
        for name, v in values.items():
            assert np.isfinite(v), (case, name, v)
    r1 = monitor.from_samples(rank1, METRICS)
    np.testing.assert_allclose(r1["effective_rank"], 1.0, atol=1e-4)
    np.testing.assert_allclose(r1["spectral_redundancy"], 1 - 1 / d, atol=1e-4)
    np.testing.assert_allclose(r1["rankme"], 1.0, atol=1e-4)
    # constant units are independent of the others: the measures of the varying half alone
    half = monitor.from_samples(const_units[:, 3:], ("chi2_redundancy",))
    np.testing.assert_allclose(
        monitor.from_samples(const_units, ("chi2_redundancy",))["chi2_redundancy"],
        half["chi2_redundancy"],
        rtol=1e-5,
    )


def test_undersampled_layer_is_flagged():
    model = ms.make_model()
    x = ms.make_data()[:5]  # 5 inputs, 16 units, reduced by mean -> 5 samples
    res = monitor.measure(model, [x], where=r"stages\.1\.blocks\.0\.fc1", reduce="mean")
    assert res["stages.1.blocks.0.fc1"]["undersampled"] == 1.0
    assert res["stages.1.blocks.0.fc1"]["effective_rank"] <= 4 + 1e-4  # capped by n - 1


# --------------------------------------------------------------------------- where


def test_where_by_type_regex_and_predicate_on_nested_lists():
    model = ms.make_model()
    blocks = [f"stages.{s}.blocks.{b}" for s in range(2) for b in range(2)]
    linears = ["embed", *[f"{p}.fc{i}" for p in blocks for i in (1, 2)], "head"]
    assert sorted(monitor.select(model, nnx.Linear)) == sorted(linears)
    assert sorted(monitor.select(model, (ms.MLP, ms.Stage))) == sorted(
        [*blocks, "stages.0", "stages.1"]
    )
    assert sorted(monitor.select(model, r"stages\.\d+\.blocks\.1\.fc1")) == [
        "stages.0.blocks.1.fc1",
        "stages.1.blocks.1.fc1",
    ]
    assert sorted(monitor.select(model, re.compile(r"stages\.1(\.blocks\.\d)?"))) == [
        "stages.1",
        "stages.1.blocks.0",
        "stages.1.blocks.1",
    ]
    pred = monitor.select(model, lambda p, m: isinstance(m, ms.MLP) and p.startswith("stages.0"))
    assert sorted(pred) == ["stages.0.blocks.0", "stages.0.blocks.1"]
    # the captured outputs have the selected modules' shapes
    res = monitor.measure(model, [ms.make_data()[:20]], where=ms.MLP, metrics="num_samples")
    assert sorted(res) == sorted(blocks)
    assert all(v["num_samples"] == 20 * ms.T for v in res.values())


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_value_error_naming_the_argument():
    model, x = ms.make_model(), ms.make_data()[:10]
    with pytest.raises(ValueError, match=r"`where`.*selects no module"):
        monitor.measure(model, [x], where=nnx.Conv)
    with pytest.raises(ValueError, match=r"`where`.*selects no module"):
        monitor.measure(model, [x], where=r"blocks\.9")
    with pytest.raises(ValueError, match=r"`where` must be"):
        monitor.measure(model, [x], where=3)
    with pytest.raises(ValueError, match=r"`metrics`.*unknown \['rank_me'\]"):
        monitor.measure(model, [x], where=nnx.Linear, metrics=("rankme", "rank_me"))
    with pytest.raises(ValueError, match=r"`reduce`='mean'.*rank 2"):
        monitor.measure(model, [x[:, 0]], where="head", reduce="mean")
    with pytest.raises(ValueError, match=r"`reduce` modes"):
        monitor.measure(model, [x], where="head", reduce="max")
    with pytest.raises(ValueError, match=r"`batches` is empty"):
        monitor.measure(model, [], where=nnx.Linear)
    with pytest.raises(ValueError, match="one-shot iterator"):
        monitor.evaluator(iter([x]), where=nnx.Linear)


def test_readme_example_runs_and_matches_numpy():
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = readme.split("<!-- monitor-example -->\n```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 16
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    results, model_cls = scope["results"], scope["MLP"]
    assert sorted(results) == ["blocks.0", "blocks.1", "blocks.2"]
    # the same values from NumPy on the concatenated activations of the last layer
    model = model_cls(nnx.Rngs(0))
    x = np.concatenate(
        [np.random.default_rng(i).normal(size=(100, 32)).astype(np.float32) for i in range(10)]
    ).astype(np.float64)
    for i, block in enumerate(model.blocks):
        x = x @ np.asarray(block.kernel[...]) + np.asarray(block.bias[...])
        if i < 2:
            x = np.maximum(x, 0)
    ref = numpy_metrics(x)
    for name in ("effective_rank", "rankme"):
        np.testing.assert_allclose(results["blocks.2"][name], ref[name], rtol=2e-3)
