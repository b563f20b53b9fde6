"""End-to-end: the channels experiment's smoke preset writes its tables, figures and checkpoints."""

import itertools
import json

from configs.channels import get_config
from experiments import channels as exp
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
    r = res["archs"]["VGG-16"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["archs"]["VGG-16"]["best_local"] == r["best_local"]
    assert "FLOPs-matched" in (tmp_path / "results.md").read_text()
    idx = json.loads((tmp_path / "calibration_indices.json").read_text())
    assert len(idx["indices"]) == c.calib.size and idx["split"] == "train"
    for f in ("two_axis_scatter.png", "pruning_curves.png", "lesion_summary.png", "metrics.jsonl"):
        assert (tmp_path / f).stat().st_size > 0
    assert any((tmp_path / "checkpoints").iterdir())
