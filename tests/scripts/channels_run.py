"""Run `experiments.channels` with test instrumentation.

    python tests/scripts/channels_run.py [--archs vgg16] [--signal TERM|KILL --key K --at_step N]
        -- [experiment flags...]

--archs: keep only these architectures of the config (a short run).
--signal TERM: during the recovery fine-tune `K` (`<method>_s<sparsity>`), after the train step
  that reaches N, the process sends itself SIGTERM: the fine-tune must save a checkpoint at N and
  the run exit with status 143.
--signal KILL: the same moment, but the process waits until a finished checkpoint of that
  fine-tune exists and sends itself SIGKILL (nothing saved; the steps after the newest checkpoint
  are recomputed on resumption).
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import pathlib
import signal
import sys
import time

from experiments import channels
from redundax.prune import recovery
from redundax.train import checkpoint
from redundax.train import mesh as mesh_lib
from redundax.train import step as step_lib


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on demand, if it hangs
    split = sys.argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", default="")
    parser.add_argument("--signal", choices=("TERM", "KILL"))
    parser.add_argument("--key", default="")
    parser.add_argument("--at_step", type=int, default=-1)
    args = parser.parse_args(sys.argv[1:split])
    argv = sys.argv[split + 1 :]
    current: dict[str, pathlib.Path | None] = {"dir": None}

    if args.archs:
        run = channels.run

        def patched_run(config, workdir):
            with config.unlocked():
                config.archs = [a for a in config.archs if a.name in args.archs.split(",")]
            return run(config, workdir)

        channels.run = patched_run

    if args.signal:
        call = recovery.Recoveries.__call__

        def patched_call(self, key, masks):
            current["dir"] = self.directory / key if key == args.key else None
            return call(self, key, masks)

        recovery.Recoveries.__call__ = patched_call
        make_train_step = step_lib.make_train_step

        def patched_make(*a, **kw):
            inner = make_train_step(*a, **kw)

            def train_step(state, batch, **extra):
                state, metrics = inner(state, batch, **extra)
                where = current["dir"]
                if where is not None and int(mesh_lib.to_host(state.step)) == args.at_step:
                    if args.signal == "TERM":
                        os.kill(os.getpid(), signal.SIGTERM)
                    else:
                        deadline = time.time() + 60
                        while time.time() < deadline and not checkpoint.finished_steps(where):
                            time.sleep(0.05)
                        os.kill(os.getpid(), signal.SIGKILL)
                return state, metrics

            return train_step

        step_lib.make_train_step = patched_make

    sys.argv = [sys.argv[0], *argv]
    channels.main()


if __name__ == "__main__":
    main()
