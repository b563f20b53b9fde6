"""MAE experiment: config validation, the smoke sweep's outputs, restart, R* and Table 2 rows."""

import json

import numpy as np
import pytest

from configs.mae import DIGITS_LAMBDAS, PAPER_LAMBDAS, get_config
from experiments import mae


# ------------------------------------------------------------------------------ config validation
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("sweep.lambdas", (), r"config\.sweep\.lambdas.*empty"),
        ("sweep.lambdas", (0.0, -1e-3), r"config\.sweep\.lambdas.*>= 0"),
        ("sweep.lambdas", (0.0, float("nan")), r"config\.sweep\.lambdas"),
        ("sweep.seeds", (), r"config\.sweep\.seeds"),
        ("mask_ratio", 0.0, r"config\.mask_ratio.*between 0 and 1"),
        ("mask_ratio", 1.0, r"config\.mask_ratio"),
        ("mask_ratio", 1.5, r"config\.mask_ratio"),
        ("mask_ratio", 0.99, r"config\.mask_ratio.*keeps no patch"),
        ("model.patch_size", 3, r"config\.model\.patch_size.*does not divide"),
        ("model.num_heads", 5, r"config\.model\.num_heads"),
        ("z_mode", "max", r"config\.z_mode"),
        ("data.batch_size", 1, r"config\.data\.batch_size"),
        ("eval.final_epochs", 0, r"config\.eval\.final_epochs"),
    ],
)
def test_bad_config_raises_naming_the_field_before_training(tmp_path, field, value, match):
    config = get_config("smoke")
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        mae.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()  # nothing written, nothing trained


def test_presets():
    assert tuple(get_config().sweep.lambdas) == DIGITS_LAMBDAS
    assert set(PAPER_LAMBDAS) <= set(DIGITS_LAMBDAS)  # the digits grid contains the paper's
    c100 = get_config("cifar100")
    assert tuple(c100.sweep.lambdas) == PAPER_LAMBDAS and c100.mask_ratio == 0.75
    m = mae.model_config(c100)
    assert (m.embed_dim, m.depth, m.num_heads, m.image_size) == (768, 12, 12, 32)
    for preset in (None, "smoke", "cifar100"):
        mae.validate_config(get_config(preset))
    with pytest.raises(ValueError, match="Unknown preset"):
        get_config("imagenet")


# ------------------------------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("mae_smoke")
    config = get_config("smoke")
    out = mae.run(config, str(work))
    return config, work, out


def test_smoke_sweep_writes_every_output(smoke):
    config, work, _ = smoke
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md",
                 "figure1_accuracy_vs_redundancy.png", "figure2_rank_and_redundancy.png"):
        assert (work / name).is_file(), name
    for png in work.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert any((work / "tensorboard").iterdir())
    assert any((work / "checkpoints").iterdir())
    n_members = len(config.sweep.lambdas) * len(config.sweep.seeds)
    assert len(list((work / "members").glob("*.json"))) == n_members
    # one metrics line per member and evaluation (initialisation + every epoch)
    lines = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == n_members * (config.optim.epochs + 1)

    results = json.loads((work / "results.json").read_text())
    assert set(results) >= {"rows", "summary", "baselines", "r_star"}
    assert len(results["rows"]) == n_members and len(results["summary"]) == 2
    d = config.model.embed_dim or 64
    for row in results["rows"]:
        assert set(row) >= {"lambda_red", "seed", "spectral_redundancy", "effective_rank",
                            "chi2_redundancy", "gaussian_total_correlation", "val_loss",
                            "probe_top1"}
        assert 0.0 <= row["probe_top1"] <= 1.0
        assert 0.0 <= row["spectral_redundancy"] <= 1 - 1 / d
        # r_eff and R_spec are two views of one spectrum (Def. 2), averaged over final epochs
        if config.eval.final_epochs == 1:
            assert row["spectral_redundancy"] == pytest.approx(1 - row["effective_rank"] / d,
                                                               abs=1e-5)
    for s in results["summary"]:  # summary = mean/std over the seeds of the rows
        group = [r["probe_top1"] for r in results["rows"] if r["lambda_red"] == s["lambda_red"]]
        assert s["probe_top1_mean"] == pytest.approx(np.mean(group))
        assert s["probe_top1_std"] == pytest.approx(np.std(group, ddof=1))
    base = results["baselines"]
    assert 0.5 < base["raw_pixels"]["probe_top1"] <= 1.0  # digits are nearly linearly separable
    assert len(base["random_init"]["rows"]) == len(config.sweep.seeds)
    assert isinstance(results["r_star"]["statement"], str) and results["r_star"]["statement"]

    md = (work / "results.md").read_text()
    assert "| λ_red | R_spec |" in md and "raw pixels" in md and "random-init encoder" in md
    assert md.count("\n| 0 |") == 1 and "±" in md


def test_restarted_sweep_skips_finished_members_and_refuses_other_configs(smoke):
    config, work, out = smoke
    again = mae.run(config, str(work))
    assert again["timing"]["members_trained_this_run"] == 0
    assert again["timing"]["recorded_training_seconds"] == pytest.approx(
        out["timing"]["recorded_training_seconds"])
    assert len(again["timing"]["groups"]) == 1  # the smoke members trained as one vmapped group
    assert again["rows"] == out["rows"]
    other = get_config("smoke")
    other.optim.learning_rate = 1e-2
    with pytest.raises(ValueError, match="different configuration"):
        mae.run(other, str(work))


# --------------------------------------------------------------------------------- R* and rows
def _rows(f, seeds=3, lambdas=7, noise=0.005, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for r in np.linspace(0.1, 0.9, lambdas):
            r = r + rng.normal(0, 0.01)
            rows.append({"spectral_redundancy": r, "probe_top1": f(r) + rng.normal(0, noise),
                         "seed": s})
    return rows


def test_r_star_recovers_a_known_interior_optimum():
    rows = _rows(lambda r: 0.8 - 2.0 * (r - 0.55) ** 2)
    est = mae.estimate_r_star(rows, bootstrap=300, seed=0, level=0.9)
    assert est["supported"] and est["r_star"] == pytest.approx(0.55, abs=0.03)
    lo, hi = est["interval"]
    assert lo <= 0.55 <= hi and hi - lo < 0.1
    assert est["statement"].startswith("Probe accuracy peaks")
    assert mae.regime(0.2, est) == "under-redundant" and mae.regime(0.9, est) == "over-redundant"


@pytest.mark.parametrize(
    ("f", "noise"),
    [
        (lambda r: 0.9 - 0.3 * r, 0.005),  # monotone
        (lambda r: 0.5 + (r - 0.5) ** 2, 0.005),  # a true U in error: accuracy dips
        # rising then flat (saturating): a concave quadratic fits it with an interior maximum,
        # but accuracy does not fall above that maximum
        (lambda r: 0.9 - 0.2 * np.exp(-12 * r), 0.01),
    ],
)
def test_r_star_says_plainly_when_there_is_no_u(f, noise):
    est = mae.estimate_r_star(_rows(f, noise=noise), bootstrap=300, seed=0, level=0.9)
    assert not est["supported"]
    assert est["statement"].startswith("The points do not support a U")
    assert mae.regime(0.5, est) == "-"


def test_r_star_names_a_gap_in_the_data():
    rng = np.random.default_rng(3)
    rows = [{"spectral_redundancy": r + rng.normal(0, 0.005),
             "probe_top1": 0.8 - 2.0 * (r - 0.5) ** 2 + rng.normal(0, 0.003), "seed": s}
            for s in range(3) for r in (0.1, 0.15, 0.2, 0.8, 0.85, 0.9)]
    est = mae.estimate_r_star(rows, bootstrap=200, seed=0, level=0.9)
    assert est["r_star"] == pytest.approx(0.5, abs=0.05)
    lo, hi = est["data_gap"]
    assert lo < 0.25 and hi > 0.75 and "No member has R_spec between" in est["statement"]


def test_r_star_needs_three_distinct_redundancies():
    rows = [{"spectral_redundancy": r, "probe_top1": 0.5, "seed": 0} for r in (0.1, 0.2, 0.1)]
    est = mae.estimate_r_star(rows, bootstrap=10, seed=0, level=0.9)
    assert not est["supported"] and "Fewer than three" in est["statement"]


def test_member_row_averages_the_final_epochs():
    history = [{"epoch": float(e), "step": e * 10,
                "val/spectral_redundancy": 0.1 * e, "val/effective_rank": e,
                "val/chi2_redundancy": 2.0 * e, "val/gaussian_total_correlation": 3.0 * e,
                "val/recon_loss": 1.0 / (e + 1), "train/recon_loss": 2.0 / (e + 1)}
               for e in range(6)]
    history.insert(3, {**history[3], "epoch": 2.5})  # an extra mid-epoch evaluation is ignored
    row = mae.member_row({"value": 0.01, "seed": 1, "history": history, "probe_top1": 0.7,
                          "probe_train_top1": 0.8}, final_epochs=3)
    assert row["spectral_redundancy"] == pytest.approx(0.1 * (3 + 4 + 5) / 3)
    assert row["gaussian_total_correlation"] == pytest.approx(3.0 * 4)
    assert row["val_loss"] == pytest.approx(1 / 6) and row["train_loss"] == pytest.approx(2 / 6)
    assert (row["lambda_red"], row["seed"], row["probe_top1"]) == (0.01, 1, 0.7)
