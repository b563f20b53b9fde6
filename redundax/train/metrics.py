"""Metric writers: `metrics.jsonl` and TensorBoard events in the workdir, process 0 only.

API:

- `Writer(workdir, *, resume_step=None, tensorboard=True, enabled=None)`: appends one JSON
  object per call to `workdir/metrics.jsonl` (`{"step": 100, "train/loss": 0.31, ...}`) and
  writes the same scalars as TensorBoard events (tensorboardX) under `workdir/tensorboard`.
  `enabled` defaults to `jax.process_index() == 0`, so in a multi-process run only process 0
  writes; the others' writers do nothing. With `resume_step` (a run resumed from a checkpoint
  at that step) lines and events of later steps, written before an interruption and about to
  be recomputed, are dropped first, so every step appears once. `drop_after(step, prefixes)`
  does the same for the records of some sweep members (metric names `<member tag>/...`).
  `write(step, metrics)`, `write_batch(step, fingerprint)` (to `batches.jsonl`, append-only:
  a record of the data order that resume tests compare), `flush()`, `close()`; a context
  manager.
- `read_jsonl(path) -> list[dict]`: the records of a JSON-lines file (a truncated last record
  is dropped with a warning naming the file); `loads_json_file(path)`: one JSON file, an error
  naming the file when it does not parse.
- `write_json(path, obj)` / `dumps_strict(obj)`: strict JSON (no NaN/Infinity tokens: `null`,
  with the reasons under `NULL_REASONS = "null_reasons"`), written atomically; every results
  file uses it. `strict_json(obj) -> (obj, reasons)` is the conversion they share.
- `METRICS_FILE`, `BATCHES_FILE`, `TENSORBOARD_DIR`: the names under the workdir.
- `batch_fingerprint(batch) -> str`: a short hash of a batch's arrays (bytes, shapes, dtypes).

Values are written as Python floats; NaN and infinities (which JSON lacks) are written as `null`
and left out of the TensorBoard events.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (an empty list when it does not exist).

    A truncated last record (a run killed while writing it) is dropped with a warning naming the
    file; an unreadable record before the last raises `ValueError` naming the file and line.
    """
    path = pathlib.Path(path)
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for k, (i, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if k == len(lines) - 1:
                logging.warning(
                    "%s: dropped a truncated last record (line %d: %s); it is rewritten when "
                    "the run continues.",
                    path,
                    i,
                    error,
                )
                break
            raise ValueError(
                f"{path}, line {i}, is not valid JSON ({error}); the file is damaged. Delete "
                "that line (or the file) and rerun."
            ) from None
    return records


def loads_json_file(path: str | os.PathLike) -> Any:
    """The JSON value of a file; `ValueError` naming the file when it is truncated or damaged."""
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}).") from None


def strict_json(obj: Any, _path: str = "", _reasons: dict | None = None) -> tuple[Any, dict]:
    """`(clean, reasons)`: `obj` with every NaN/Inf float replaced by None, and a map from the
    dotted path of each replaced value to the reason (`"NaN"`, `"Infinity"`, `"-Infinity"`)."""
    reasons = {} if _reasons is None else _reasons
    if isinstance(obj, Mapping):
        clean = {k: strict_json(v, f"{_path}.{k}" if _path else str(k), reasons)[0]
                 for k, v in obj.items()}  # fmt: skip
    elif isinstance(obj, (list, tuple)):
        clean = [strict_json(v, f"{_path}[{i}]", reasons)[0] for i, v in enumerate(obj)]
    elif isinstance(obj, (float, np.floating)) or (
        isinstance(obj, np.ndarray | jax.Array) and np.ndim(obj) == 0
    ):
        v = float(obj)
        if math.isfinite(v):
            clean = v
        else:
            clean = None
            reasons[_path] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    elif isinstance(obj, np.integer):
        clean = int(obj)
    elif isinstance(obj, np.ndarray | jax.Array):
        clean = strict_json(np.asarray(obj).tolist(), _path, reasons)[0]
    else:
        clean = obj
    return clean, reasons


NULL_REASONS = "null_reasons"


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text of `obj` (RFC 8259: no NaN/Infinity tokens).

    Non-finite numbers are written as `null`; a mapping at the top level gets an entry
    `"null_reasons": {"<dotted.path>": "NaN" | "Infinity" | "-Infinity", ...}` saying why.
    """
    clean, reasons = strict_json(obj)
    if reasons and isinstance(clean, dict):
        clean[NULL_REASONS] = {
            k: f"{v} (not finite: a diverged or undefined quantity)" for k, v in reasons.items()
        }
    return json.dumps(clean, allow_nan=False, **kwargs)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write `obj` as strict JSON (`dumps_strict`) atomically (temporary file, then rename)."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps_strict(obj, indent=indent) + "\n")
    tmp.replace(path)


def _truncate_after(
    path: pathlib.Path, step: int | None, prefixes: tuple[str, ...] | None = None
) -> None:
    """Rewrite `path` without records after `step` (None: keep all) or a truncated last one.

    With `prefixes`, only records whose metric names all start with one of them are dropped
    (the records of some sweep members; `step=-1` drops all of theirs)."""
    if not path.exists():
        return

    def dropped(r: dict) -> bool:
        if step is None or int(r["step"]) <= step:
            return False
        names = [k for k in r if k != "step"]
        return prefixes is None or (bool(names) and all(k.startswith(prefixes) for k in names))

    kept = [r for r in read_jsonl(path) if not dropped(r)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)


def _scalar(value: Any) -> float | None:
    v = float(np.asarray(value))
    return v if math.isfinite(v) else None


def batch_fingerprint(batch: Any) -> str:
    """First 16 hex digits of a SHA-256 over the batch's leaves (shape, dtype and bytes)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(batch)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


class Writer:
    """`metrics.jsonl` + TensorBoard scalars; writes only on process 0 (module docstring)."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        resume_step: int | None = None,
        tensorboard: bool = True,
        enabled: bool | None = None,
    ):
        self.workdir = pathlib.Path(workdir)
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self._tb = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.path = self.workdir / METRICS_FILE
        if resume_step is not None:
            _truncate_after(self.path, int(resume_step))
        elif self.path.exists() and not self.path.read_bytes().endswith(b"\n"):
            _truncate_after(self.path, None)  # a truncated last record: drop it (with a warning)
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else int(resume_step) + 1
            self._tb = SummaryWriter(str(self.workdir / TENSORBOARD_DIR), purge_step=purge)

    def drop_after(self, step: int, prefixes: tuple[str, ...]) -> None:
        """Drop the `metrics.jsonl` records after `step` whose metric names all start with one
        of `prefixes` (`-1`: all of them): a sweep group resumed at `step` (or restarted from
        scratch) writes them again. TensorBoard events are not rewritten."""
        if self.enabled:
            _truncate_after(self.path, int(step), tuple(prefixes))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One record `{"step": step, **metrics}` (scalars) to JSON lines and TensorBoard."""
        if not self.enabled:
            return
        record = {"step": int(step)}
        for name, value in metrics.items():
            if name == "step":
                raise ValueError("a metric may not be called 'step'; rename it.")
            record[name] = _scalar(value)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in record.items():
                if name != "step" and value is not None:
                    self._tb.add_scalar(name, value, int(step))

    def write_batch(self, step: int, fingerprint: str) -> None:
        """Record that step `step` trained on the batch with this fingerprint."""
        if not self.enabled:
            return
        with open(self.workdir / BATCHES_FILE, "a") as f:
            f.write(json.dumps({"step": int(step), "fingerprint": fingerprint}) + "\n")

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
