"""Run identity: every experiment refuses a workdir of another config before writing anything."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pathlib
import subprocess
import sys

import pytest

from redundax.train import checkpoint, failures

ROOT = pathlib.Path(__file__).resolve().parents[1]

# experiment -> (a results-changing override, the field's dotted name)
CHANGES = {
    "classify": ("--config.optim.lr=0.05", "optim.lr"),
    "mae": ("--config.optim.lr=0.5", "optim.lr"),
    "multimodal": ("--config.optim.lr=0.5", "optim.lr"),
    "channels": ("--config.prune.optim.lr=0.5", "prune.optim.lr"),
    "layers": ("--config.optim.lr=0.5", "optim.lr"),
}


def _hashes(root: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _smoke_config_json(name: str) -> dict:
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    return checkpoint.config_to_dict(config)


@pytest.mark.parametrize("name", list(CHANGES))
def test_every_experiment_refuses_a_changed_config_without_touching_files(name, tmp_path):
    # A workdir as a smoke run leaves it: its config.json, a results file, a member result.
    (tmp_path / "config.json").write_text(json.dumps(_smoke_config_json(name), indent=2))
    (tmp_path / "results.json").write_text('{"accuracy": 0.5}\n')
    (tmp_path / "members").mkdir()
    (tmp_path / "members" / "lam_0_seed_0.json").write_text('{"probe": 0.5}\n')
    before = _hashes(tmp_path)
    override, field = CHANGES[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", f"experiments.{name}", f"--config=configs/{name}.py:smoke",
         override, f"--workdir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == failures.EXIT_USAGE, proc.stderr[-3000:]
    assert "holds a run of a different configuration" in proc.stderr
    assert f"  {field}: " in proc.stderr and "in the workdir" in proc.stderr
    old = checkpoint._flatten(_smoke_config_json(name))[field]
    assert f"--config.{field}={old}" in proc.stderr  # the fix: the workdir's value
    assert "Traceback" not in proc.stderr
    assert _hashes(tmp_path) == before  # nothing written, not even a lock file


def test_non_results_fields_may_change_and_results_fields_may_not(tmp_path):
    mae = importlib.import_module("configs.mae").get_config("smoke")
    (tmp_path / "config.json").write_text(json.dumps(checkpoint.config_to_dict(mae)))
    # The grid, layout, post-hoc analyses, cadence and data location do not change results.
    mae.sweep.lambdas = (0.0, 0.5, 1.0)
    mae.sweep.vectorize = not mae.sweep.vectorize
    mae.r_star.bootstrap = 7
    mae.eval.final_epochs = 2
    mae.checkpoint_every_epochs = 3
    mae.data.data_dir = "/elsewhere"
    checkpoint.check_workdir_config(tmp_path, mae)
    mae.mask_ratio = 0.5
    with pytest.raises(ValueError, match=r"mask_ratio: 0\.\d+ in the workdir, 0\.5 now"):
        checkpoint.check_workdir_config(tmp_path, mae)


def test_sweep_member_folders_are_not_checkpoint_steps(tmp_path):
    # A sequential MAE sweep keeps one checkpoint root per member under checkpoints/; orbax's
    # step parser reads lam_0_seed_0, lam_1_seed_1 as steps 0 and 1 and the rerun was refused.
    for tag in ("lam_0_seed_0", "lam_0_seed_1", "lam_1_seed_0", "lam_1_seed_1"):
        (tmp_path / tag / "3").mkdir(parents=True)
    assert checkpoint.finished_steps(tmp_path) == []
    config = importlib.import_module("configs.mae").get_config("smoke")
    checkpoint.check_config(tmp_path, config)  # no error: nothing here is a checkpoint step
    (tmp_path / "5").mkdir()
    assert checkpoint.finished_steps(tmp_path) == [5]
    with pytest.raises(ValueError, match="holds checkpoints"):
        checkpoint.check_config(tmp_path, config)


# ---------------------------------------------------------------------------- MAE sweeps

MAE_FLAGS = [
    "--config=configs/mae.py:smoke",
    "--config.sweep.lambdas=(0.0,1.0)",
    "--config.sweep.seeds=(0,)",
    "--config.sweep.vectorize=false",
]


def _mae(workdir: pathlib.Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.mae", *MAE_FLAGS, f"--workdir={workdir}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _interrupt_after_first_member(proc: subprocess.Popen, workdir: pathlib.Path, sig) -> None:
    import time

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        if list((workdir / "members").glob("*.json")):
            proc.send_signal(sig)
            return
        time.sleep(0.05)
    pytest.fail("the first member never finished")


@pytest.mark.slow
def test_sequential_mae_sweep_interrupted_and_rerun_equals_an_uninterrupted_one(tmp_path):
    import signal

    ref, term, kill = tmp_path / "ref", tmp_path / "term", tmp_path / "kill"
    procs = {w: _mae(w) for w in (ref, term, kill)}
    _interrupt_after_first_member(procs[term], term, signal.SIGTERM)
    _interrupt_after_first_member(procs[kill], kill, signal.SIGKILL)
    codes = {w: (p.wait(timeout=900), p.stderr.read()) for w, p in procs.items()}
    assert codes[ref][0] == 0, codes[ref][1][-3000:]
    # SIGTERM: a checkpoint and "preempted" (143), unless the member had no step left to save.
    assert codes[term][0] in (failures.EXIT_PREEMPTED, 0), codes[term][1][-3000:]
    assert codes[kill][0] == -9
    for workdir in (term, kill):
        rerun = _mae(workdir)
        assert rerun.wait(timeout=900) == 0, rerun.stderr.read()[-3000:]
        rows = json.loads((workdir / "results.json").read_text())["rows"]
        ref_rows = json.loads((ref / "results.json").read_text())["rows"]
        assert rows == ref_rows
    # A finished sequential sweep rerun with the same command: nothing retrained, exit 0.
    before = _hashes(ref / "members")
    rerun = _mae(ref)
    assert rerun.wait(timeout=900) == 0, rerun.stderr.read()[-3000:]
    assert _hashes(ref / "members") == before
