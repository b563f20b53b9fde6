"""Failure handling pieces: strict JSON, truncated records, divergence, signals, lock, storage."""

from __future__ import annotations

import errno
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import optax
import pytest
from flax import nnx

from redundax.sweep import Member, ResultStore
from redundax.train import checkpoint, failures, metrics, step
from redundax.train import state as state_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _strict_loads(text: str):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run_python(code: str) -> subprocess.CompletedProcess:
    """Run `python -c code` in a fresh interpreter (signals and exit codes of its own)."""
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )


# ---------------------------------------------------------------------------- strict JSON


def test_results_files_are_strict_json_with_reasons(tmp_path):
    from experiments import classify

    results = {"dataset": "d", "test_accuracy": 0.5, "test_loss": float("nan"),
               "curve": [1.0, float("inf"), np.float32("-inf")]}  # fmt: skip
    classify.write_results(tmp_path, results)
    parsed = _strict_loads((tmp_path / "results.json").read_text())
    assert parsed["test_loss"] is None and parsed["curve"] == [1.0, None, None]
    assert parsed["test_accuracy"] == 0.5
    reasons = parsed[metrics.NULL_REASONS]
    assert set(reasons) == {"test_loss", "curve[1]", "curve[2]"}
    assert reasons["test_loss"].startswith("NaN") and reasons["curve[2]"].startswith("-Infinity")


def test_sweep_member_results_are_strict_json(tmp_path):
    store = ResultStore(tmp_path, "abc")
    member = Member(0.1, 0)
    store.save(member, {"probe": float("nan"), "history": [{"val/loss": float("inf")}]})
    parsed = _strict_loads(store.path(member).read_text())
    assert parsed["probe"] is None and parsed["history"][0]["val/loss"] is None


# ---------------------------------------------------------------------------- truncated records


def test_truncated_last_metrics_record_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / metrics.METRICS_FILE
    path.write_text(
        '{"step": 1, "train/loss": 0.5}\n{"step": 2, "train/loss": 0.4}\n{"step": 3, "tr'
    )
    with caplog.at_level("WARNING"):
        records = metrics.read_jsonl(path)
    assert [r["step"] for r in records] == [1, 2]
    assert str(path) in caplog.text and "truncated" in caplog.text
    # A writer continuing this file first drops the partial line, so appending stays valid JSON.
    with metrics.Writer(tmp_path, tensorboard=False) as writer:
        writer.write(3, {"train/loss": 0.3})
    assert [r["step"] for r in metrics.read_jsonl(path)] == [1, 2, 3]
    # A damaged record before the last one is an error naming the file and line.
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl, line 2, is not valid JSON"):
        metrics.read_jsonl(path)


def test_truncated_member_json_is_dropped_and_retrained(tmp_path, caplog):
    store = ResultStore(tmp_path, "abc")
    member = Member(0.1, 0)
    store.save(member, {"probe": 0.5})
    store.path(member).write_text(store.path(member).read_text()[:20])
    with caplog.at_level("WARNING"):
        assert store.load(member) is None
    assert store.pending([member]) == [member]
    assert str(store.path(member)) in caplog.text


# ---------------------------------------------------------------------------- divergence


def test_check_finite_metrics_names_the_step_and_the_cause():
    failures.check_finite_metrics(3, {"loss": 0.1, "grad_norm": 2.0, "accuracy": math.nan})
    with pytest.raises(failures.Diverged, match=r"diverged at step 7: loss=nan.*learning rate"):
        failures.check_finite_metrics(7, {"loss": math.nan, "grad_norm": 1.0})
    with pytest.raises(failures.Diverged, match=r"step 2 \(member x\): train/recon_loss=inf"):
        failures.check_finite_metrics(2, {"train/recon_loss": math.inf}, where="member x")


def _linear_state(tx):
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
    return state_lib.create(model, tx, 0)


def _loss_fn(model, batch, rng):
    del rng
    return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}


def test_skip_nonfinite_step_keeps_the_state():
    tx = optax.sgd(0.1)
    batch = {"x": np.ones((4, 2), np.float32), "y": np.zeros((4, 1), np.float32)}
    bad = {"x": np.full((4, 2), np.nan, np.float32), "y": np.zeros((4, 1), np.float32)}
    train_step = step.make_train_step(_loss_fn, tx, donate=False, skip_nonfinite=True)
    s0 = _linear_state(tx)
    s1, m1 = train_step(s0, bad)
    assert float(m1[step.SKIPPED]) == 1.0 and int(s1.step) == 1
    for a, b in zip(
        np.asarray(s0.params["kernel"][...]).ravel(),
        np.asarray(s1.params["kernel"][...]).ravel(),
        strict=True,
    ):
        assert a == b
    s2, m2 = train_step(s1, batch)
    assert float(m2[step.SKIPPED]) == 0.0
    # The applied update is plain SGD: w - 0.1 * grad, grad of the mean squared error by hand.
    w, b = np.asarray(s1.params["kernel"][...]), np.asarray(s1.params["bias"][...])
    pred = batch["x"] @ w + b
    grad_w = batch["x"].T @ (2 * (pred - batch["y"]) / pred.size)
    np.testing.assert_allclose(np.asarray(s2.params["kernel"][...]), w - 0.1 * grad_w, rtol=1e-5)


def test_loop_stops_on_divergence_and_never_checkpoints_it(tmp_path):
    from redundax.train import loop
    from redundax.train import mesh as mesh_lib

    tx = optax.sgd(float("nan"))
    mesh = mesh_lib.make_data_mesh()
    state = mesh_lib.replicate(_linear_state(tx), mesh)
    train_step = step.make_train_step(_loss_fn, tx, mesh=mesh, learning_rate=lambda _: np.nan)

    def batches():
        while True:
            yield {"x": np.ones((4, 2), np.float32), "y": np.zeros((4, 1), np.float32)}

    with checkpoint.Checkpointer(tmp_path / "ckpt", every=2, handle_sigterm=False) as ckpt:
        with pytest.raises(failures.Diverged, match="diverged at step 1: learning_rate=nan"):
            loop.train(state, train_step, batches(), num_steps=6, mesh=mesh,
                       checkpointer=ckpt, log_every=3)  # fmt: skip
        assert ckpt.latest_step() is None


# ---------------------------------------------------------------------------- signals


def test_second_sigterm_stops_at_once_with_status_143():
    code = (
        "import os, signal, time\n"
        "from redundax.train import failures\n"
        "with failures.Preemption() as p:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.5)\n"
        "    assert p.requested\n"
        "    print('first handled', flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
    )
    start = time.monotonic()
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_PREEMPTED, proc.stderr[-2000:]
    assert "first handled" in proc.stdout
    assert time.monotonic() - start < 50


def test_sigint_after_sigterm_stops_at_once():
    code = (
        "import os, signal, time\n"
        "from redundax.train import failures\n"
        "with failures.Preemption():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(0.5)\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(60)\n"
    )
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_INTERRUPTED, proc.stderr[-2000:]


# ---------------------------------------------------------------------------- one writer


def test_workdir_lock_refuses_a_second_holder_and_takes_over_a_dead_ones(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom redundax.train import failures\n"
         f"with failures.WorkdirLock({str(tmp_path)!r}):\n"
         "    print('locked', flush=True)\n    time.sleep(120)\n"],
        env=_env(), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            failures.UsageError, match=rf"in use by another run \(process {holder.pid}"
        ):
            with failures.WorkdirLock(tmp_path):
                pass
    finally:
        holder.kill()  # SIGKILL: the lock file stays, with the dead process's id in it
        holder.wait()
    assert (tmp_path / failures.LOCK_FILE).read_text().strip() == str(holder.pid)
    with failures.WorkdirLock(tmp_path):  # a stale lock is taken over
        assert (tmp_path / failures.LOCK_FILE).read_text().strip() == str(os.getpid())


# ---------------------------------------------------------------------------- storage


def test_a_failed_save_is_a_storage_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    tx = optax.sgd(0.1)
    state = _linear_state(tx)
    with checkpoint.Checkpointer(tmp_path, every=1, handle_sigterm=False, async_save=False) as c:
        c.save(1, state)

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(c.manager, "save", full)
        with pytest.raises(failures.StorageError, match=r"No space left.*step 1.*is intact"):
            c.save(2, state)
    step_, tree = checkpoint.read_state(tmp_path)
    assert step_ == 1
    np.testing.assert_array_equal(tree["params"]["kernel"]["value"], state.params["kernel"][...])


def test_cli_ends_a_run_with_a_storage_error_at_once_with_status_4(tmp_path):
    code = (
        "import errno, threading, time\n"
        "from redundax.train import cli, failures\n"
        "def run(config, workdir):\n"
        # a stuck non-daemon writer thread must not keep the process alive
        "    threading.Thread(target=time.sleep, args=(300,)).start()\n"
        "    raise failures.StorageError('could not write a checkpoint: disk full')\n"
        "print(cli.run_and_exit_code(run, None, '.'))\n"
    )
    start = time.monotonic()
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_STORAGE, proc.stderr[-2000:]
    assert "could not write a checkpoint: disk full" in proc.stderr
    assert time.monotonic() - start < 30


def test_sigterm_outside_a_training_loop_exits_143_at_once():
    code = (
        "import os, signal, sys, time\n"
        "from redundax.train import cli\n"
        "def run(config, workdir):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(60)\n"
        "    print('not reached')\n"
        "sys.exit(cli.run_and_exit_code(run, None, '.'))\n"
    )
    start = time.monotonic()
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_PREEMPTED, proc.stderr[-2000:]
    assert "not reached" not in proc.stdout and "preempted" in proc.stderr
    assert time.monotonic() - start < 50


def test_sigterm_landing_inside_library_code_that_then_fails_still_exits_143():
    # The signal handler's Preempted can land between two statements of library code (seen:
    # inside threading.Thread.start while orbax started a thread), which then raises its own
    # error during the unwinding; the run is still a preemption, not a crash.
    code = (
        "import os, signal, sys, time\n"
        "from redundax.train import cli\n"
        "def run(config, workdir):\n"
        "    registry = {}\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(60)\n"
        "    finally:\n"
        "        del registry['thread']\n"  # KeyError, its context the Preempted
        "sys.exit(cli.run_and_exit_code(run, None, '.'))\n"
    )
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_PREEMPTED, proc.stderr[-2000:]
    assert "unwinding raised KeyError" in proc.stderr and "Traceback" not in proc.stderr


def test_a_storage_error_while_a_preemption_unwinds_keeps_its_status_4():
    code = (
        "import os, signal, sys, time\n"
        "from redundax.train import cli, failures\n"
        "def run(config, workdir):\n"
        "    try:\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        time.sleep(60)\n"
        "    finally:\n"  # a save in flight failing on a full disk
        "        raise failures.StorageError('could not write a checkpoint: disk full')\n"
        "sys.exit(cli.run_and_exit_code(run, None, '.'))\n"
    )
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_STORAGE, proc.stderr[-2000:]
    assert "could not write a checkpoint: disk full" in proc.stderr


def test_an_error_unrelated_to_a_preemption_still_fails_with_its_traceback():
    code = (
        "import sys\n"
        "from redundax.train import cli\n"
        "def run(config, workdir):\n"
        "    try:\n"
        "        raise ValueError('handled')\n"
        "    except ValueError:\n"
        "        {}['missing']\n"
        "sys.exit(cli.run_and_exit_code(run, None, '.'))\n"
    )
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_FAILED, proc.stderr[-2000:]
    assert "KeyError: 'missing'" in proc.stderr and "Traceback" in proc.stderr


def test_sigterm_after_the_run_ended_exits_with_the_runs_status():
    # Seen: a SIGTERM during the teardown of a finished MAE sweep killed it by the signal (-15)
    # although every output was written.
    code = (
        "import os, signal, sys, time\n"
        "from redundax.train import cli, failures\n"
        "def run(config, workdir):\n"
        "    print('outputs written', flush=True)\n"
        "status = cli.run_and_exit_code(run, None, '.')\n"
        "failures.sigterm_exits_with(status)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(60)\n"
        "print('not reached')\n"
    )
    proc = _run_python(code)
    assert proc.returncode == failures.EXIT_OK, proc.stderr[-2000:]
    assert "outputs written" in proc.stdout and "not reached" not in proc.stdout
    assert "SIGTERM after the run ended: exiting with its status 0" in proc.stderr


def test_raised_by_preemption_follows_cause_and_context_chains():
    assert failures.raised_by_preemption(failures.Preempted("x"))
    try:
        try:
            raise failures.Preempted("x")
        except failures.Preempted:
            raise KeyError("y")  # noqa: B904 - the implicit context is the point
    except KeyError as error:
        assert failures.raised_by_preemption(error)
    try:
        raise RuntimeError("z") from failures.Preempted("x")
    except RuntimeError as error:
        assert failures.raised_by_preemption(error)
    try:
        try:
            raise ValueError("a")
        except ValueError:
            raise KeyError("b")  # noqa: B904
    except KeyError as error:
        assert not failures.raised_by_preemption(error)


# ---------------------------------------------------------------------------- progress


def test_log_lines_go_through_the_bar_while_it_is_shown(monkeypatch):
    import tqdm
    from absl import logging as absl_logging

    from redundax.train.progress import Progress

    written = []
    monkeypatch.setattr(tqdm.tqdm, "write", classmethod(lambda cls, s, **kw: written.append(s)))
    handler = absl_logging.get_absl_handler().python_handler
    stream = handler.stream
    with Progress(10, bar=True, enabled=True) as bar:
        absl_logging.warning("a log line while the bar is shown")
        bar.update(5)
    assert any("a log line while the bar is shown" in s for s in written)
    assert handler.stream is stream  # restored when the bar closes
    written.clear()
    absl_logging.warning("after the bar")
    assert not written
