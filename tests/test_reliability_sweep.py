"""Sweep resume: a vectorised MAE sweep killed after a group checkpoint and rerun leaves each
(step, member) metric record once and ends equal to an uninterrupted sweep; its progress lines."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from redundax.train import metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = [
    "--config=configs/mae.py:smoke",
    "--config.sweep.lambdas=(0.0,1.0)",
    "--config.sweep.seeds=(0,)",
    "--config.sweep.refine.rounds=0",
    "--config.optim.epochs=2",
    "--config.eval.every_steps=1",  # records between the epoch checkpoints
]


def test_drop_after_removes_only_the_named_members_later_records(tmp_path):
    rows = [(0, "a"), (0, "b"), (1, "a"), (1, "b"), (2, "a"), (2, "b")]
    with metrics.Writer(tmp_path, tensorboard=False) as w:
        for step, tag in rows:
            w.write(step, {f"{tag}/x": step})
        w.drop_after(0, ("a/",))
        assert [(r["step"], *r) for r in metrics.read_jsonl(w.path)] == [
            (0, "step", "a/x"), (0, "step", "b/x"), (1, "step", "b/x"), (2, "step", "b/x")
        ]  # fmt: skip
        w.drop_after(-1, ("b/",))
        assert [r for r in metrics.read_jsonl(w.path)] == [{"step": 0, "a/x": 0.0}]


def _mae(workdir: pathlib.Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "experiments.mae", *FLAGS, f"--workdir={workdir}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _kill_after_a_record_past_the_checkpoint(proc: subprocess.Popen, workdir: pathlib.Path) -> int:
    """SIGKILL once metrics.jsonl holds a record after the group's first finished checkpoint."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in workdir.glob("checkpoints/*/*") if p.name.isdigit()]
        path = workdir / metrics.METRICS_FILE
        if steps and path.exists():
            lines = path.read_text().splitlines()
            last = json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else -1
            if last > max(steps):
                proc.send_signal(signal.SIGKILL)
                return max(steps)
        time.sleep(0.01)
    pytest.fail("the sweep ended before a record past its first checkpoint was written")


def _members(workdir: pathlib.Path) -> dict:
    """Member results without wall times."""
    out = {}
    for p in sorted((workdir / "members").glob("*.json")):
        r = json.loads(p.read_text())
        r.pop("group")
        r["history"] = [{k: v for k, v in h.items() if k != "time"} for h in r["history"]]
        out[p.name] = r
    return out


def _keys(workdir: pathlib.Path) -> list[tuple[int, str]]:
    records = metrics.read_jsonl(workdir / metrics.METRICS_FILE)
    return [(r["step"], next(k for k in r if k != "step").split("/")[0]) for r in records]


@pytest.mark.slow
def test_vectorised_mae_sweep_killed_after_a_checkpoint_resumes_without_duplicates(tmp_path):
    ref, kill = tmp_path / "ref", tmp_path / "kill"
    procs = {ref: _mae(ref), kill: _mae(kill)}
    checkpoint_step = _kill_after_a_record_past_the_checkpoint(procs[kill], kill)
    assert procs[kill].wait(timeout=60) == -signal.SIGKILL
    err = procs[ref].communicate(timeout=600)[1]
    assert procs[ref].returncode == 0, err[-3000:]
    # progress without a terminal: the group, periodic sweep steps to the end, every member
    assert "sweep group 1/1: lam_0_seed_0, lam_1_seed_0" in err
    assert re.search(r"sweep step (\d+)/\1 \(100%\)", err), err[-3000:]
    assert "lam_0_seed_0 epoch 1.0" in err and "lam_1_seed_0 epoch 1.0" in err
    # the killed run wrote evaluation records past its checkpoint: the rerun recomputes them
    assert max(s for s, _ in _keys(kill)) > checkpoint_step
    rerun = _mae(kill)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read()[-3000:]

    keys = _keys(kill)
    duplicated = [k for k, n in collections.Counter(keys).items() if n > 1]
    assert not duplicated, f"duplicated (step, member) records: {duplicated}"
    assert sorted(keys) == sorted(_keys(ref))
    assert _members(kill) == _members(ref)
    rows = json.loads((kill / "results.json").read_text())["rows"]
    assert rows == json.loads((ref / "results.json").read_text())["rows"]
