"""Run `experiments.mae` with a signal at a chosen sweep step (for the resume tests).

    python tests/scripts/mae_run.py --signal TERM|KILL --at_step N -- [experiment flags...]

Counts the batches a member group places on the mesh (one per train step): before step N + 1
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

from experiments import mae
from redundax import sweep
from redundax.train import checkpoint


def main() -> None:
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal", choices=("TERM", "KILL"), required=True)
    parser.add_argument("--at_step", type=int, required=True)
    args = parser.parse_args(sys.argv[1:split])
    argv = sys.argv[split + 1 :]
    workdir = pathlib.Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir=")))
    place, calls = sweep.Layout.batch, [0]

    def batch(self, local):
        calls[0] += 1
        if calls[0] == args.at_step + 1:
            if args.signal == "TERM":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                deadline = time.time() + 120
                while time.time() < deadline and not any(
                    checkpoint.finished_steps(d) for d in (workdir / "checkpoints").glob("*")
                ):
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
        return place(self, local)

    sweep.Layout.batch = batch
    sys.argv = [sys.argv[0], *argv]
    mae.main()


if __name__ == "__main__":
    main()
