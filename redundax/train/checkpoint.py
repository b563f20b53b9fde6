"""Checkpoints: orbax `CheckpointManager` for the train state, the data iterator and the config.

API:

- `Checkpointer(directory, *, every, keep=3, config=None, ignore=IGNORED_FIELDS,
  handle_sigterm=True, async_save=True, stop_check_every=1)`:
  - `restore(state, data_iter=None) -> state`: the latest checkpoint, if there is one, into
    arrays with `state`'s shapes, dtypes and shardings (params, other state, optimizer state,
    step, RNG); `data_iter` (a grain `DatasetIterator`) is set to its saved position in place.
    Without a checkpoint `state` comes back unchanged.
  - `save(step, state, data_iter=None, *, force=False, meta=None) -> bool`: saves when `step`
    is a multiple of `every`, or `force`; keeps the newest `keep`. Every process must call it.
    `meta` (JSON) is stored with it and read back by `restore_meta() -> dict | None`.
  - `should_stop(step) -> bool`: a SIGTERM arrived (preemption): save now and leave the loop.
    A Python signal handler sets a flag. With several processes the flags are combined (an
    all-gather across processes, at steps that are multiples of `stop_check_every`), so every
    process stops at the same step even when only one was signalled. (The handler replaces
    the JAX preemption notifier's: its sync point is unreliable together with orbax's
    asynchronous saves, whose finalisation reports old step numbers to it.)
  - `latest_step()`, `wait()`, `close()`; a context manager.
- `check_config(directory, config, ignore=IGNORED_FIELDS)`: raises `ValueError` if the newest
  checkpoint under `directory` was saved with a different config (the fields that differ are
  named). Fields under `ignore` may change between a run and its resumption.
- `IGNORED_FIELDS`: the one list (dotted prefixes) of config fields that do not change results:
  the `run` section (logging cadence, progress), the `checkpoint` section, evaluation cadence
  (`eval.every_epochs`, `eval.every_steps`), where the data live (`data.data_dir`, ...), the
  `monitor` section (it only observes training) and the MAE sweep's grid, layout and post-hoc
  analyses.
- `check_workdir_config(workdir, config, ignore=IGNORED_FIELDS)`: the same check against the
  run identity `workdir/config.json` that every experiment records (before anything is
  written); `differing_fields(saved, current, ignore)` and `config_differences(...)`: the
  fields that differ, as a dict and as message lines; `finished_steps(directory)`: the steps of
  the finished checkpoints.
- `config_to_dict(config) -> dict`: a ConfigDict or mapping as JSON-compatible nested dicts.
- `read_state(directory, step=None) -> (step, dict)`: a saved state as NumPy arrays, whatever
  the number of devices and processes that saved it (for analysis and tests).
- `CHECKPOINT_DIR = "checkpoints"`: where experiments keep checkpoints under `--workdir`.

Layout: `directory/config.json` (the config the checkpoints were made with) and
`directory/<step>/{state,data,meta}`: `state` is the `TrainState` minus its graphdef (orbax
StandardSave), `data` the grain iterator state of every process
(`grain.checkpoint.CheckpointSave`, one JSON file per process), `meta` the config and step
(JSON). A SIGKILL between checkpoints loses only the steps since the last one; incomplete
checkpoints are never restored.
"""

from __future__ import annotations

import json
import os
import pathlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from redundax.train import failures
from redundax.train.state import TrainState

# The one list of config fields that do not change results (dotted prefixes, every experiment):
# logging / evaluation / checkpoint cadence and progress display, where the data live, and the
# MAE sweep's grid and layout (each member's result is stored under its own tag and identified by
# the config without them) and its post-hoc analyses. Everything else must match to resume.
IGNORED_FIELDS: tuple[str, ...] = (
    "run",  # classify, multimodal: cadence, progress, batch fingerprints
    "data.dir",
    "data.data_dir",
    "data_dir",
    "glue.data_dir",
    "checkpoint_every_epochs",  # mae
    "train.log_every",  # channels
    "sweep",  # mae: the grid (members are stored by tag) and the layout (vectorised or not)
    "r_star",  # mae: post-hoc fit on the members' results
    "monitor",  # the redundancy monitor only observes training
    "eval.final_epochs",  # mae: post-hoc averaging window of the members' histories
    "eval.every_epochs",  # evaluation cadence (what is evaluated must match)
    "eval.every_steps",
    "checkpoint",  # checkpoint cadence and retention: resumes are bit-identical whatever it is
)
CHECKPOINT_DIR = "checkpoints"  # under the workdir
CONFIG_FILE = "config.json"  # in the checkpoint directory


def config_to_dict(config: Any) -> dict[str, Any]:
    """A ConfigDict (or mapping) as plain JSON-compatible nested dicts."""
    if config is None:
        return {}
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(dict(config), default=repr))


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _ignored(name: str, ignore: Sequence[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ignore)


def differing_fields(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Sequence[str] = IGNORED_FIELDS
) -> dict[str, tuple[Any, Any]]:
    """`{field: (saved, current)}` for every results-changing field that differs (`_MISSING` when
    absent on one side)."""
    a, b = _flatten(saved), _flatten(current)
    out = {}
    for name in sorted(set(a) | set(b)):
        if _ignored(name, ignore):
            continue
        old, new = a.get(name, _MISSING), b.get(name, _MISSING)
        if old != new:
            out[name] = (old, new)
    return out


_MISSING = "<absent>"


def config_differences(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    ignore: Sequence[str] = IGNORED_FIELDS,
    where: str = "the checkpoint",
) -> list[str]:
    """Lines `field: <saved> in <where>, <current> now` for every differing field."""
    lines = []
    for name, (old, new) in differing_fields(saved, current, ignore).items():
        if new is _MISSING:
            lines.append(f"  {name}: {old!r} in {where}, absent now")
        elif old is _MISSING:
            lines.append(f"  {name}: absent in {where}, {new!r} now")
        else:
            lines.append(f"  {name}: {old!r} in {where}, {new!r} now")
    return lines


def _flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return repr(tuple(value))
    return str(value)


def check_workdir_config(
    workdir: str | os.PathLike, config: Any, ignore: Sequence[str] = IGNORED_FIELDS
) -> None:
    """`ValueError` if `workdir/config.json` (the run identity every experiment records) holds a
    config that differs from `config` in a results-changing field; the message names the fields
    and the fix (a new workdir, or `--config.<field>=<old value>`). Reads files only.

    A workdir without config.json, or with one that is not JSON, passes (nothing to compare).
    """
    path = pathlib.Path(workdir) / CONFIG_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        logging.warning("%s is not valid JSON; not comparing the config with it.", path)
        return
    if not isinstance(saved, Mapping):
        return
    diff = differing_fields(saved, config_to_dict(config), ignore)
    if not diff:
        return
    lines = config_differences(saved, config_to_dict(config), ignore, where="the workdir")
    restore = " ".join(
        f"--config.{k}={_flag_value(old)}" for k, (old, _) in diff.items() if old is not _MISSING
    )
    raise ValueError(
        f"{workdir} holds a run of a different configuration ({path}); refusing to resume or "
        "overwrite it. Fields that change results:\n" + "\n".join(lines) + "\nChoose a new "
        "--workdir for this configuration, or rerun with the workdir's values"
        + (f" ({restore})." if restore else ".")
    )


def _options(keep: int, async_save: bool) -> Any:
    return ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        cleanup_tmp_directories=True,
        enable_async_checkpointing=async_save,
    )


def _mismatch_message(directory: pathlib.Path, step: int, lines: list[str]) -> str:
    return (
        f"{directory} holds a checkpoint (step {step}) of a different configuration; "
        "refusing to resume from it or overwrite it:\n"
        + "\n".join(lines)
        + "\nResume with the checkpoint's configuration, choose another --workdir, or delete "
        f"{directory} to start over."
    )


def finished_steps(directory: str | os.PathLike) -> list[int]:
    """Steps of the finished checkpoints directly under `directory` (folders named `<step>`).

    Other folders (e.g. a sweep's per-member `lam_0.1_seed_0` checkpoint roots, which orbax's
    step parser would read as steps 0, 1, ...) are not checkpoints of this directory.
    """
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    steps = ocp.step.checkpoint_steps(directory)
    return sorted(s for s in steps if (directory / str(s)).is_dir())


def check_config(
    directory: str | os.PathLike, config: Any, ignore: Sequence[str] = IGNORED_FIELDS
) -> None:
    """`ValueError` naming the differing fields if the newest checkpoint has another config.

    Reads only files (no collective operations), so every process may call it at any time.
    """
    directory = pathlib.Path(directory)
    steps = finished_steps(directory)
    if not steps:
        return
    path = directory / CONFIG_FILE
    if not path.exists():
        raise ValueError(
            f"{directory} holds checkpoints (steps {sorted(steps)}) but no {CONFIG_FILE} to "
            "check them against; choose another --workdir or delete that directory."
        )
    saved = json.loads(path.read_text())
    lines = config_differences(saved, config_to_dict(config), ignore)
    step = max(steps)
    if lines:
        raise ValueError(_mismatch_message(directory, step, lines))


def _storage_error(directory: pathlib.Path, step: int | None, error: Exception) -> Exception:
    """A failed save as `StorageError` (disk full, read-only, quota); other errors unchanged."""
    chain, e = [], error
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    os_errors = [e for e in chain if isinstance(e, OSError)]
    text = " ".join(str(e) for e in chain)
    storage_words = ("RESOURCE_EXHAUSTED", "No space left", "Read-only", "Permission denied",
                     "Disk quota")  # fmt: skip
    if not os_errors and not any(w in text for w in storage_words):
        return error
    what = f"a checkpoint (failed by step {step})" if step is not None else "a checkpoint"
    latest = finished_steps(directory)
    kept = f"the newest finished one (step {max(latest)}) is intact" if latest else "none exists"
    storage = failures.StorageError(
        f"could not write {what} under {directory}: {chain[-1]}. Free space or fix the "
        f"permissions, then rerun the same command to resume ({kept})."
    )
    storage.errno = os_errors[0].errno if os_errors else None
    return storage


def read_state(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """`(step, tree)`: a saved train state as nested dicts of NumPy arrays, on any topology.

    `tree` has the keys `params`, `other`, `opt_state`, `step` and `rng` (raw key data); NNX
    variables appear as `{"value": array}`. `step` defaults to the newest finished checkpoint.
    """
    directory = pathlib.Path(directory)
    steps = finished_steps(directory)
    if not steps:
        raise ValueError(f"no finished checkpoint under {directory}.")
    step = max(steps) if step is None else int(step)
    if step not in steps:
        raise ValueError(f"no checkpoint of step {step} under {directory}; steps: {sorted(steps)}.")
    path = directory / str(step) / "state"
    with ocp.PyTreeCheckpointer() as reader:
        metadata = reader.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return step, reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))


def _state_tree(state: TrainState) -> dict[str, Any]:
    return {
        "params": state.params,
        "other": state.other,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": state.rng,
    }


class Checkpointer:
    """Periodic and preemption checkpoints of one run (module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        every: int,
        keep: int = 3,
        config: Any = None,
        ignore: Sequence[str] = IGNORED_FIELDS,
        handle_sigterm: bool = True,
        async_save: bool = True,
        stop_check_every: int = 1,
    ):
        if not isinstance(every, int) or every < 1:
            raise ValueError(
                f"`every` (checkpoint interval in steps) must be an int >= 1; got {every!r}."
            )
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` (checkpoints kept) must be an int >= 1; got {keep!r}.")
        self.directory = pathlib.Path(directory).absolute()
        if not isinstance(stop_check_every, int) or stop_check_every < 1:
            raise ValueError(f"`stop_check_every` must be an int >= 1; got {stop_check_every!r}.")
        self.every, self.stop_check_every = every, stop_check_every
        self.config = config_to_dict(config)
        if config is not None:
            check_config(self.directory, config, ignore)
        self.manager = ocp.CheckpointManager(self.directory, options=_options(keep, async_save))
        if config is not None and jax.process_index() == 0:
            tmp = self.directory / f".{CONFIG_FILE}.tmp"
            tmp.write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.directory / CONFIG_FILE)
        self._preemption = failures.Preemption()
        if handle_sigterm:
            self._preemption.__enter__()

    # ------------------------------------------------------------------ preemption

    def should_stop(self, step: int) -> bool:
        """True once a SIGTERM reached any process; all processes agree on the step."""
        local = self._preemption.requested
        if jax.process_count() == 1:
            return local
        if int(step) % self.stop_check_every:
            return False
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
        return bool(np.any(flags))

    # ------------------------------------------------------------------ save / restore

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self,
        step: int,
        state: TrainState,
        data_iter: grain.DatasetIterator | None = None,
        *,
        force: bool = False,
        meta: Mapping[str, Any] | None = None,
    ) -> bool:
        """Save at multiples of `every` (or when `force`); True if a checkpoint was started.

        `meta`: extra JSON-serialisable values kept with the checkpoint (`restore_meta`), e.g. a
        sweep group's evaluation histories and running metric sums."""
        step = int(step)
        if not (force or step % self.every == 0) or step in self.manager.all_steps():
            return False
        items: dict[str, Any] = {
            "state": ocp.args.StandardSave(_state_tree(state)),
            "meta": ocp.args.JsonSave({**(meta or {}), "config": self.config, "step": step}),
        }
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        try:
            return self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        except Exception as error:
            self._drain()
            raise _storage_error(self.directory, step, error) from error

    def _drain(self, timeout: float = 20.0) -> None:
        """Give saves still in flight up to `timeout` seconds to finish (or fail), in a daemon
        thread: a writer blocked on a full disk must not hang the process."""

        def wait_quietly() -> None:
            try:
                self.manager.wait_until_finished()
            except Exception as error:  # reported by the caller's error
                logging.warning("an earlier checkpoint save failed too: %s", error)

        waiter = threading.Thread(target=wait_quietly, daemon=True)
        waiter.start()
        waiter.join(timeout)

    def restore(
        self, state: TrainState, data_iter: grain.DatasetIterator | None = None
    ) -> TrainState:
        """`state` (and `data_iter`, in place) from the newest checkpoint, if any."""
        step = self.manager.latest_step()
        if step is None:
            return state
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        tree = restored["state"]
        logging.info("Restored checkpoint of step %d from %s.", step, self.directory)
        return state.replace(**tree)

    def restore_meta(self) -> dict[str, Any] | None:
        """The `meta` of the newest checkpoint (with its `config` and `step`), None without one."""
        step = self.manager.latest_step()
        if step is None:
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def wait(self) -> None:
        """Block until pending asynchronous saves are written (`StorageError` if one failed)."""
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            raise _storage_error(self.directory, None, error) from error

    def close(self) -> None:
        self._preemption.close()
        try:
            self.wait()
        finally:
            try:
                self.manager.close()
            except Exception as error:  # a failed save already reported by wait()
                logging.warning("closing the checkpoint manager: %s", error)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
