"""Checkpoints: orbax `CheckpointManager` for the train state, the data iterator and the config.

API:

- `Checkpointer(directory, *, every, keep=3, config=None, ignore=IGNORED_FIELDS,
  handle_sigterm=True, async_save=True, stop_check_every=1)`:
  - `restore(state, data_iter=None) -> state`: the latest checkpoint, if there is one, into
    arrays with `state`'s shapes, dtypes and shardings (params, other state, optimizer state,
    step, RNG); `data_iter` (a grain `DatasetIterator`) is set to its saved position in place.
    Without a checkpoint `state` comes back unchanged.
  - `save(step, state, data_iter=None, *, force=False) -> bool`: saves when `step` is a
    multiple of `every`, or `force`; keeps the newest `keep`. Every process must call it.
  - `should_stop(step) -> bool`: a SIGTERM arrived (preemption): save now and leave the loop.
    A Python signal handler sets a flag. With several processes the flags are combined (an
    all-gather across processes, at steps that are multiples of `stop_check_every`), so every
    process stops at the same step even when only one was signalled. (The handler replaces
    the JAX preemption notifier's: its sync point is unreliable together with orbax's
    asynchronous saves, whose finalisation reports old step numbers to it.)
  - `latest_step()`, `wait()`, `close()`; a context manager.
- `check_config(directory, config, ignore=IGNORED_FIELDS)`: raises `ValueError` if the newest
  checkpoint under `directory` was saved with a different config (the fields that differ are
  named). Fields under `ignore` (dotted prefixes: the `run` section with logging, evaluation and
  checkpoint cadence, `data.dir`, and the `monitor` section of what is measured during training)
  may change between a run and its resumption.
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
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from redundax.train.state import TrainState

IGNORED_FIELDS: tuple[str, ...] = ("run", "data.dir", "monitor")
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


def config_differences(
    saved: Mapping[str, Any], current: Mapping[str, Any], ignore: Sequence[str] = IGNORED_FIELDS
) -> list[str]:
    """Lines `field: <saved> in the checkpoint, <current> now` for every differing field."""
    a, b = _flatten(saved), _flatten(current)
    lines = []
    for name in sorted(set(a) | set(b)):
        if _ignored(name, ignore):
            continue
        if name not in b:
            lines.append(f"  {name}: {a[name]!r} in the checkpoint, absent now")
        elif name not in a:
            lines.append(f"  {name}: absent in the checkpoint, {b[name]!r} now")
        elif a[name] != b[name]:
            lines.append(f"  {name}: {a[name]!r} in the checkpoint, {b[name]!r} now")
    return lines


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


def check_config(
    directory: str | os.PathLike, config: Any, ignore: Sequence[str] = IGNORED_FIELDS
) -> None:
    """`ValueError` naming the differing fields if the newest checkpoint has another config.

    Reads only files (no collective operations), so every process may call it at any time.
    """
    directory = pathlib.Path(directory)
    steps = ocp.step.checkpoint_steps(directory) if directory.exists() else []
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


def read_state(directory: str | os.PathLike, step: int | None = None) -> tuple[int, dict]:
    """`(step, tree)`: a saved train state as nested dicts of NumPy arrays, on any topology.

    `tree` has the keys `params`, `other`, `opt_state`, `step` and `rng` (raw key data); NNX
    variables appear as `{"value": array}`. `step` defaults to the newest finished checkpoint.
    """
    directory = pathlib.Path(directory)
    steps = ocp.step.checkpoint_steps(directory) if directory.exists() else []
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
        self._sigterm = threading.Event()
        self._previous_handler: Any = None
        self._installed = False
        if handle_sigterm:
            if threading.current_thread() is threading.main_thread():
                self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
                self._installed = True

    # ------------------------------------------------------------------ preemption

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        del signum, frame
        logging.warning("SIGTERM received: saving a checkpoint and stopping after this step.")
        self._sigterm.set()

    def should_stop(self, step: int) -> bool:
        """True once a SIGTERM reached any process; all processes agree on the step."""
        local = self._sigterm.is_set()
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
    ) -> bool:
        """Save at multiples of `every` (or when `force`); True if a checkpoint was started."""
        step = int(step)
        if not (force or step % self.every == 0) or step in self.manager.all_steps():
            return False
        items: dict[str, Any] = {
            "state": ocp.args.StandardSave(_state_tree(state)),
            "meta": ocp.args.JsonSave({"config": self.config, "step": step}),
        }
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iter)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=True)

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

    def wait(self) -> None:
        """Block until pending asynchronous saves are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
        if self._installed:  # a handler set outside Python reads as None: use the default
            previous = self._previous_handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
            self._installed = False

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
