"""Run `experiments.classify` with test instrumentation.

    python tests/scripts/classify_run.py [--signal TERM|KILL --at_step N] [--dump_params]
        -- [experiment flags...]

--dump_params: after training, every process writes its own copy of the final parameters and
  other state to `<workdir>/final.process<i>.npz` (flattened paths -> arrays).
--signal TERM: after the train step that reaches N, the process sends itself SIGTERM; the
  platform's handler must save a checkpoint at N and stop cleanly (exit 0, no results). With
  several processes, `--signal_process i` signals process i only: all processes must stop at
  the same step and save there.
--signal KILL: after the train step that reaches N, the process waits until a finished
  checkpoint exists and sends itself SIGKILL (nothing is saved; the steps after the newest
  checkpoint are lost and recomputed on resumption).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import pathlib
import signal
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import classify
from redundax.train import loop as loop_lib
from redundax.train import mesh as mesh_lib
from redundax.train import step as step_lib


def _workdir(argv: list[str]) -> pathlib.Path:
    for i, arg in enumerate(argv):
        if arg.startswith("--workdir="):
            return pathlib.Path(arg.split("=", 1)[1])
        if arg == "--workdir":
            return pathlib.Path(argv[i + 1])
    raise SystemExit("pass --workdir")


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on demand, if it hangs
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--signal", choices=("TERM", "KILL"))
    parser.add_argument("--at_step", type=int, default=-1)
    parser.add_argument("--signal_process", type=int, default=None)
    parser.add_argument("--dump_params", action="store_true")
    args = parser.parse_args(sys.argv[1:split])
    argv = sys.argv[split + 1 :]
    workdir = _workdir(argv)

    if args.signal:
        make_train_step = step_lib.make_train_step

        def patched_make(*a, **kw):
            inner = make_train_step(*a, **kw)

            def train_step(state, batch, **extra):
                state, metrics = inner(state, batch, **extra)
                chosen = args.signal_process in (None, jax.process_index())
                if chosen and int(mesh_lib.to_host(state.step)) == args.at_step:
                    if args.signal == "TERM":
                        os.kill(os.getpid(), signal.SIGTERM)
                    else:
                        deadline = time.time() + 60
                        while time.time() < deadline and not ocp.step.checkpoint_steps(
                            workdir / "checkpoints"
                        ):
                            time.sleep(0.05)
                        os.kill(os.getpid(), signal.SIGKILL)
                return state, metrics

            return train_step

        step_lib.make_train_step = patched_make

    if args.dump_params:
        train = loop_lib.train

        def patched_train(*a, **kw):
            state = train(*a, **kw)
            host = mesh_lib.to_host({"params": state.params, "other": state.other})
            flat = {
                jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_flatten_with_path(host)[0]
            }
            np.savez(workdir / f"final.process{jax.process_index()}.npz", **flat)
            return state

        loop_lib.train = patched_train

    sys.argv = [sys.argv[0], *argv]
    classify.main()


if __name__ == "__main__":
    main()
