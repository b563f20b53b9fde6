"""Experiments as subprocesses, for the multi-device, multi-process and resume tests.

- `experiment_env(**extra)`: this environment without `JAX_NUM_CPU_*` (pass
  `JAX_NUM_CPU_DEVICES="8"` to simulate devices), the repository on `PYTHONPATH`, plus `extra`.
- `launch(args, **env)`: `python <args>` from the repository root, stdout and stderr together.
- `distributed(port, processes, process_id)`: the flags of one process of a localhost run.
- `finish(procs, expected_rc=0, timeout=600)`: their outputs once every one has ended with
  `expected_rc` (a process still running after the timeout is killed).
- `free_port()`: a TCP port for the coordinator.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]


def experiment_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_NUM_CPU")}
    env.update({"PYTHONPATH": str(ROOT)}, **extra)
    return env


def launch(args: Sequence[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=experiment_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def distributed(port: int, processes: int, process_id: int) -> list[str]:
    return [
        f"--coordinator_address=127.0.0.1:{port}",
        f"--num_processes={processes}",
        f"--process_id={process_id}",
    ]


def finish(
    procs: Sequence[subprocess.Popen], expected_rc: int = 0, timeout: float = 600
) -> list[str]:
    try:
        outs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == expected_rc, out[-4000:]
    return outs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
