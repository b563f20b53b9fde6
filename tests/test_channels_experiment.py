"""End-to-end: the channels experiment's smoke preset writes its tables, figures and checkpoints."""

import itertools
import json

import numpy as np

from configs.channels import get_config
from experiments import channels as exp
from redundax import prune
from redundax.prune import channels as pc


def test_smoke_preset_writes_results(tmp_path):
    c = get_config("smoke")
    res = exp.run(c, tmp_path)
    assert set(res["archs"]) == {"ResNet-18", "VGG-16", "MobileNetV2"}
    for r in res["archs"].values():
        assert set(r["auc_mean"]) == set(c.prune.methods)
        assert r["best_local"] in pc.LOCAL_METHODS and r["best_target"] in pc.TARGET_METHODS
        run = r["runs"][0]
        lo, hi = run["interval"]
        assert 0 <= lo < hi <= 1
        for m in ("magnitude", "ix"):  # FLOPs pruned grows with channel sparsity
            xs = run["curves"][m]["flops_pruned"]
            assert all(a < b for a, b in itertools.pairwise(xs))
        # Lemma 1: Red_T tracks task MI almost exactly
        assert r["alignment"]["rho_taskmi_redt_mean"] > 0.9
        # every curve point carries the latency of its shrunk network, at both batch sizes
        la = r["latency"]
        assert la["seeds"] == [c.seeds[0]] and la["batch_sizes"] == list(c.latency.batch_sizes)
        for m in c.prune.methods:
            cur = run["curves"][m]
            n = len(c.prune.sparsities)
            assert len(cur["macs"]) == n
            for b in c.latency.batch_sizes:
                ms = cur[f"latency_b{b}_ms"]
                assert len(ms) == n and all(t > 0 for t in ms)
                np.testing.assert_allclose(
                    cur[f"latency_pruned_b{b}"], 1 - np.asarray(ms) / cur[f"latency_full_b{b}_ms"]
                )
            assert set(la["auc_latency"]) == {f"b{b}" for b in c.latency.batch_sizes}
            for b in c.latency.batch_sizes:
                # a mean retention over the common interval of latency saved, NaN when the
                # methods' (noisy) ranges do not overlap
                auc, (lo, hi) = la["auc_latency"][f"b{b}"][m], run["latency_interval"][f"b{b}"]
                assert np.isnan(auc) == (hi <= lo) and (np.isnan(auc) or 0 <= auc <= 1.5)
    r = res["archs"]["VGG-16"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["archs"]["VGG-16"]["best_local"] == r["best_local"]
    md = (tmp_path / "results.md").read_text()
    assert "FLOPs-matched" in md and "Latency-verified pruning" in md
    idx = json.loads((tmp_path / "calibration_indices.json").read_text())
    assert len(idx["indices"]) == c.calib.size and idx["split"] == "train"
    for f in (
        "two_axis_scatter.png",
        "pruning_curves.png",
        "lesion_summary.png",
        "latency_vs_macs.png",
        "metrics.jsonl",
    ):
        assert (tmp_path / f).stat().st_size > 0
    for arch in ("resnet18", "vgg16", "mobilenetv2"):  # resumable runs: base checkpoint, records
        run_dir = tmp_path / "runs" / f"{arch}_seed42"
        assert any((run_dir / "checkpoints").iterdir())
        assert (run_dir / "run.json").is_file() and (
            run_dir / "recovery" / "recovery.json"
        ).is_file()


def test_latency_summary_against_hand_auc():
    """AUC vs latency saved: mean of the piecewise-linear retention over the common interval."""
    c = get_config("smoke")
    c.prune.methods = ("magnitude", "ix")
    c.latency.batch_sizes = (1,)

    def curve(flops_x, lat_x, ret):
        return {
            "flops_pruned": flops_x,
            "retention": ret,
            "latency_pruned_b1": lat_x,
            "latency_full_b1_ms": 2.0,
        }

    runs = [
        {
            "seed": 42,
            "auc": {"magnitude": 0.5, "ix": 0.7},
            "curves": {
                "magnitude": curve([0.2, 0.5, 0.8], [0.1, 0.3, 0.6], [1.0, 0.8, 0.2]),
                "ix": curve([0.1, 0.4, 0.9], [-0.1, 0.2, 0.4], [1.0, 0.9, 0.5]),
            },
        }
    ]
    out = prune.latency_summary(runs, c.prune.methods, c.latency.batch_sizes)
    # common latency interval [0.1, 0.4]; magnitude: trapezoids through (0.1, 1.0), (0.3, 0.8),
    # (0.4, 0.6); ix: trapezoids on its own breakpoints inside the interval
    mag = (0.2 * (1.0 + 0.8) / 2 + 0.1 * (0.8 + 0.6) / 2) / 0.3
    ix_at = lambda x: np.interp(x, [-0.1, 0.2, 0.4], [1.0, 0.9, 0.5])
    ix = (0.1 * (ix_at(0.1) + ix_at(0.2)) / 2 + 0.2 * (ix_at(0.2) + ix_at(0.4)) / 2) / 0.3
    np.testing.assert_allclose(out["auc_latency"]["b1"]["magnitude"], mag)
    np.testing.assert_allclose(out["auc_latency"]["b1"]["ix"], ix)
    assert out["interval"]["b1"] == [0.1, 0.4]
    assert out["auc_macs"] == {"magnitude": 0.5, "ix": 0.7}
    assert out["slower_fraction"]["b1"] == 1 / 6
    assert out["full_ms"]["b1"] == 2.0
    runs[0]["curves"]["magnitude"] = {"flops_pruned": [0.2], "retention": [1.0]}
    assert (
        prune.latency_summary(runs, c.prune.methods, c.latency.batch_sizes) == {}
    )  # runs without latency (switched off) are skipped
