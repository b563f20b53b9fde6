"""Command line of every experiment: configs, workdir, multi-process start-up.

API:

- `main(run_fn, default_config, argv=None)`: parses
  `--config configs/<x>.py[:preset] --config.a.b=v --workdir DIR` (absl +
  `ml_collections.config_flags`), starts `jax.distributed` when the run has several processes,
  checks that `DIR/config.json` and a checkpoint already in `DIR/checkpoints` were made with the
  same config, up to the fields of `checkpoint.IGNORED_FIELDS` (see
  `redundax.train.checkpoint.check_workdir_config` and `check_config`), writes
  `DIR/config.json` (process 0) and calls `run_fn(config, workdir: pathlib.Path)`.
  `--workdir` defaults to `runs/<experiment>` (the name of `run_fn`'s module). With
  `keep_host_memory=` (a bool or a function of the config; `REDUNDAX_KEEP_HOST_MEMORY=1`/`0`
  overrides it) it first applies `redundax.train.host_memory.keep_host_memory`. An override of
  a field the config does not have exits with an error naming the field and the closest
  existing names.
  Errors a user can fix print one message without a traceback and exit 2, before anything is
  created: a missing config file, an unknown preset, another experiment's config, an old or
  misspelt field (checked against the experiment's default config), a batch size, epoch or
  step count < 1, a workdir that is a file or not writable, a workdir of another
  config, a workdir in use by another run (a lock file `DIR/.lock`, see
  `failures.WorkdirLock`). The run's end maps to the exit codes of `redundax.train.failures`:
  0 done, 143 preempted (SIGTERM: checkpoint saved, rerun to resume), 3 diverged, 4 storage
  error, 2 user error.
- `maybe_initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
  *, auto=False) -> bool`: calls `jax.distributed.initialize` when a multi-process launch is
  detected: the `--coordinator_address`/`--num_processes`/`--process_id` flags, the
  environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`, or
  `auto` (the `--distributed` flag: let JAX detect a TPU pod, SLURM or Open MPI cluster).
  Returns whether it initialised.
- `unknown_config_field(config, argv) -> str | None`: the error message for an override of a
  field `config` lacks (an old field name is named with its new one, `config_schema.RENAMED`).
- `config_problem(config, default_config=None) -> str | None`: the message for a config that
  cannot run: another experiment's config, a field absent from the experiment's default config
  (`config_schema.check_fields`: an old or misspelt field is named with the right one), a batch
  size, epoch or step count < 1. `workdir_problem(workdir)`: a workdir that is a file or not
  writable. `usage_exit(message)`: print it and exit 2.
- `run_and_exit_code(run_fn, config, workdir) -> int`: runs the experiment and maps how it
  ended to an exit code.
- `CONFIG_FILE = "config.json"`.

Two processes on one machine, for example:
`python -m experiments.classify --coordinator_address=127.0.0.1:12345 --num_processes=2
--process_id=0 --workdir runs/x` and the same with `--process_id=1`.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import importlib.util
import json
import logging as std_logging
import os
import pathlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from redundax.train import checkpoint, config_schema, failures, host_memory

CONFIG_FILE = "config.json"


def _define_flags(default_config: str) -> None:
    if "config" in flags.FLAGS:
        return
    config_flags.DEFINE_config_file(
        "config", default_config, "Config file: path/to/config.py[:preset].", lock_config=True
    )
    flags.DEFINE_string("workdir", None, "Output directory; re-running with it resumes.")
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
    flags.DEFINE_integer("process_id", None, "Index of this process (multi-process).")
    flags.DEFINE_bool(
        "distributed", False, "Call jax.distributed.initialize() with cluster auto-detection."
    )


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name} must be an integer; got {value!r}."
        ) from None


def maybe_initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
) -> bool:
    """`jax.distributed.initialize` for multi-process launches (module docstring)."""
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    explicit = (coordinator_address, num_processes, process_id)
    if not auto and all(v is None for v in explicit):
        return False
    if not auto and (num_processes or 1) <= 1 and coordinator_address is None:
        return False
    if not auto and None in explicit:
        raise ValueError(
            "a multi-process launch needs --coordinator_address, --num_processes and "
            f"--process_id together (got {explicit}); or pass --distributed to let JAX detect "
            "the cluster."
        )
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    # A first collective while all processes are in step: the CPU (gloo) collectives set up
    # their communicator on first use and give up after 30 s, which a slow process could
    # otherwise exceed (e.g. compiling its model initialisation) before the first sync.
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices("redundax.train.cli: start")
    logging.info(
        "jax.distributed: process %d of %d, %d local / %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


# ---------------------------------------------------------------------------- config errors


def _config_argument(argv: Sequence[str], default: str) -> str:
    value = default
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def _load_config(spec: str) -> Any:
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_redundax_config", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"--config: cannot load {path!r}; pass path/to/config.py[:preset].")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def unknown_config_field(config: Any, argv: Sequence[str]) -> str | None:
    """An error message for the first `--config.a.b=v` naming a field `config` lacks (and its
    new name when it is an old one, `config_schema.RENAMED`)."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        dotted = arg[len("--config.") :].split("=", 1)[0]
        node, walked = config, []
        parts = dotted.split(".")
        for part in parts:
            keys = list(node.keys()) if hasattr(node, "keys") else []
            if part not in keys:
                renamed = config_schema.renamed_field(dotted)
                last = len(walked) == len(parts) - 1  # its sections exist: an old field name
                if last and renamed is not None and _has_field(config, renamed):
                    return (
                        f"Unknown config field {dotted!r} in {arg.split('=', 1)[0]}: "
                        f"config.{dotted} is now config.{renamed} (--config.{renamed}=...)."
                    )
                where = ".".join(walked) or "the config"
                close = difflib.get_close_matches(part, [str(k) for k in keys], n=3)
                hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                return (
                    f"Unknown config field {dotted!r} in {arg.split('=', 1)[0]}: {where} has no "
                    f"field {part!r}.{hint} Fields of {where}: {', '.join(map(str, keys)) or 'none'}."
                )
            walked.append(part)
            node = node[part]
    return None


def _has_field(config: Any, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node.keys():
            return False
        node = node[part]
    return True


def usage_exit(message: str) -> NoReturn:
    """Print a user-fixable error (no traceback) and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(failures.EXIT_USAGE)


def _config_file_error(spec: str) -> str | None:
    """The message for a --config that cannot be loaded (missing file, unknown preset), or None."""
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        return (
            f"--config {spec}: no such file {path!r}. Pass path/to/config.py[:preset], e.g. "
            "--config configs/classify.py:smoke."
        )
    try:
        _load_config(spec)
    except Exception as error:  # the config module's own message (e.g. an unknown preset)
        return f"--config {spec}: {error}"
    return None


def _flags_parser(default_config: str) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        spec = _config_argument(argv, default_config)
        if any(a in ("--help", "--helpshort", "--helpfull", "-h") for a in argv):
            return flags.FLAGS(argv)
        message = _config_file_error(spec)
        if message:
            usage_exit(message)
        try:
            return flags.FLAGS(argv)
        except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as error:
            message = None
            try:
                message = unknown_config_field(_load_config(spec), argv)
            except Exception:  # report the original error instead
                pass
            usage_exit(f"{message or error}\nPass --helpshort or --helpfull to see help on flags.")

    return parse


# ---------------------------------------------------------------------------- config checks

# names (at any depth) or dotted paths; and every "*batch_size"
_POSITIVE_FIELDS = ("num_epochs", "epochs", "num_steps", "train.steps")


def _leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in tree.keys():
        value = tree[key]
        name = f"{prefix}{key}"
        if hasattr(value, "keys"):
            yield from _leaves(value, name + ".")
        else:
            yield name, value


def config_problem(config: Any, default_config: str | None = None) -> str | None:
    """A message for a config that cannot run, or None.

    Checks that `config` has the top-level sections of the experiment's default config (another
    experiment's config is named as such; old field names of the config are named with their new
    names), that every field is one of the default config's (`config_schema.check_fields`: an
    old or misspelt field is named with the right one) and that batch sizes, epoch and step
    counts are >= 1 (>= 0 where the default config itself has 0).
    """
    expected = None
    if default_config is not None:
        try:
            expected = _load_config(default_config)
        except Exception:  # the default is not loadable from here: skip this check
            expected = None
        if expected is not None:
            missing = sorted(set(expected.keys()) - set(config.keys()))
            if missing:
                old = [
                    f"config.{name} is now config.{new}"
                    for name, _ in _leaves(config)
                    if (new := config_schema.renamed_field(name)) and _has_field(expected, new)
                ]
                return (
                    f"this config is not a config of this experiment (it lacks "
                    f"{', '.join(map(repr, missing))}); pass this experiment's own config, "
                    f"{default_config}[:preset]."
                    + (f" Old field names: {'; '.join(old)}." if old else "")
                )
            try:
                config_schema.check_fields(config, expected)
            except ValueError as error:
                return f"{str(error).rstrip('.')} (the schema: {default_config})."
    # a count whose default is 0 (e.g. the layers study's `train.steps`: no recovery) may be 0
    zero_by_default = (
        {name for name, value in _leaves(expected) if value == 0 and not isinstance(value, bool)}
        if default_config is not None and expected is not None
        else set()
    )
    for name, value in _leaves(config):
        last = name.rsplit(".", 1)[-1]
        positive = (
            last.endswith("batch_size") or last in _POSITIVE_FIELDS or name in _POSITIVE_FIELDS
        )
        if not positive or not isinstance(value, int) or isinstance(value, bool):
            continue
        if name in zero_by_default and value < 0:
            return f"config.{name} must be >= 0; got {value} (--config.{name}=<int >= 0>)."
        if name not in zero_by_default and value < 1:
            return f"config.{name} must be >= 1; got {value} (--config.{name}=<positive int>)."
    return None


def workdir_problem(workdir: pathlib.Path) -> str | None:
    """A message when `workdir` cannot be used (a file, not writable), or None. Creates nothing."""
    if workdir.exists() and not workdir.is_dir():
        return f"--workdir {workdir} is a file, not a directory; choose a directory."
    existing = workdir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"--workdir {workdir}: {existing} is a file, not a directory."
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == workdir else f" (its nearest existing parent {existing} is not)"
        return f"--workdir {workdir} is not writable{where}; choose a writable directory."
    return None


# ---------------------------------------------------------------------------- main


class _LibraryInfoFilter(std_logging.Filter):
    """Drops INFO records of orbax and grain (one per checkpoint file); warnings pass."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        noisy = any(f"{os.sep}{lib}{os.sep}" in record.pathname for lib in ("orbax", "grain"))
        return record.levelno >= std_logging.WARNING or not noisy


def _default_workdir(run_fn: Callable[..., Any]) -> pathlib.Path:
    name = getattr(run_fn, "__module__", "") or "run"
    if name == "__main__":  # python -m experiments.<x>: the module's real name is in its spec
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        name = spec.name if spec is not None else "run"
    return pathlib.Path("runs") / name.rsplit(".", 1)[-1]


def _write_config(workdir: pathlib.Path, config: Any) -> None:
    tmp = workdir / f".{CONFIG_FILE}.tmp"
    tmp.write_text(json.dumps(checkpoint.config_to_dict(config), indent=2, sort_keys=True) + "\n")
    tmp.replace(workdir / CONFIG_FILE)


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM}


def _has_own_status(error: Exception) -> bool:
    """`error` maps to a status of its own: a usage error (2), a divergence (3) or a storage
    error (4: a `StorageError`, or an `OSError` of a full, read-only or over-quota disk)."""
    if isinstance(error, (failures.UsageError, failures.Diverged, failures.StorageError)):
        return True
    return isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS


def run_and_exit_code(run_fn: Callable[[Any, pathlib.Path], Any], config: Any, workdir) -> int:
    """Run `run_fn(config, workdir)`; map how it ended to an exit code (`redundax.train.failures`).

    Preempted (SIGTERM, checkpoint saved): 143. Diverged: 3. Storage error (a failed save, or
    an `OSError` of a full, read-only or over-quota disk): 4, at once (`os._exit`, so no
    background writer can hang the process). User-fixable error (`failures.UsageError`): 2.
    Each prints one message, without a traceback, and keeps its status when it is raised while a
    SIGTERM's `Preempted` unwinds; any other exception propagates (traceback, status 1), unless it
    was raised during that unwinding (143).
    """
    try:
        _run_through_preemption(run_fn, config, workdir)
    except failures.UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return failures.EXIT_USAGE
    except failures.Diverged as error:
        print(f"error: {error}", file=sys.stderr)
        return failures.EXIT_DIVERGED
    except OSError as error:
        if not _has_own_status(error):
            raise
        print(f"error: {error}", file=sys.stderr)
        # Leave now: background writer threads (orbax, TensorBoard) stuck on the full disk must
        # not keep the process alive; finished checkpoints are complete on disk.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.flush()
        os._exit(failures.EXIT_STORAGE)
    if not failures.was_preempted():
        return failures.EXIT_OK
    print(
        f"preempted: stopped on SIGTERM (a running training loop saved a checkpoint first); "
        f"rerun the same command in {workdir} to resume (exit status {failures.EXIT_PREEMPTED}).",
        file=sys.stderr,
    )
    return failures.EXIT_PREEMPTED


def _run_through_preemption(run_fn: Callable[[Any, pathlib.Path], Any], config, workdir) -> None:
    """Run `run_fn` with SIGTERM raising `Preempted` outside training loops; swallow (log) that
    `Preempted` and any error raised while it unwound. A signal handler's exception can land
    inside library code (e.g. between two statements of `threading.Thread.start`, which then
    fails with a `KeyError` of its own): the run still ends as preempted (143). An error with a
    status of its own (`_has_own_status`: a disk that filled up while a save finished) keeps it."""
    try:
        with failures.sigterm_raises_preempted():
            run_fn(config, workdir)
    except Exception as error:
        if not failures.raised_by_preemption(error) or (
            _has_own_status(error) and not isinstance(error, failures.Preempted)
        ):
            raise
        failures.note_preempted()
        if isinstance(error, failures.Preempted):
            logging.warning("preempted: %s", error)
        else:
            logging.warning("preempted; unwinding raised %s: %s", type(error).__name__, error)


def main(
    run_fn: Callable[[Any, pathlib.Path], Any],
    default_config: str,
    argv: Sequence[str] | None = None,
    *,
    keep_host_memory: bool | Callable[[Any], bool] = False,
) -> None:
    """Parse flags and run `run_fn(config, workdir)` (module docstring).

    `keep_host_memory` (a bool or a function of the config) applies
    `redundax.train.host_memory.keep_host_memory` before JAX starts, for experiments whose steps
    have temporaries over 32 MiB; `REDUNDAX_KEEP_HOST_MEMORY=1`/`0` overrides it.
    """
    _define_flags(default_config)

    def _main(args: list[str]) -> None:
        if len(args) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(args[1:])}")
        fl = flags.FLAGS
        logging.get_absl_handler().addFilter(_LibraryInfoFilter())
        wanted = keep_host_memory(fl.config) if callable(keep_host_memory) else keep_host_memory
        try:
            host_memory.keep_host_memory(bool(wanted))  # before JAX creates its CPU client
        except ValueError as error:  # a bad REDUNDAX_KEEP_HOST_MEMORY
            usage_exit(str(error))
        maybe_initialize_distributed(
            fl.coordinator_address, fl.num_processes, fl.process_id, auto=fl.distributed
        )
        config = fl.config
        workdir = pathlib.Path(fl.workdir) if fl.workdir else _default_workdir(run_fn)
        problem = config_problem(config, default_config) or workdir_problem(workdir)
        if problem:
            usage_exit(problem)
        try:
            checkpoint.check_workdir_config(workdir, config)
            checkpoint.check_config(workdir / checkpoint.CHECKPOINT_DIR, config)
        except ValueError as error:
            usage_exit(f"--workdir {workdir}: {error}")
        failures.reset_preempted()
        with contextlib.ExitStack() as stack:
            if jax.process_index() == 0:
                try:
                    stack.enter_context(failures.WorkdirLock(workdir))
                    _write_config(workdir, config)
                except failures.UsageError as error:
                    usage_exit(str(error))
                except OSError as error:  # read-only file system, permissions, quota
                    usage_exit(
                        f"--workdir {workdir} cannot be written ({error.strerror or error}); "
                        "choose a writable directory."
                    )
            logging.info("workdir %s, config:\n%s", workdir, config)
            code = run_and_exit_code(run_fn, config, workdir)
            failures.sigterm_exits_with(code)  # the outputs are complete: no death by signal
        if code:
            sys.exit(code)

    app.run(
        _main,
        argv=list(argv) if argv is not None else None,
        flags_parser=_flags_parser(default_config),
    )
