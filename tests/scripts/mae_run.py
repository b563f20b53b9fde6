"""Run `experiments.mae` with a signal at a chosen sweep step (for the resume tests).

    python tests/scripts/mae_run.py --signal TERM|KILL --at_step N -- [experiment flags...]

Counts the batches the training loop of a member group places on the mesh (one per train step): before step N + 1
runs, TERM sends the process SIGTERM (the group's Checkpointer saves at step N + 1 and the run
exits 143); KILL waits until a group checkpoint is finished and sends SIGKILL (nothing saved; the
steps and metric records after that checkpoint are lost and recomputed on the rerun).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import sys
import time
import types

from experiments import mae
from redundax.train import checkpoint, loop
from redundax.train import mesh as mesh_lib


def main() -> None:
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal", choices=("TERM", "KILL"), required=True)
    parser.add_argument("--at_step", type=int, required=True)
    args = parser.parse_args(sys.argv[1:split])
    argv = sys.argv[split + 1 :]
    workdir = pathlib.Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")))
    calls = [0]

    def signal_before(step: int) -> None:
        if step == args.at_step + 1:
            if args.signal == "TERM":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                deadline = time.time() + 120
                while time.time() < deadline and not any(
                    checkpoint.finished_steps(d) for d in (workdir / "checkpoints").glob("*")
                ):
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)

    def shard_batch(local, mesh):
        calls[0] += 1
        signal_before(calls[0])
        return mesh_lib.shard_batch(local, mesh)

    # the loop's view of the mesh module, with its batch placement counted
    counted = types.ModuleType(mesh_lib.__name__)
    counted.__dict__.update(vars(mesh_lib))
    counted.shard_batch = shard_batch
    loop.mesh_lib = counted
    sys.argv = [sys.argv[0], *argv]
    mae.main()


if __name__ == "__main__":
    main()
