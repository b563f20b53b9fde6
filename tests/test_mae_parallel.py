"""The MAE sweep is data-parallel: 8 devices and 2 processes reproduce 1 device.

Each run is a subprocess of `python -m experiments.mae` on the `smoke` preset reduced to one seed
and the grid alone (2 members, one vectorised group, 22 steps of global batch 128, held-out and
probe evaluation, baselines). The reference is the same command on one CPU device. With 8
devices the `(members, data)` mesh is `(1, 8)`: each member's batch is split over 8 devices; with
2 processes it is `(1, 2)`, each process feeding its half of every batch (and of every held-out
and probe batch) and process 0 writing the outputs.

Tolerance. The global batch, its order, every seed and the masking noise (drawn for the global
batch shape) are the same in every run; only the order of float32 reductions differs (the loss
mean, R_spec's covariance of the global batch and the gradient sums are all-reduced over devices
or processes). Parameters are compared with rtol 2e-4, atol 2e-5 (as
`tests/test_multimodal_parallel.py` and `tests/test_classify.py`), except the attention key bias,
whose gradient is exactly zero in exact arithmetic (softmax is shift invariant) so that Adam's
normalised step turns round-off into steps of up to the learning rate (compared at 5e-3, as
`tests/test_mae_sweep.py`). Table entries: redundancy metrics and losses within rtol 1e-3 (they
are means over the final epoch of functions of the parameters above); a top-1 accuracy is a count
over 360 test digits, so it may move by one example (1/360).
"""

from __future__ import annotations

import json
import pathlib
import subprocess

import jax
import pytest

from redundax.train import checkpoint
from tests import processes
from tests.test_mae_sweep import assert_params_close

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [
    f"--config={ROOT / 'configs' / 'mae.py'}:smoke",
    "--config.sweep.lambdas=(0.0,1.0)",
    "--config.sweep.seeds=(0,)",
    "--config.sweep.refine.rounds=0",
    "--config.run.progress=false",
]
ONE_EXAMPLE = 1 / 360 + 1e-9


def _launch(workdir, extra_flags=(), **env) -> subprocess.Popen:
    return processes.launch(
        ["-m", "experiments.mae", *FLAGS, *extra_flags, f"--workdir={workdir}"], **env
    )


def _finish(procs: list[subprocess.Popen]) -> None:
    processes.finish(procs, timeout=900)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mae_one_device")
    _finish([_launch(workdir)])
    return workdir


def _results(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _assert_same_run(workdir: pathlib.Path, reference: pathlib.Path) -> None:
    got, ref = _results(workdir), _results(reference)
    rows = {(r["lambda_red"], r["seed"]): r for r in got["rows"]}
    assert len(rows) == len(ref["rows"]) == 2
    for r in ref["rows"]:
        g = rows[(r["lambda_red"], r["seed"])]
        for key, value in r.items():
            if key.startswith("probe"):
                assert abs(g[key] - value) <= ONE_EXAMPLE, key
            elif isinstance(value, float):
                assert g[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    assert got["baselines"]["raw_pixels"] == ref["baselines"]["raw_pixels"]
    (group,) = (workdir / "checkpoints").iterdir()
    _, a = checkpoint.read_state(group)
    _, b = checkpoint.read_state(reference / "checkpoints" / group.name)
    assert jax.tree.structure(a["params"]) == jax.tree.structure(b["params"])
    assert_params_close(a["params"], b["params"])


@pytest.mark.slow
def test_eight_devices_equal_one_device(reference, tmp_path):
    _finish([_launch(tmp_path, JAX_NUM_CPU_DEVICES="8")])
    assert _results(tmp_path)["devices"] == 8 and _results(reference)["devices"] == 1
    _assert_same_run(tmp_path, reference)


@pytest.mark.slow
def test_two_processes_equal_one_process(reference, tmp_path):
    port = processes.free_port()
    procs = [_launch(tmp_path, processes.distributed(port, 2, i)) for i in range(2)]
    _finish(procs)
    assert _results(tmp_path)["processes"] == 2
    _assert_same_run(tmp_path, reference)
