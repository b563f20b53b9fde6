"""End-to-end: the channels experiment on a shortened smoke config writes its tables and figures."""

import json

from configs.channels import get_config
from experiments import channels as exp


def test_pipeline_writes_results(tmp_path):
    c = get_config("smoke")
    with c.unlocked():
        c.archs = [c.archs[1]]  # the VGG stand-in only
        c.prune.methods = ("magnitude", "ix", "task_mi")
        c.prune.sparsities = (0.3, 0.7)
        c.train.epochs = 1
        c.metrics.n_perm = 10
    res = exp.run(c, tmp_path)
    r = res["archs"]["VGG-16"]
    assert set(r["auc_mean"]) == {"magnitude", "ix", "task_mi"}
    assert r["best_local"] == "ix" and r["best_target"] == "task_mi"
    run = r["runs"][0]
    lo, hi = run["interval"]
    assert 0 <= lo < hi <= 1
    for m in ("magnitude", "ix"):  # FLOPs pruned grows with channel sparsity
        xs = run["curves"][m]["flops_pruned"]
        assert xs[0] < xs[1]
    # Lemma 1: Red_T tracks task MI almost exactly
    assert r["alignment"]["rho_taskmi_redt_mean"] > 0.9
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["archs"]["VGG-16"]["best_local"] == "ix"
    assert "FLOPs-matched" in (tmp_path / "results.md").read_text()
    idx = json.loads((tmp_path / "calibration_indices.json").read_text())
    assert len(idx["indices"]) == c.calib.size and idx["split"] == "train"
    for f in ("two_axis_scatter.png", "pruning_curves.png", "lesion_summary.png", "metrics.jsonl"):
        assert (tmp_path / f).stat().st_size > 0
    assert any((tmp_path / "checkpoints").iterdir())
