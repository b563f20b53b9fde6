"""The multimodal experiment is data-parallel: 8 devices and 2 processes reproduce 1 device.

Each run is a subprocess of `python -m experiments.multimodal` on the `smoke` preset reduced to
the two transform code paths that carry state across steps (OGM-GE, RedReg) and one epoch (22
steps of global batch 64), so that the three runs fit a test. The reference is the same command
on one CPU device.

Tolerance. The global batch, its order and every seed are the same in every run; only the order
of float32 reductions differs (the loss mean and the gradient sums are all-reduced over 8 devices
or 2 processes). Measured on the full `smoke` preset (4 methods, 44 steps), parameters then differ
by at most 1.5e-7 in absolute value; the check allows rtol 2e-4, atol 2e-5 (as
`tests/test_classify.py`), far above that and far below any real change. A test accuracy is a count
of argmax hits over 360 examples, so it can change only if some example's top two logits are closer
than that perturbation: the table entries must agree to within one example (1/360); measured,
every entry is identical.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import jax
import numpy as np
import pytest

from redundax.train import checkpoint
from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
METHODS = ("ogm_ge", "redreg")
FLAGS = [
    f"--config={ROOT / 'configs' / 'multimodal.py'}:smoke",
    f"--config.methods={','.join(METHODS)}",
    "--config.train.epochs=1",
    "--config.run.progress=false",
]
ONE_EXAMPLE = 1 / 360 + 1e-9  # a test accuracy moves in steps of one example of 360


def _launch(workdir, data_dir, extra_flags=(), **env) -> subprocess.Popen:
    args = ["-m", "experiments.multimodal", *FLAGS, *extra_flags, f"--workdir={workdir}"]
    return processes.launch(args, REDUNDAX_DATA_DIR=str(data_dir), **env)


_finish = processes.finish


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mmdata")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("one_device")
    _finish([_launch(workdir, data_dir)])
    return workdir


def _results(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
    got, ref = _results(workdir), _results(reference)
    assert list(got["table"]) == list(ref["table"]) == list(METHODS)
    for method in METHODS:
        assert got["table"][method].keys() == ref["table"][method].keys()
        for metric, (mean, _) in ref["table"][method].items():
            assert abs(got["table"][method][metric][0] - mean) <= ONE_EXAMPLE, (method, metric)
        _, a = checkpoint.read_state(workdir / "runs" / f"{method}-seed0" / "checkpoints")
        _, b = checkpoint.read_state(reference / "runs" / f"{method}-seed0" / "checkpoints")
        flat_a = jax.tree_util.tree_flatten_with_path(a["params"])[0]
        flat_b = jax.tree_util.tree_flatten_with_path(b["params"])[0]
        assert [p for p, _ in flat_a] == [p for p, _ in flat_b] and flat_a
        for (path, x), (_, y) in zip(flat_a, flat_b, strict=True):
            np.testing.assert_allclose(
                x, y, rtol=2e-4, atol=2e-5, err_msg=f"{method}{jax.tree_util.keystr(path)}"
            )


@pytest.mark.slow
def test_eight_devices_equal_one_device(reference, data_dir, tmp_path):
    _finish([_launch(tmp_path, data_dir, JAX_NUM_CPU_DEVICES="8")])
    assert _results(tmp_path)["devices"] == 8 and _results(reference)["devices"] == 1
    _assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_two_processes_equal_one_process(reference, data_dir, tmp_path):
    port = processes.free_port()
    procs = [_launch(tmp_path, data_dir, processes.distributed(port, 2, i)) for i in range(2)]
    _finish(procs)
    assert _results(tmp_path)["processes"] == 2
    _assert_same_run(tmp_path, reference)
