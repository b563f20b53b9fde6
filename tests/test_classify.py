"""End-to-end platform tests through `experiments.classify`.

Every subprocess run trains the same small configuration (the `smoke` model, 8 steps, global
batch 32); its final checkpoint is compared with a reference run in this process on one CPU
device:
- 8 simulated CPU devices (`JAX_NUM_CPU_DEVICES=8`) reach the same parameters and BatchNorm
  statistics (global-batch statistics: per-device statistics would change both);
- two processes joined by `jax.distributed` (CPU collectives), one of them sent SIGTERM
  mid-run, stop at one agreed step, resume, hold identical parameters, match the reference,
  and write each metric record once;
- a run stopped by SIGTERM at step 4 and one killed by SIGKILL at step 5 (after the checkpoint
  of step 3) resume to bit-identical parameters and train on the same batches;
- the `smoke` preset runs end to end, and its reported test accuracy equals an independent
  forward pass of the saved parameters over the test split.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from flax import nnx

import redundax.data as rd
from configs import classify as classify_config
from experiments import classify
from redundax.train import checkpoint, metrics
from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "classify_run.py"
STEPS = 8
OVERRIDES = {
    "train.steps": STEPS,
    "data.batch_size": 32,
    "checkpoint.every_steps": 3,
    "run.log_batches": True,
    "run.log_every": 1,
}
FLAGS = [
    f"--config.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in OVERRIDES.items()
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    rd.get_source("sklearn_digits", "train", directory)
    return directory


def _env(data_dir, **extra) -> dict[str, str]:
    return processes.experiment_env(REDUNDAX_DATA_DIR=str(data_dir), **extra)


_RUNNING: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _kill_leftover_processes():
    """A failed or timed-out test leaves no training process behind."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _launch(workdir, data_dir, *, script_args=(), config=":smoke", extra_flags=(), **env):
    cmd = [
        sys.executable,
        str(SCRIPT),
        *script_args,
        "--",
        f"--config={ROOT / 'configs' / 'classify.py'}{config}",
        *FLAGS,
        *extra_flags,
        f"--workdir={workdir}",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(data_dir, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _RUNNING.append(proc)
    return proc


def _finish(proc, expected_rc=0, timeout=300) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Stack dumps of every running training process (faulthandler on SIGUSR1), then kill.
        for other in _RUNNING:
            if other.poll() is None:
                other.send_signal(signal.SIGUSR1)
        time.sleep(3)
        tails = []
        for other in _RUNNING:
            other.kill()
            tails.append(other.communicate()[0][-3000:])
        pytest.fail(f"training process timed out after {timeout} s:\n" + "\n=====\n".join(tails))
    assert proc.returncode == expected_rc, out[-4000:]
    return out


def _test_config():
    config = classify_config.get_config("smoke")
    config.train.steps = STEPS
    config.data.batch_size = 32
    config.checkpoint.every_steps = 3
    config.run.log_batches = True
    config.run.log_every = 1
    return config


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """The test configuration trained in this process on one CPU device."""
    assert jax.device_count() == 1
    workdir = tmp_path_factory.mktemp("reference")
    config = _test_config()
    config.data.data_dir = str(data_dir)  # `data.data_dir` may differ between runs of one config
    results = classify.run(config, workdir)
    assert results is not None and results["steps"] == STEPS
    return workdir


@pytest.mark.parametrize(
    ("old", "new"),
    [("num_epochs", "train.epochs"), ("data.eval_batch_size", "eval.batch_size")],
)
def test_run_refuses_an_old_field_before_creating_anything(tmp_path, old, new):
    config = classify_config.get_config("smoke")
    section, _, name = old.rpartition(".")
    (config[section] if section else config)[name] = 3
    with pytest.raises(ValueError, match=rf"config\.{old} is now config\.{new}"):
        classify.run(config, tmp_path / "w")
    assert not (tmp_path / "w").exists()


def _final(workdir) -> tuple[int, dict]:
    return checkpoint.read_state(pathlib.Path(workdir) / "checkpoints")


def _assert_states_close(a: dict, b: dict, *, rtol: float, atol: float) -> None:
    for key in ("params", "other"):
        flat_a = jax.tree_util.tree_flatten_with_path(a[key])[0]
        flat_b = jax.tree_util.tree_flatten_with_path(b[key])[0]
        assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
        for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
            np.testing.assert_allclose(
                x, y, rtol=rtol, atol=atol, err_msg=f"{key}{jax.tree_util.keystr(path)}"
            )


def _batches(workdir) -> list[tuple[int, str]]:
    return [(r["step"], r["fingerprint"]) for r in metrics.read_jsonl(workdir / "batches.jsonl")]


def test_sharded_over_8_devices_equals_one_device(reference, data_dir, tmp_path):
    proc = _launch(tmp_path, data_dir, JAX_NUM_CPU_DEVICES="8")
    _finish(proc)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["devices"] == 8 and results["processes"] == 1
    assert _batches(tmp_path) == _batches(reference)  # the same global batches
    step, sharded = _final(tmp_path)
    ref_step, ref = _final(reference)
    assert step == ref_step == STEPS
    # Same parameters and BatchNorm running statistics up to float32 reduction order.
    _assert_states_close(sharded, ref, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_two_processes_agree_survive_preemption_and_write_metrics_once(
    reference, data_dir, tmp_path
):
    def launch_pair(script_args):
        port = processes.free_port()
        return [
            _launch(tmp_path, data_dir, script_args=script_args,
                    extra_flags=["--config.checkpoint.every_steps=100",  # only the stop and final saves
                                 *processes.distributed(port, 2, i)])
            for i in range(2)
        ]  # fmt: skip

    # SIGTERM to process 1 only, after step 4: both processes must stop and save at step 4.
    first = [_finish(p, expected_rc=143) for p in launch_pair(["--signal", "TERM", "--at_step",
                                                               "4", "--signal_process", "1"])]  # fmt: skip
    assert "process 1 of 2" in first[1]
    stopped_at = _final(tmp_path)[0]
    assert stopped_at == 4, first[0][-3000:]
    assert not (tmp_path / "results.json").exists()
    # Resumed by both processes to the end.
    for p in launch_pair(["--dump_params"]):
        _finish(p)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["processes"] == 2 and results["devices"] == 2
    assert results["resumed_from_step"] == stopped_at
    # Each process's own copy of the final state: identical across processes.
    copies = [np.load(tmp_path / f"final.process{i}.npz") for i in range(2)]
    assert sorted(copies[0].files) == sorted(copies[1].files) and copies[0].files
    for name in copies[0].files:
        np.testing.assert_array_equal(copies[0][name], copies[1][name], err_msg=name)
    # ... and equal to one process on one device with the same global batches.
    _, multi = _final(tmp_path)
    _, ref = _final(reference)
    _assert_states_close(multi, ref, rtol=2e-4, atol=2e-5)
    # Metrics written once (process 0): every step's training record exactly once.
    records = metrics.read_jsonl(tmp_path / "metrics.jsonl")
    train_steps = [r["step"] for r in records if "train/loss" in r]
    assert train_steps == list(range(1, STEPS + 1))
    # process 0 alone records batches; the steps after the checkpoint were not lost
    assert [s for s, _ in _batches(tmp_path)] == list(range(STEPS))


@pytest.mark.slow
def test_sigterm_and_sigkill_resume_to_the_same_state(reference, data_dir, tmp_path):
    term, kill = tmp_path / "term", tmp_path / "kill"
    first = [
        _launch(term, data_dir, script_args=["--signal", "TERM", "--at_step", "4"]),
        _launch(kill, data_dir, script_args=["--signal", "KILL", "--at_step", "5"]),
    ]
    _finish(first[0], expected_rc=143)  # SIGTERM: checkpoint saved, exit status "preempted"
    _finish(first[1], expected_rc=-9)  # SIGKILL
    # SIGTERM saved at the step it arrived; SIGKILL left the periodic checkpoint of step 3.
    assert _final(term)[0] == 4
    assert not (term / "results.json").exists() and not (kill / "results.json").exists()
    assert _final(kill)[0] == 3
    second = [_launch(term, data_dir), _launch(kill, data_dir)]
    for proc in second:
        _finish(proc)
    _, ref = _final(reference)
    ref_batches = dict(_batches(reference))
    for workdir in (term, kill):
        step, resumed = _final(workdir)
        assert step == STEPS
        _assert_states_close(resumed, ref, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(resumed["rng"], ref["rng"])
        seen = _batches(workdir)
        # Every batch seen, before and after the interruption, is the reference batch of its
        # step, and every step was trained on.
        assert all(fp == ref_batches[s] for s, fp in seen)
        assert {s for s, _ in seen} == set(range(STEPS))
        results = json.loads((workdir / "results.json").read_text())
        ref_results = json.loads((reference / "results.json").read_text())
        assert results["test_accuracy"] == ref_results["test_accuracy"]
        assert results["resumed_from_step"] == (4 if workdir == term else 3)
    # The killed run recomputed steps 3 and 4 after resuming from step 3.
    assert [s for s, _ in _batches(kill)] == [0, 1, 2, 3, 4, 3, 4, 5, 6, 7]
    records = metrics.read_jsonl(kill / "metrics.jsonl")
    assert [r["step"] for r in records if "train/loss" in r] == list(range(1, STEPS + 1))


def _load_params(model: nnx.Module, saved: dict) -> None:
    """Copy `read_state` arrays into a fresh model (an evaluation path independent of the
    platform's sharded, padded `evaluate`)."""
    state = nnx.state(model)
    for path, var in nnx.to_flat_state(state):
        kind = "params" if isinstance(var, nnx.Param) else "other"
        node = saved[kind]
        for key in path:
            node = node[str(key)]
        var.set_value(np.asarray(node["value"]))
    nnx.update(model, state)


def test_smoke_preset_end_to_end(data_dir, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.classify",
            "--config",
            "configs/classify.py:smoke",
            f"--workdir={tmp_path}",
        ],
        cwd=ROOT,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for name in ("config.json", "metrics.jsonl", "results.json", "results.md"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tensorboard").iterdir())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"]["widths"] == [8, 16] and config["train"]["epochs"] == 3
    results = json.loads((tmp_path / "results.json").read_text())
    assert f"{results['test_accuracy']:.4g}" in (tmp_path / "results.md").read_text()
    records = metrics.read_jsonl(tmp_path / "metrics.jsonl")
    assert all("step" in r for r in records)
    assert {"train/loss", "train/accuracy", "examples_per_sec"} <= set(records[-2])
    assert records[-1]["test/accuracy"] == pytest.approx(results["test_accuracy"])
    # Independent evaluation of the saved parameters: a plain forward pass over the split.
    spec = rd.dataset_info("sklearn_digits")
    model = classify.make_model(classify_config.get_config("smoke"), spec)
    _, saved = _final(tmp_path)
    _load_params(model, saved)
    model.eval()
    images, labels = rd.load_arrays("sklearn_digits", "test", data_dir)
    predictions = np.asarray(jax.numpy.argmax(model(images), -1))
    assert results["test_accuracy"] == pytest.approx(np.mean(predictions == labels), abs=1e-9)
    assert results["test_examples"] == len(labels) == 360
    # Three epochs of the tiny model learn: far above the 10% of chance.
    assert results["test_accuracy"] > 0.4
