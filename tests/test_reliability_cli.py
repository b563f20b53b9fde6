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
    "train.steps=0": (
        ["--config=configs/classify.py:smoke", "--config.train.steps=0"],
        ["config.train.steps must be >= 1; got 0"],
    ),
    "an old field name": (
        ["--config=configs/classify.py:smoke", "--config.num_epochs=3"],
        ["config.num_epochs is now config.train.epochs"],
    ),
    "an old nested field name": (
        ["--config=configs/classify.py:smoke", "--config.run.checkpoint_every=5"],
        ["config.run.checkpoint_every is now config.checkpoint.every_steps"],
    ),
}

# Config files with old or misspelt fields (loaded like any config file, from the repository root).
CONFIG_FILES = {
    "a misspelt field": (
        "from configs import classify\n\n\ndef get_config(arg=None):\n"
        "    c = classify.get_config(arg)\n    c.train.epoch = 3\n    return c\n",
        ["config.train.epoch is unknown; did you mean config.train.epochs?"],
    ),
    "an old field next to the schema": (
        "from configs import classify\n\n\ndef get_config(arg=None):\n"
        "    c = classify.get_config(arg)\n    c.data.eval_batch_size = 256\n    return c\n",
        ["config.data.eval_batch_size is now config.eval.batch_size"],
    ),
    "the old schema": (  # the fields of configs/classify.py before the one schema
        "import ml_collections\n\n\ndef get_config(arg=None):\n"
        "    c = ml_collections.ConfigDict()\n    c.seed = 0\n"
        "    c.data = dict(name='sklearn_digits', dir=None, batch_size=64)\n"
        "    c.model = dict(widths=(8, 16), blocks=(1, 1))\n    c.optim = dict(lr=0.1)\n"
        "    c.num_epochs = 3\n    c.run = dict(log_every=5, checkpoint_every=20)\n"
        "    c.monitor = dict(enabled=False)\n    return c\n",
        [
            "config.num_epochs is now config.train.epochs",
            "config.data.dir is now config.data.data_dir",
            "config.run.checkpoint_every is now config.checkpoint.every_steps",
        ],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_config_errors_exit_2_without_traceback_and_create_nothing(case, tmp_path):
    args, needles = CASES[case]
    workdir = tmp_path / "w"
    proc = _run(*args, f"--workdir={workdir}")
    _assert_usage_error(proc, *needles)
    assert not workdir.exists()


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_old_or_misspelt_fields_of_a_config_file_are_named_with_the_right_field(case, tmp_path):
    source, needles = CONFIG_FILES[case]
    path = tmp_path / "my_config.py"
    path.write_text(source)
    workdir = tmp_path / "w"
    proc = _run(f"--config={path}", f"--workdir={workdir}")
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
    config.eval.batch_size = -1
    assert "eval.batch_size must be >= 1" in cli.config_problem(config)
