"""Metric writers: `metrics.jsonl` and TensorBoard events in the workdir, process 0 only.

API:

- `Writer(workdir, *, resume_step=None, tensorboard=True, enabled=None)`: appends one JSON
  object per call to `workdir/metrics.jsonl` (`{"step": 100, "train/loss": 0.31, ...}`) and
  writes the same scalars as TensorBoard events (tensorboardX) under `workdir/tensorboard`.
  `enabled` defaults to `jax.process_index() == 0`, so in a multi-process run only process 0
  writes; the others' writers do nothing. With `resume_step` (a run resumed from a checkpoint
  at that step) lines and events of later steps, written before an interruption and about to
  be recomputed, are dropped first, so every step appears once.
  `write(step, metrics)`, `write_batch(step, fingerprint)` (to `batches.jsonl`, append-only:
  a record of the data order that resume tests compare), `flush()`, `close()`; a context
  manager.
- `read_jsonl(path) -> list[dict]`: the records of a JSON-lines file.
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

METRICS_FILE = "metrics.jsonl"
BATCHES_FILE = "batches.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (an empty list when it does not exist)."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _truncate_after(path: pathlib.Path, step: int) -> None:
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if int(r["step"]) <= step]
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
        if tensorboard:
            from tensorboardX import SummaryWriter

            purge = None if resume_step is None else int(resume_step) + 1
            self._tb = SummaryWriter(str(self.workdir / TENSORBOARD_DIR), purge_step=purge)

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
