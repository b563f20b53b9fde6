"""User-fixable command-line errors: one message, no traceback, exit status 2, nothing created."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from redundax.train import cli, failures

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "experiments.classify", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _assert_usage_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == failures.EXIT_USAGE, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "FATAL Flags parsing error" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr[-3000:]


CASES = {
    "missing config file": (["--config=configs/nope.py"], ["no such file", "configs/nope.py"]),
    "unknown preset": (["--config=configs/classify.py:nope"], ["unknown preset 'nope'"]),
    "another experiment's config": (
        ["--config=configs/mae.py:smoke"],
        ["not a config of this experiment", "configs/classify.py"],
    ),
    "batch_size=0": (
        ["--config=configs/classify.py:smoke", "--config.data.batch_size=0"],
        ["config.data.batch_size must be >= 1; got 0"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_errors_exit_2_without_traceback_and_create_nothing(case, tmp_path):
    args, needles = CASES[case]
    workdir = tmp_path / "w"
    proc = _run(*args, f"--workdir={workdir}")
    _assert_usage_error(proc, *needles)
    assert not workdir.exists()


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file"
    target.write_text("data")
    proc = _run("--config=configs/classify.py:smoke", f"--workdir={target}")
    _assert_usage_error(proc, "is a file, not a directory")
    assert target.read_text() == "data"


def test_an_unwritable_workdir_is_refused(tmp_path, monkeypatch):
    # In-process (root may write anywhere): the writability check and the OSError path.
    parent = tmp_path / "ro"
    parent.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: pathlib.Path(path) != parent)
    message = cli.workdir_problem(parent / "run")
    assert message and "is not writable" in message and str(parent) in message
    assert not (parent / "run").exists()


def test_a_read_only_file_system_exits_2(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ro = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)],
                        capture_output=True)  # fmt: skip
    if ro.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        proc = _run("--config=configs/classify.py:smoke", f"--workdir={mnt / 'run'}")
        _assert_usage_error(proc, "not writable")
        assert not (mnt / "run").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_config_problem_accepts_every_preset_of_its_own_experiment():
    # The check must not reject a real config: every preset of classify passes.
    from configs import classify as classify_config

    for preset in (None, "smoke", "cifar10", "cifar100"):
        config = classify_config.get_config(preset)
        assert cli.config_problem(config, str(ROOT / "configs" / "classify.py")) is None
    config = classify_config.get_config("smoke")
    config.data.eval_batch_size = -1
    assert "data.eval_batch_size must be >= 1" in cli.config_problem(config)
