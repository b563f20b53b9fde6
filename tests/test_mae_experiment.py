"""MAE experiment: config validation, refinement rounds on a synthetic sweep, the smoke sweep's
outputs (with one refinement round), restart, and Table 2 rows."""

import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs.mae import DIGITS_LAMBDAS, PAPER_LAMBDAS, get_config
from experiments import mae
from redundax import mae_sweep, sweep
from redundax.analysis.mae_table import member_row
from redundax.train import metrics
from redundax.train import state as state_lib


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
        ("sweep.refine.gap", 0.0, r"config\.sweep\.refine\.gap.*positive"),
        ("sweep.refine.rounds", -1, r"config\.sweep\.refine\.rounds"),
        ("sweep.refine.max_members", -2, r"config\.sweep\.refine\.max_members"),
        ("sweep.refine.min_ratio", 1.0, r"config\.sweep\.refine\.min_ratio"),
        ("r_star.resolution", 0.0, r"config\.r_star\.resolution"),
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
    # refinement on in the default and cifar100 presets; the paper's four are round 0
    assert get_config().sweep.refine.rounds > 0 and c100.sweep.refine.rounds > 0
    assert get_config("smoke").sweep.refine.rounds == 1
    m = mae_sweep.model_config(c100)
    assert (m.embed_dim, m.depth, m.num_heads, m.image_size) == (768, 12, 12, 32)
    for preset in (None, "smoke", "cifar100"):
        mae_sweep.validate_config(get_config(preset), get_config())
    with pytest.raises(ValueError, match="Unknown preset"):
        get_config("imagenet")


# ---------------------------------------------------------------- refinement on a synthetic sweep
def step_r_spec(lam):
    """A known R_spec(lambda): 0.8 below 0.005, 0.5 up to 0.05, 0.1 above (two jumps)."""
    return jnp.where(lam < 0.005, 0.8, jnp.where(lam < 0.05, 0.5, 0.1))


class StubProgram:
    """A sweep member whose held-out R_spec is ``step_r_spec(lambda)`` (a one-weight model)."""

    tx = optax.sgd(0.1)
    learning_rate = None

    def init(self, member):
        return state_lib.create(nnx.Linear(1, 1, rngs=nnx.Rngs(member.seed)), self.tx, 0)

    def loss_fn(self, model, batch, rng, lam):
        loss = jnp.mean(model(batch["x"]) ** 2)
        return loss, {"recon_loss": loss}

    def eval_step(self, state, lam, batch, center=None):
        w = batch["mask"].astype(jnp.float32)
        return {"r": jnp.sum(w) * step_r_spec(lam), "count": jnp.sum(w)}

    def eval_center(self, means):
        return means["r"]

    def eval_metrics(self, means, centered):
        r = means["r"]
        return {
            "recon_loss": r * 0,
            "spectral_redundancy": r,
            "effective_rank": 64 * (1 - r),
            "chi2_redundancy": r,
            "gaussian_total_correlation": r,
        }

    def finish(self, layout, state, members):
        return [{"probe_top1": 0.5, "probe_train_top1": 0.6} for _ in members]


class Batches:
    def __next__(self):
        return {"x": np.ones((4, 1), np.float32)}

    def get_state(self):
        return b"{}"

    def set_state(self, state):
        pass

    def start_prefetch(self):
        pass


def test_refinement_rounds_add_members_exactly_at_the_gaps(tmp_path):
    config = get_config("smoke")
    config.sweep.lambdas, config.sweep.seeds = (0.0, 1e-3, 1e-2, 0.1, 1.0), (0, 1)
    config.eval.final_epochs = 1
    # budget: 3 new lambdas x 2 seeds over at most 3 rounds
    config.sweep.refine.update(rounds=3, max_members=6, gap=0.1, tol=0.01, min_ratio=1.5)
    store = sweep.ResultStore(tmp_path / "members", "stub")
    kwargs = {
        "vectorize": True,
        "data": Batches,
        "eval_batches": lambda: [{"x": np.ones((3, 1), np.float32)}],
        "eval_batch_size": 3,
        "schedule": sweep.Schedule(num_steps=2, steps_per_epoch=1),
    }
    results, rounds = mae_sweep.train_rounds(StubProgram(), config, store, **kwargs)
    # R_spec 0.8 0.8 | 0.5 | 0.1 0.1: gaps (1e-3, 1e-2) and (1e-2, 0.1) -> sqrt(1e-5), sqrt(1e-3);
    # then R_spec(0.00316) = 0.8, R_spec(0.0316) = 0.5: gaps (0.00316, 0.01) and (0.0316, 0.1),
    # but one lambda of budget is left: the larger gap (0.4 > 0.3), sqrt(0.0316 * 0.1) = 0.0562
    assert [r["lambdas"] for r in rounds] == [
        [0.0, 1e-3, 1e-2, 0.1, 1.0],
        [0.00316, 0.0316],
        [0.0562],
    ]
    assert [r["trained"] for r in rounds] == [10, 4, 2]  # within budget: 6 new members
    lams = [r["value"] for r in results.values()]
    assert len(results) == 16 and len(set(results)) == 16
    assert sorted(set(lams)) == sorted({0.0, 1e-3, 1e-2, 0.1, 1.0, 0.00316, 0.0316, 0.0562})
    assert all(lams.count(v) == 2 for v in set(lams))  # every lambda once per seed, no repeats
    for r in results.values():  # each round trained as one vectorised group
        expected = {0: 10, 1: 4, 2: 2}[r["round"]]
        assert r["group"]["size"] == expected and r["group"]["vectorize"]
        assert member_row(r, 1)["spectral_redundancy"] == pytest.approx(
            float(step_r_spec(jnp.float32(r["value"])))
        )
    # a restart replays the same rounds from the store and trains nothing
    again, rounds2 = mae_sweep.train_rounds(StubProgram(), config, store, **kwargs)
    assert [r["lambdas"] for r in rounds2] == [r["lambdas"] for r in rounds]
    assert [r["trained"] for r in rounds2] == [0, 0, 0] and again.keys() == results.keys()
    # refinement off: the grid alone
    config.sweep.refine.rounds = 0
    _, rounds0 = mae_sweep.train_rounds(StubProgram(), config, store, **kwargs)
    assert len(rounds0) == 1


# ------------------------------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("mae_smoke")
    config = get_config("smoke")
    out = mae.run(config, str(work))
    return config, work, out


def test_smoke_sweep_writes_every_output(smoke):
    config, work, _ = smoke
    for name in (
        "config.json",
        "results.json",
        "results.md",
        "figure1_accuracy_vs_redundancy.png",
        "figure2_rank_and_redundancy.png",
        "figure3_accuracy_vs_lambda.png",
    ):
        assert (work / name).is_file(), name
    for png in work.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    groups = sorted((work / "sweep").iterdir())  # one writer per member group: 2 rounds
    assert len(groups) == 2 and all(any((g / "tensorboard").iterdir()) for g in groups)
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == [g.name for g in groups]
    # the grid (2 lambdas) and one refinement round: lambda 0.1 (midpoint of 0 and 1), 2 seeds
    n_members = (len(config.sweep.lambdas) + 1) * len(config.sweep.seeds)
    assert len(list((work / "members").glob("*.json"))) == n_members
    # one metrics line per member and evaluation (initialisation + every epoch)
    lines = [r for g in groups for r in metrics.read_jsonl(g / metrics.METRICS_FILE)]
    assert len(lines) == n_members * (config.train.epochs + 1)

    results = json.loads((work / "results.json").read_text())
    assert set(results) >= {
        "rows",
        "summary",
        "baselines",
        "r_star",
        "margins",
        "headline",
        "refinement",
        "timing",
    }
    assert len(results["rows"]) == n_members and len(results["summary"]) == 3
    # results record each member's round
    assert sorted((r["lambda_red"], r["round"]) for r in results["rows"]) == [
        (0.0, 0),
        (0.0, 0),
        (0.1, 1),
        (0.1, 1),
        (1.0, 0),
        (1.0, 0),
    ]
    assert [s["round"] for s in results["summary"]] == [0, 1, 0]
    rounds = results["timing"]["rounds"]
    assert [(r["round"], r["lambdas"], r["trained"]) for r in rounds] == [
        (0, [0.0, 1.0], 4),
        (1, [0.1], 2),
    ]
    d = config.model.embed_dim or 64
    for row in results["rows"]:
        assert set(row) >= {
            "lambda_red",
            "seed",
            "spectral_redundancy",
            "effective_rank",
            "chi2_redundancy",
            "gaussian_total_correlation",
            "val_loss",
            "probe_top1",
        }
        assert 0.0 <= row["probe_top1"] <= 1.0
        assert 0.0 <= row["spectral_redundancy"] <= 1 - 1 / d
        # r_eff and R_spec are two views of one spectrum (Def. 2), averaged over final epochs
        if config.eval.final_epochs == 1:
            assert row["spectral_redundancy"] == pytest.approx(
                1 - row["effective_rank"] / d, abs=1e-5
            )
    for s in results["summary"]:  # summary = mean/std over the seeds of the rows
        group = [r["probe_top1"] for r in results["rows"] if r["lambda_red"] == s["lambda_red"]]
        assert s["probe_top1_mean"] == pytest.approx(np.mean(group))
        assert s["probe_top1_std"] == pytest.approx(np.std(group, ddof=1))
    base = results["baselines"]
    assert 0.5 < base["raw_pixels"]["probe_top1"] <= 1.0  # digits are nearly linearly separable
    assert len(base["random_init"]["rows"]) == len(config.sweep.seeds)
    assert isinstance(results["r_star"]["statement"], str) and results["r_star"]["statement"]
    assert results["r_star"]["verdict"] in ("measured", "peak not resolved", "no U")
    # the headline: the best lambda by mean top-1 and its margin over each baseline
    best = max(results["summary"], key=lambda s: s["probe_top1_mean"])
    m = results["margins"]
    assert m["best_lambda"] == best["lambda_red"]
    assert m["baselines"]["raw_pixels"]["margin_mean"] == pytest.approx(
        best["probe_top1_mean"] - base["raw_pixels"]["probe_top1"]
    )
    assert f"λ = {best['lambda_red']:g}" in results["headline"]

    md = (work / "results.md").read_text()
    assert "| λ_red | round | R_spec |" in md and "raw pixels" in md and "random-init" in md
    assert md.count("\n| 0 | 0 |") == 1 and md.count("\n| 0.1 | 1 |") == 1 and "±" in md
    top = max(r["probe_top1"] for r in results["rows"])
    if base["raw_pixels"]["probe_top1"] > top:  # a baseline beats every member: the first line
        assert md.splitlines()[0].startswith("**raw pixels") and results["warning"]
    else:
        assert md.splitlines()[0].startswith("# MAE")


def test_restarted_sweep_skips_finished_members_and_refuses_other_configs(smoke):
    config, work, out = smoke
    again = mae.run(config, str(work))
    assert again["timing"]["members_trained_this_run"] == 0
    assert again["timing"]["recorded_training_seconds"] == pytest.approx(
        out["timing"]["recorded_training_seconds"]
    )
    # one vmapped group per round: the grid, then the refinement round
    assert sorted((g["round"], g["size"]) for g in again["timing"]["groups"]) == [(0, 4), (1, 2)]
    assert again["rows"] == out["rows"]
    other = get_config("smoke")
    other.optim.lr = 1e-2
    with pytest.raises(ValueError, match="different configuration"):
        mae.run(other, str(work))


# ----------------------------------------------------------------------------------- Table 2 rows
def test_member_row_averages_the_final_epochs():
    history = [
        {
            "epoch": float(e),
            "step": e * 10,
            "val/spectral_redundancy": 0.1 * e,
            "val/effective_rank": e,
            "val/chi2_redundancy": 2.0 * e,
            "val/gaussian_total_correlation": 3.0 * e,
            "val/recon_loss": 1.0 / (e + 1),
            "train/recon_loss": 2.0 / (e + 1),
        }
        for e in range(6)
    ]
    history.insert(3, {**history[3], "epoch": 2.5})  # an extra mid-epoch evaluation is ignored
    row = member_row(
        {"value": 0.01, "seed": 1, "history": history, "probe_top1": 0.7, "probe_train_top1": 0.8},
        final_epochs=3,
    )
    assert row["spectral_redundancy"] == pytest.approx(0.1 * (3 + 4 + 5) / 3)
    assert row["gaussian_total_correlation"] == pytest.approx(3.0 * 4)
    assert row["val_loss"] == pytest.approx(1 / 6) and row["train_loss"] == pytest.approx(2 / 6)
    assert (row["lambda_red"], row["seed"], row["probe_top1"]) == (0.01, 1, 0.7)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("optim.learning_rate", 1e-3, r"config\.optim\.learning_rate is now config\.optim\.lr"),
        ("optim.epochs", 3, r"config\.optim\.epochs is now config\.train\.epochs"),
        ("checkpoint_every_epochs", 2, r"is now config\.checkpoint\.every_epochs"),
        ("sweep.shard_members", True, r"is now config\.sweep\.member_shards"),
    ],
)
def test_old_field_names_name_the_schema_field(tmp_path, field, value, match):
    config = get_config("smoke")
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(ValueError, match=match):
        mae.run(config, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_cli_bad_field_exits_2_with_one_message(tmp_path):
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.mae", "--config=configs/mae.py:smoke",
         "--config.mask_ratio=1.5", f"--workdir={tmp_path / 'w'}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "config.mask_ratio: must lie strictly between 0 and 1; got 1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "w").glob("members/*"))  # nothing trained
