"""What a run does when something goes wrong: exit codes, preemption, divergence, one writer.

API:

- Exit codes of every experiment (`redundax.train.cli.main` maps the exceptions below to them):
  `EXIT_OK = 0`; `EXIT_FAILED = 1` (an unexpected error, with its traceback); `EXIT_USAGE = 2`
  (a user-fixable error: bad flag, config or workdir, one message, no traceback);
  `EXIT_DIVERGED = 3` (non-finite loss or gradient); `EXIT_STORAGE = 4` (a checkpoint or result
  could not be written); `EXIT_PREEMPTED = 143` (stopped by SIGTERM after saving a checkpoint:
  128 + 15, the shell's convention for a SIGTERM, which schedulers read as "preempted, requeue").
- `UsageError(ValueError)`, `Diverged(RuntimeError)`, `Preempted(Exception)`,
  `StorageError(OSError)`: raised by the library, mapped to exit codes by the CLI.
- `Preemption()`: a context manager installing the SIGTERM handler of a training loop:
  `requested` turns True on the first SIGTERM (the loop saves and stops); a second SIGTERM, or a
  SIGINT after it, ends the process at once with status 143 (130 for SIGINT). The previous
  handlers come back on exit. Only in the main thread (elsewhere it is a no-op flag).
- `sigterm_raises_preempted()`: a context manager (the CLI's, around the whole run): a SIGTERM
  outside any training loop raises `Preempted` (nothing to save: exit 143 at once).
  `raised_by_preemption(error) -> bool`: `error` is a `Preempted`, or was raised while one was
  being handled (a signal handler's exception can land inside library code, e.g. between two
  statements of `threading.Thread.start`, which then fails with its own error); the CLI exits
  143 for both.
- `sigterm_exits_with(code)`: after a run has ended (results written, checkpoints closed), a
  SIGTERM during the process's teardown exits at once with the run's own status `code` instead
  of killing the process by the signal (the CLI installs it; main thread only).
- `note_preempted()` / `was_preempted()` / `reset_preempted()`: a process-wide record that a loop
  stopped on SIGTERM; the CLI exits 143 after the experiment returns. `EXIT_INTERRUPTED = 130`:
  a SIGINT after a SIGTERM.
- `check_finite_metrics(step, metrics, *, where="", hint=None)`: `Diverged` naming the step, the
  non-finite values among `loss`, `grad_norm`, `learning_rate` (and any `*loss*` metric) and the
  likely cause (`DIVERGENCE_HINT`); `nonfinite_metrics(metrics)`: those values;
  `is_finite_number(value)`: a finite Python int or float.
- `tree_is_finite(tree) -> bool`: every floating leaf is finite (one device reduction).
- `WorkdirLock(workdir)`: an exclusive, non-blocking lock `workdir/.lock` held for the whole run
  (POSIX `flock` via `redundax.data.registry.file_lock`, so a killed process releases it and the
  next run takes it over); a second run gets `UsageError` naming the PID holding it.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from redundax.data.registry import file_lock

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_STORAGE = 4
EXIT_PREEMPTED = 128 + signal.SIGTERM  # 143
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130

LOCK_FILE = ".lock"


class UsageError(ValueError):
    """A user-fixable problem (flag, config, workdir): the CLI prints it and exits 2."""


class Diverged(RuntimeError):
    """Training produced a non-finite loss, gradient norm or state: the CLI exits 3."""


class Preempted(Exception):
    """A loop stopped on SIGTERM after saving a checkpoint: the CLI exits 143."""


class StorageError(OSError):
    """A checkpoint or result file could not be written: the CLI exits 4."""


# ---------------------------------------------------------------------------- preemption

_preempted = threading.Event()


def note_preempted() -> None:
    """Record that a loop of this process stopped on SIGTERM (the CLI then exits 143)."""
    _preempted.set()


def was_preempted() -> bool:
    return _preempted.is_set()


def reset_preempted() -> None:
    _preempted.clear()


def _preempted_outside_a_loop(signum: int, frame: Any) -> None:
    del signum, frame
    note_preempted()
    raise Preempted("SIGTERM outside a training loop (between runs or phases): nothing to save")


def raised_by_preemption(error: BaseException) -> bool:
    """`error` is a `Preempted` or arose while one was being handled (its cause or context chain)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, Preempted):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def sigterm_raises_preempted() -> Iterator[None]:
    """While active, a SIGTERM that arrives outside a `Preemption` block raises `Preempted` in the
    main thread (the run unwinds, the CLI exits 143). A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _preempted_outside_a_loop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def sigterm_exits_with(code: int) -> None:
    """From now on a SIGTERM ends the process at once with status `code` (logs flushed): for the
    teardown after a finished run, whose outputs are complete. A no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _exit(signum: int, frame: Any) -> None:
        del signum, frame
        logging.warning("SIGTERM after the run ended: exiting with its status %d.", code)
        logging.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    signal.signal(signal.SIGTERM, _exit)


class Preemption:
    """SIGTERM handling of one training loop (module docstring)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        del frame
        if signum == signal.SIGTERM and not self._event.is_set():
            logging.warning(
                "SIGTERM received: saving a checkpoint and stopping after this step (send it "
                "again, or Ctrl-C, to stop at once without saving)."
            )
            self._event.set()
            return
        code = EXIT_PREEMPTED if signum == signal.SIGTERM else EXIT_INTERRUPTED
        logging.warning("Second signal (%s): stopping at once.", signal.Signals(signum).name)
        os._exit(code)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self._event.is_set():  # Ctrl-C while a SIGTERM save is under way: stop at once
            self._on_signal(signum, frame)
        previous = self._previous.get(signal.SIGINT)
        if callable(previous):
            previous(signum, frame)
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            # a handler set outside Python reads as None: use the default
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    close = __exit__


# ---------------------------------------------------------------------------- divergence

_WATCHED = ("loss", "grad_norm", "learning_rate")

DIVERGENCE_HINT = (
    "Likely cause: a learning rate too high (or not finite), or a penalty strength (lambda) too "
    "large. Rerun with a smaller one (e.g. --config.optim.lr=<smaller>) in a new --workdir."
)


def _watched(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base in _WATCHED or "loss" in base


def nonfinite_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The watched metrics (loss, gradient norm, learning rate, any `*loss*`) that are not finite."""
    bad = {}
    for name, value in metrics.items():
        if not _watched(name) or value is None:
            continue
        v = np.asarray(value, np.float64)
        if not np.all(np.isfinite(v)):
            bad[name] = float(v.flat[np.argmin(np.isfinite(v.ravel()))])
    return bad


def check_finite_metrics(
    step: int, metrics: Mapping[str, Any], *, where: str = "", hint: str | None = None
) -> None:
    """`Diverged` when a watched metric of `step` is NaN or infinite (module docstring)."""
    bad = nonfinite_metrics(metrics)
    if bad:
        values = ", ".join(f"{k}={v}" for k, v in bad.items())
        place = f" ({where})" if where else ""
        raise Diverged(
            f"training diverged at step {int(step)}{place}: {values}. {hint or DIVERGENCE_HINT}"
        )


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def tree_is_finite(tree: Any) -> bool:
    """True when every floating-point leaf of `tree` is finite."""
    return bool(_all_finite(tree))


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# ---------------------------------------------------------------------------- one writer


class WorkdirLock:
    """Exclusive lock of a workdir for the lifetime of a run (module docstring)."""

    def __init__(self, workdir: str | os.PathLike):
        self.path = pathlib.Path(workdir) / LOCK_FILE
        self._lock: Any = None

    def __enter__(self) -> WorkdirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(self.path, blocking=False, record_pid=True)
        try:
            lock.__enter__()
        except BlockingIOError:
            holder = self.path.read_text().strip() or "unknown"
            raise UsageError(
                f"--workdir {self.path.parent} is in use by another run (process {holder} holds "
                f"{self.path}). Wait for it to finish, stop it, or choose another --workdir."
            ) from None
        self._lock = lock
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._lock is not None:
            self._lock.__exit__(None, None, None)
            self._lock = None
