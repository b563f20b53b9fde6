"""Sweep resume: a vectorised MAE sweep stopped by SIGTERM (checkpoint, exit 143) or killed by
SIGKILL mid-group and rerun with the same command ends bit-identical to an uninterrupted sweep,
with every (step, member) metric record once in metrics.jsonl and in TensorBoard; a finished
sweep rerun exits 0 without training; the progress lines of every member."""

from __future__ import annotations

import collections
import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys

import jax
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from redundax.train import checkpoint, failures, metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]

FLAGS = [
    "--config=configs/mae.py:smoke",
    "--config.sweep.lambdas=(0.0,1.0)",
    "--config.sweep.seeds=(0,)",
    "--config.sweep.refine.rounds=0",
    "--config.train.epochs=2",
    "--config.eval.every_steps=1",  # records between the epoch checkpoints
    "--config.run.progress=false",
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


def _mae(workdir: pathlib.Path, signal_at: tuple[str, int] | None = None) -> subprocess.Popen:
    """The sweep's command; `signal_at=("TERM"|"KILL", N)`: signalled after step N
    (`tests/scripts/mae_run.py`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "experiments.mae"]
    if signal_at is not None:
        cmd = [sys.executable, str(ROOT / "tests" / "scripts" / "mae_run.py"),
               f"--signal={signal_at[0]}", f"--at_step={signal_at[1]}", "--"]  # fmt: skip
    return subprocess.Popen(
        [*cmd, *FLAGS, f"--workdir={workdir}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _group(workdir: pathlib.Path, root: str) -> pathlib.Path | None:
    groups = list((workdir / root).glob("group-*"))
    return groups[0] if groups else None


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
    records = metrics.read_jsonl(_group(workdir, "sweep") / metrics.METRICS_FILE)
    return [(r["step"], next(k for k in r if k != "step").split("/")[0]) for r in records]


def _tensorboard(directory: pathlib.Path) -> list[tuple[int, str]]:
    """(step, tag) of the scalars TensorBoard shows: event files decoded independently
    (TFRecord framing around `Event` protos), read in order, a SessionLog START at step s
    purging the earlier events of steps >= s (TensorBoard's restart rule, `purge_step`)."""
    seen: list[tuple[int, str]] = []
    for path in sorted(directory.iterdir()):
        data, pos = path.read_bytes(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == 1:  # START
                seen = [(s, t) for s, t in seen if s < event.step]
            seen += [(event.step, v.tag) for v in event.summary.value]
    return seen


def _final_state(workdir: pathlib.Path) -> dict:
    _, state = checkpoint.read_state(_group(workdir, "checkpoints"))
    return state


@pytest.mark.slow
def test_vectorised_sweep_sigterm_and_sigkill_resume_bit_identical_records_once(tmp_path):
    ref, term, kill = tmp_path / "ref", tmp_path / "term", tmp_path / "kill"
    # 22 steps, checkpoints at the epoch ends (11, 22), an evaluation record every step
    term_step, kill_step = 13, 14
    procs = {ref: _mae(ref), term: _mae(term, ("TERM", term_step)),
             kill: _mae(kill, ("KILL", kill_step))}  # fmt: skip
    assert procs[kill].wait(timeout=600) == -signal.SIGKILL, procs[kill].stderr.read()[-3000:]
    term_err = procs[term].communicate(timeout=300)[1]
    assert procs[term].returncode == failures.EXIT_PREEMPTED, term_err[-3000:]
    assert "preempted" in term_err
    # SIGTERM saved a checkpoint at the step it stopped (past the periodic one at 11)
    assert checkpoint.finished_steps(_group(term, "checkpoints")) == [term_step + 1]
    err = procs[ref].communicate(timeout=600)[1]
    assert procs[ref].returncode == 0, err[-3000:]
    # progress without a terminal: the group, periodic sweep steps to the end, every member
    assert "sweep group 1/1: lam_0_seed_0, lam_1_seed_0" in err
    assert re.search(r"sweep step (\d+)/\1 \(100%\)", err), err[-3000:]
    assert "lam_0_seed_0 epoch 1.0" in err and "lam_1_seed_0 epoch 1.0" in err
    # the killed run wrote evaluation records past its checkpoint: the rerun recomputes them
    assert checkpoint.finished_steps(_group(kill, "checkpoints")) == [11]
    assert max(s for s, _ in _keys(kill)) == kill_step
    for workdir in (term, kill):
        rerun = _mae(workdir)
        rerun_err = rerun.communicate(timeout=600)[1]
        assert rerun.returncode == 0, rerun_err[-3000:]
        assert "Resumed 2 member(s)" in rerun_err

        keys = _keys(workdir)
        duplicated = [k for k, n in collections.Counter(keys).items() if n > 1]
        assert not duplicated, f"duplicated (step, member) records: {duplicated}"
        assert sorted(keys) == sorted(_keys(ref))
        board = _tensorboard(_group(workdir, "sweep") / metrics.TENSORBOARD_DIR)
        assert len(board) == len(set(board)), "duplicated TensorBoard scalars"
        assert sorted(board) == sorted(_tensorboard(_group(ref, "sweep") / "tensorboard"))
        assert _members(workdir) == _members(ref)  # histories and probes, bit for bit
        a, b = _final_state(workdir), _final_state(ref)
        for x, y in zip(_leaves(a), _leaves(b), strict=True):
            np.testing.assert_array_equal(x, y)
        rows = json.loads((workdir / "results.json").read_text())["rows"]
        assert rows == json.loads((ref / "results.json").read_text())["rows"]

    # a finished sweep rerun: exit 0, nothing trained, the same table
    before = (ref / "members" / "lam_0_seed_0.json").read_bytes()
    again = _mae(ref)
    again_err = again.communicate(timeout=300)[1]
    assert again.returncode == 0, again_err[-3000:]
    assert "All 2 member(s) already trained: the sweep is complete." in again_err
    assert (ref / "members" / "lam_0_seed_0.json").read_bytes() == before
    out = json.loads((ref / "results.json").read_text())
    assert out["timing"]["members_trained_this_run"] == 0


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]
