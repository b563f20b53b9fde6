"""Streaming two-axis metric extraction and summaries against brute force on captured activations."""

import json

import numpy as np
import pytest
from flax import nnx

from redundax.analysis import channels as ana
from redundax.functionals import channels as fch
from redundax.models.mobilenet import MobileNetV2
from redundax.models.vgg import VGG
from redundax.prune import graph as G
from redundax.regularizers import conv_outputs


@pytest.fixture(scope="module")
def setup():
    model = VGG(10, in_channels=1, cfg=(6, "M", 12, 12), rngs=nnx.Rngs(0))
    g = G.channel_graph(model)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    stats = ana.extract_stats(model, g, x, y, batch_size=16, patches=True)
    per, summ = ana.compute_metrics(model, g, stats, ana.MetricConfig(m=4, hull_cap=5))
    return model, g, x, y, stats, per, summ


def brute(model, g, x, y):
    logits, acts = conv_outputs(
        nnx.view(model, use_running_average=True), x, [u.conv for u in g.units]
    )
    logits = np.asarray(logits, np.float64)
    t = np.array([logits[i, y[i]] - np.max(np.delete(logits[i], y[i])) for i in range(len(y))])
    return t, {u.name: np.asarray(a, np.float64) for u, a in zip(g.units, acts, strict=True)}


def test_streamed_moments_match_numpy(setup):
    model, g, x, y, stats, _, _ = setup
    t, acts = brute(model, g, x, y)
    for u in g.units:
        a = acts[u.name]
        flat = a.reshape(-1, a.shape[-1])
        np.testing.assert_allclose(
            stats[u.name].spatial.covariance(), np.cov(flat, rowvar=False), rtol=2e-3, atol=1e-5
        )
        pooled = np.column_stack([a.mean((1, 2)), t])
        np.testing.assert_allclose(
            stats[u.name].pooled.correlation(), np.corrcoef(pooled, rowvar=False), atol=2e-4
        )


def test_layer_metrics_match_direct_functionals(setup):
    """The padded, jitted per-layer core equals the plain functionals on brute-force samples."""
    model, g, x, y, _, per, summ = setup
    t, acts = brute(model, g, x, y)
    for u in g.units:
        a = acts[u.name]
        flat, pooled = a.reshape(-1, a.shape[-1]), a.mean((1, 2))
        m = per[u.name]
        np.testing.assert_allclose(m["rx"], fch.peer_overlap(flat), rtol=2e-3, atol=1e-5)
        np.testing.assert_allclose(
            m["task_mi"], fch.task_mutual_information(pooled, t), rtol=2e-3, atol=1e-5
        )
        np.testing.assert_allclose(
            m["red_t"], fch.mmi_redundancy(pooled, t, m=4), rtol=2e-3, atol=1e-5
        )
        np.testing.assert_allclose(
            m["syn"], fch.pairwise_synergy(pooled, t, m=4), rtol=5e-3, atol=1e-4
        )
        hulls = fch.greedy_hulls(np.corrcoef(flat, rowvar=False), cap=5)
        np.testing.assert_allclose(m["e_full"], hulls.e_full, atol=2e-3)
        # I_X: eq. 1 through Sigma_X of the unfolded patches equals the output-variance route
        np.testing.assert_allclose(m["s"], flat.var(0, ddof=1), rtol=2e-3)
        np.testing.assert_allclose(m["ix"], 0.5 * np.log1p(m["s"] / np.median(m["s"])), rtol=2e-3)
        assert np.isfinite(summ[u.name]["q_r"]) and summ[u.name]["hull_mean"] <= 5


def test_depthwise_patches_match_output_variance():
    model = MobileNetV2(
        10,
        in_channels=1,
        width=0.5,
        last_channels=8,
        settings=((1, 8, 1, 1), (2, 8, 1, 2)),
        rngs=nnx.Rngs(1),
    )
    g = G.channel_graph(model)
    x = np.random.default_rng(1).normal(size=(12, 8, 8, 1)).astype(np.float32)
    y = np.arange(12) % 10
    with_p = ana.extract_stats(model, g, x, y, batch_size=6, patches=True)
    for u in g.units:
        var = np.diag(np.asarray(with_p[u.name].spatial.covariance()))
        s = fch.signal_power(ana.unit_filters(model, u), with_p[u.name].patches.covariance())
        np.testing.assert_allclose(s, var, rtol=2e-3, atol=1e-6)


def test_calibration_indices_roundtrip(tmp_path):
    a = ana.calibration_indices(1000, 50, seed=3)
    assert len(np.unique(a)) == 50 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(a, ana.calibration_indices(1000, 50, seed=3))
    ana.save_indices(tmp_path / "idx.json", a, split="train")
    np.testing.assert_array_equal(ana.load_indices(tmp_path / "idx.json"), a)
    assert json.loads((tmp_path / "idx.json").read_text())["split"] == "train"
    with pytest.raises(ValueError, match="size"):
        ana.calibration_indices(10, 11)


def test_ari_against_null():
    rng = np.random.default_rng(0)
    centers = np.repeat(np.eye(3) * 6, 20, axis=0)[:, :2]
    local = centers + rng.normal(size=(60, 2)) * 0.3
    same = ana.ari_vs_null(local, local + rng.normal(size=(60, 2)) * 0.01, n_perm=100)
    assert same["ari"] > 0.95 and same["p"] < 0.05 and abs(same["null_mean"]) < 0.1
    indep = ana.ari_vs_null(local, rng.normal(size=(60, 2)), n_perm=100)
    assert indep["ari"] < indep["null_p95"] + 0.1


def test_spearman_propagation_bootstrap(setup):
    model, g, _, _, _, per, _ = setup
    mat = ana.spearman_matrix(per[g.names[1]])
    assert np.allclose(np.diag(mat), 1.0)
    prop = ana.propagation(model, g, per)
    assert prop["pairs"] == len(g.units) - 1 and prop["matrix"].shape == (4, 4)
    b = ana.paired_bootstrap([0.1, 0.1, 0.1], n_boot=100)
    assert b["mean"] == pytest.approx(0.1) and b["lo"] == pytest.approx(0.1)
    b = ana.paired_bootstrap([0.0, 1.0, 2.0, 3.0], n_boot=2000)
    assert b["lo"] < 1.5 < b["hi"]
