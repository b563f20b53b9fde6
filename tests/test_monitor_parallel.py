"""The monitor experiment's smoke preset on 8 devices and as 2 processes equals the 1-device run.

The three runs train on the same global batches and measure the same held-out images; they differ
only in the order of float32 sums (gradients and BatchNorm statistics summed over devices or
processes, the monitor's moments merged across them). After 22 steps the parameters agree to about
1e-6 relative, so every final layer metric must agree to rtol 1e-3 (atol 1e-4 for values near 0),
far below the differences between layers (0.1-0.5), and the test accuracy to one of 360 examples.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from redundax import data as rd
from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = ["--config.train.steps=22", "--config.monitor.every_steps=11"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    rd.get_source("sklearn_digits", "train", directory)
    return directory


def _run(workdir, data_dir, *, devices: int = 1, process_count: int = 1) -> dict:
    base = ["-m", "experiments.monitor", "--config=configs/monitor.py:smoke"]
    base += [*FLAGS, f"--workdir={workdir}"]
    port = processes.free_port()
    commands = [base] if process_count == 1 else [
        [*base, *processes.distributed(port, process_count, i)] for i in range(process_count)
    ]  # fmt: skip
    env = {"REDUNDAX_DATA_DIR": str(data_dir), "JAX_NUM_CPU_DEVICES": str(devices)}
    processes.finish([processes.launch(c, **env) for c in commands], timeout=400)
    return json.loads((pathlib.Path(workdir) / "results.json").read_text())


def _assert_same_results(got: dict, ref: dict) -> None:
    assert got["evaluated_steps"] == ref["evaluated_steps"] == [11, 22]
    assert abs(got["classify"]["test_accuracy"] - ref["classify"]["test_accuracy"]) <= 1 / 360
    assert got["final"].keys() == ref["final"].keys() and len(ref["final"]) >= 5
    for layer, metrics in ref["final"].items():
        for name, value in metrics.items():
            assert got["final"][layer][name] == pytest.approx(value, rel=1e-3, abs=1e-4), (
                layer,
                name,
            )


@pytest.mark.slow
def test_monitor_smoke_on_8_devices_and_2_processes_equals_1_device(data_dir, tmp_path):
    ref = _run(tmp_path / "one", data_dir)
    assert ref["classify"]["devices"] == 1
    sharded = _run(tmp_path / "eight", data_dir, devices=8)
    assert sharded["classify"]["devices"] == 8
    _assert_same_results(sharded, ref)
    multi = _run(tmp_path / "two", data_dir, process_count=2)
    assert multi["classify"]["processes"] == 2
    _assert_same_results(multi, ref)
