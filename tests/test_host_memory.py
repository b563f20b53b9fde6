"""redundax.train.host_memory: freed XLA:CPU buffers are reused, not mapped afresh every step.

The check counts page faults, not time: a step whose 64 MiB temporary comes from fresh pages
faults once per 4 KiB page (16,384 times); one whose temporary is reused faults almost never.
"""

from __future__ import annotations

import json
import platform
import statistics

import pytest

from redundax.train import host_memory
from tests.processes import finish, launch

TEMP_PAGES = 64 * 2**20 // 4096

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or host_memory._glibc() is None,
    reason="the settings are glibc's; elsewhere keep_host_memory does nothing",
)


def _faults(mode: str, **env: str) -> dict:
    (out,) = finish([launch(["tests/scripts/host_memory_faults.py", mode], **env)], timeout=300)
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_kept_memory_removes_the_per_step_page_faults():
    default = _faults("default")
    kept = _faults("keep")
    assert not default["applied"] and kept["applied"]
    assert default["async_dispatch"] and not kept["async_dispatch"]
    # Without the settings every call maps its temporary afresh (the test's premise) ...
    assert statistics.median(default["faults_per_call"]) > 0.9 * TEMP_PAGES, default
    # ... with them the heap's pages are reused once the heap has grown to the step's needs.
    assert statistics.median(kept["faults_per_call"]) < 0.05 * TEMP_PAGES, kept


def test_environment_variable_overrides_the_caller(monkeypatch):
    monkeypatch.setenv(host_memory.ENV_VAR, "0")
    assert host_memory.keep_host_memory() is False
    assert host_memory.requested(True) is False
    monkeypatch.setenv(host_memory.ENV_VAR, "1")
    assert host_memory.requested(False) is True
    monkeypatch.delenv(host_memory.ENV_VAR)
    assert host_memory.requested(False) is False and host_memory.requested(True) is True
    assert host_memory.keep_host_memory(False) is False
    monkeypatch.setenv(host_memory.ENV_VAR, "sometimes")
    with pytest.raises(ValueError, match="REDUNDAX_KEEP_HOST_MEMORY='sometimes'"):
        host_memory.requested(True)


def test_mae_experiment_keeps_host_memory_only_when_vectorised():
    from configs import mae as mae_configs
    from experiments import mae

    config = mae_configs.get_config()
    assert mae._vectorised(config) is True
    config.sweep.vectorize = False
    assert mae._vectorised(config) is False


def test_a_bad_environment_value_stops_the_command_line_with_one_message(tmp_path):
    (out,) = finish(
        [
            launch(
                [
                    "-m",
                    "experiments.mae",
                    "--config",
                    "configs/mae.py:smoke",
                    f"--workdir={tmp_path}/w",
                ],
                REDUNDAX_KEEP_HOST_MEMORY="sometimes",
            )
        ],
        expected_rc=2,
        timeout=180,
    )
    assert "REDUNDAX_KEEP_HOST_MEMORY='sometimes'" in out and "Traceback" not in out
    assert not (tmp_path / "w").exists()
