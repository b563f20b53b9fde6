"""The layers experiment on the engine: 8 devices and 2 processes reproduce 1 device, and a
SIGTERM mid-run followed by the same command ends with the uninterrupted results.

Each run is a subprocess of `python -m experiments.layers` on the `smoke` preset (MiniLM's first
3 layers, two recovery fine-tunes of 2 steps of global batch 8). The reference is the same command
on one CPU device.

Tolerance. The layer scores, the pruned models' embeddings and the retrieval ranks are computed
outside the mesh, identically in every run. Two parts are data-parallel: the recovery fine-tunes
(the loss mean and the gradient sums are all-reduced over 8 devices or 2 processes in another
float32 order) and the covariance spectra with 2 processes (each process accumulates its half of
every calibration batch; the float32 moments are merged). Measured: recovered fidelities differ by
at most 1.4e-9 and the spectra metrics by at most 1.5e-5 on RankMe values near 22 (7e-7
relative). The check allows 1e-5 relative plus 1e-6 absolute on every number of `results.json` (a
real change, e.g. one step more or another batch, moves them by more than 1e-3) and requires every
other entry to be equal. The resumed run is held to exact equality: same devices, same steps, same
batches.
"""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import time

import pytest

from redundax.models import hf_loader
from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = [f"--config={ROOT / 'configs' / 'layers.py'}:smoke", "--config.run.progress=false"]
SKIP = {"seconds", "saved_checkpoint", "devices", "processes"}

try:
    hf_loader.minilm_dir()
    MISSING = None
except ValueError as error:
    MISSING = str(error)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]


def _launch(workdir, extra_flags=(), **env) -> subprocess.Popen:
    args = ["-m", "experiments.layers", *FLAGS, *extra_flags, f"--workdir={workdir}"]
    return processes.launch(args, **env)


_finish = processes.finish


def _results(workdir: pathlib.Path) -> dict:
    return json.loads((workdir / "results.json").read_text())


def _assert_close(got, ref, rtol: float, path: str = "") -> None:
    if isinstance(ref, dict):
        assert got.keys() == ref.keys(), path
        for k in ref:
            if k not in SKIP:
                _assert_close(got[k], ref[k], rtol, f"{path}/{k}")
    elif isinstance(ref, list):
        assert len(got) == len(ref), path
        for i, (a, b) in enumerate(zip(got, ref, strict=True)):
            _assert_close(a, b, rtol, f"{path}[{i}]")
    elif isinstance(ref, float):
        assert abs(got - ref) <= rtol * (abs(ref) + 0.1), (path, got, ref)
    else:
        assert got == ref, path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_device")
    _finish([_launch(workdir)])
    return workdir


def test_eight_devices_equal_one_device(reference, tmp_path):
    _finish([_launch(tmp_path, JAX_NUM_CPU_DEVICES="8")])
    assert _results(tmp_path)["devices"] == 8 and _results(reference)["devices"] == 1
    assert "fidelity_recovered" in _results(tmp_path)["pruning"][0]
    _assert_close(_results(tmp_path), _results(reference), rtol=1e-5)


def test_two_processes_equal_one_process(reference, tmp_path):
    port = processes.free_port()
    procs = [_launch(tmp_path, processes.distributed(port, 2, i)) for i in range(2)]
    _finish(procs)
    assert _results(tmp_path)["processes"] == 2
    _assert_close(_results(tmp_path), _results(reference), rtol=1e-5)


def test_sigterm_resume_and_finished_rerun(reference, tmp_path):
    proc = _launch(tmp_path)
    lines = []
    for line in proc.stdout:  # SIGTERM once the first recovery fine-tune has taken a step
        lines.append(line)
        if "recovery/2 step 1/2" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + _finish([proc], expected_rc=143)[0]
    assert "preempted" in out and not (tmp_path / "results.json").exists()
    assert any((tmp_path / "recovery").rglob("checkpoints/*/state"))  # saved on SIGTERM
    _finish([_launch(tmp_path)])  # the same command resumes
    _assert_close(_results(tmp_path), _results(reference), rtol=0.0)
    before = (tmp_path / "results.json").read_bytes()
    start = time.time()
    out = _finish([_launch(tmp_path)])[0]  # finished: reported complete, nothing retrained
    assert "this run is complete" in out and "recovery/" not in out, out[-3000:]
    assert (tmp_path / "results.json").read_bytes() == before
    assert time.time() - start < 60
