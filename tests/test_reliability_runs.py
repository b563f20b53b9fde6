"""Whole runs under faults, through `experiments.classify` in subprocesses: divergence, a second
run in the same workdir, SIGTERM and resume, a rerun of a finished run, a full disk.

Every run trains the `smoke` model for 8 steps of batch 32 (checkpoints every 3 steps)."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest

import redundax.data as rd
from redundax.train import checkpoint, failures, metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "classify_run.py"
STEPS = 8
FLAGS = [
    f"--config={ROOT / 'configs' / 'classify.py'}:smoke",
    f"--config.train.steps={STEPS}",
    "--config.data.batch_size=32",
    "--config.checkpoint.every_steps=3",
    "--config.run.log_every=1",
    "--config.run.log_batches=true",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    rd.get_source("sklearn_digits", "train", directory)
    return directory


def _env(data_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env.update({"REDUNDAX_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)})
    return env


def _launch(data_dir, workdir, *flags, script_args=(), code=None) -> subprocess.Popen:
    head = [sys.executable, "-c", code] if code else [sys.executable, str(SCRIPT), *script_args]
    return subprocess.Popen(
        [*head, "--", *FLAGS, *flags, f"--workdir={workdir}"],
        cwd=ROOT, env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("run timed out:\n" + proc.communicate()[1][-3000:])
    return proc.returncode, err


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def test_nan_learning_rate_exits_3_naming_the_step_and_cause(data_dir, tmp_path):
    rc, err = _finish(_launch(data_dir, tmp_path, "--config.optim.lr=nan"))
    assert rc == failures.EXIT_DIVERGED, err[-3000:]
    assert re.search(r"training diverged at step \d+: .*=nan", err)
    assert "learning rate" in err and "Traceback" not in err
    assert checkpoint.finished_steps(tmp_path / checkpoint.CHECKPOINT_DIR) == []  # none saved
    if (tmp_path / metrics.METRICS_FILE).exists():
        for line in (tmp_path / metrics.METRICS_FILE).read_text().splitlines():
            _strict_loads(line)


def test_one_writer_sigterm_143_resume_and_complete_rerun(data_dir, tmp_path):
    # Two runs started together in one workdir: one trains (SIGTERM at step 4), one is refused.
    term = ["--signal", "TERM", "--at_step", "4"]
    runs = [_launch(data_dir, tmp_path, script_args=term) for _ in range(2)]
    ends = [_finish(p) for p in runs]
    codes = sorted(rc for rc, _ in ends)
    assert codes == [failures.EXIT_USAGE, failures.EXIT_PREEMPTED], [e[-2000:] for _, e in ends]
    winner, loser = (0, 1) if ends[0][0] == failures.EXIT_PREEMPTED else (1, 0)
    assert f"in use by another run (process {runs[winner].pid}" in ends[loser][1]
    assert "preempted" in ends[winner][1]
    assert checkpoint.finished_steps(tmp_path / checkpoint.CHECKPOINT_DIR)[-1] == 4

    # The same command again resumes from step 4 and finishes.
    rc, err = _finish(_launch(data_dir, tmp_path))
    assert rc == 0, err[-3000:]
    results = _strict_loads((tmp_path / "results.json").read_text())
    assert results["resumed_from_step"] == 4 and results["steps"] == STEPS
    records = metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))

    # A finished run rerun with the same command: complete, exit 0, no training step.
    batches = (tmp_path / metrics.BATCHES_FILE).read_text()
    rc, err = _finish(_launch(data_dir, tmp_path))
    assert rc == 0, err[-3000:]
    assert "already complete" in err
    assert (tmp_path / metrics.BATCHES_FILE).read_text() == batches
    records = metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))


FULL_DISK = """
import errno, sys
import orbax.checkpoint as ocp
save = ocp.CheckpointManager.save
def full_after_step_3(self, step, *args, **kwargs):
    if step > 3:
        raise OSError(errno.ENOSPC, "No space left on device")
    return save(self, step, *args, **kwargs)
ocp.CheckpointManager.save = full_after_step_3
from experiments import classify
sys.argv = [sys.argv[0], *sys.argv[sys.argv.index("--") + 1:]]
classify.main()
"""


def test_a_full_disk_ends_the_run_with_status_4_and_keeps_the_last_checkpoint(data_dir, tmp_path):
    start = time.monotonic()
    rc, err = _finish(_launch(data_dir, tmp_path, code=FULL_DISK), timeout=240)
    assert rc == failures.EXIT_STORAGE, err[-3000:]
    assert "No space left on device" in err and "step 3) is intact" in err
    assert time.monotonic() - start < 240
    step, tree = checkpoint.read_state(tmp_path / checkpoint.CHECKPOINT_DIR)
    assert step == 3 and int(tree["step"]) == 3
