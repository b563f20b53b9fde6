"""redundax.train.metrics and progress: JSON lines, TensorBoard events, resume, process 0 only."""

from __future__ import annotations

import logging
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from redundax.train import metrics, progress


def _tensorboard_scalars(directory) -> list[tuple[int, str, float]]:
    """Decode the event files independently: TFRecord framing (length, CRC, payload, CRC)
    around `Event` protos."""
    out = []
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            payload = data[pos + 12 : pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                out.append((event.step, value.tag, value.simple_value))
    return out


def test_writer_writes_json_lines_and_tensorboard_scalars(tmp_path):
    with metrics.Writer(tmp_path) as w:
        w.write(1, {"train/loss": np.float32(2.5), "lr": 0.1})
        w.write(2, {"train/loss": 1.25, "bad": float("nan")})
    records = metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)
    assert records == [
        {"step": 1, "train/loss": 2.5, "lr": 0.1},
        {"step": 2, "train/loss": 1.25, "bad": None},  # JSON has no NaN
    ]
    scalars = _tensorboard_scalars(tmp_path / metrics.TENSORBOARD_DIR)
    assert sorted(scalars) == sorted(
        [(1, "train/loss", 2.5), (1, "lr", pytest.approx(0.1)), (2, "train/loss", 1.25)]
    )
    with metrics.Writer(tmp_path, tensorboard=False) as w, pytest.raises(ValueError, match="step"):
        w.write(3, {"step": 1.0})


def test_resumed_writer_drops_records_after_the_checkpoint(tmp_path):
    with metrics.Writer(tmp_path, tensorboard=False) as w:
        for s in range(1, 6):
            w.write(s, {"x": s})
    with metrics.Writer(tmp_path, resume_step=3, tensorboard=False) as w:
        w.write(4, {"x": 40})
    steps = [(r["step"], r["x"]) for r in metrics.read_jsonl(tmp_path / metrics.METRICS_FILE)]
    assert steps == [(1, 1), (2, 2), (3, 3), (4, 40)]


def test_disabled_writer_writes_nothing(tmp_path):
    with metrics.Writer(tmp_path / "w", enabled=False) as w:
        w.write(1, {"x": 1.0})
        w.write_batch(0, "abc")
    assert not (tmp_path / "w").exists()


def test_batch_fingerprint_sees_values_shapes_and_dtypes():
    batch = {"image": np.arange(12, dtype=np.float32).reshape(3, 4), "label": np.arange(3)}
    fp = metrics.batch_fingerprint(batch)
    assert fp == metrics.batch_fingerprint({k: v.copy() for k, v in batch.items()})
    changed = {**batch, "label": np.array([0, 1, 3])}
    reshaped = {**batch, "image": batch["image"].reshape(4, 3)}
    retyped = {**batch, "label": batch["label"].astype(np.int32)}
    others = {metrics.batch_fingerprint(b) for b in (changed, reshaped, retyped)}
    assert fp not in others and len(others) == 3


def test_progress_logs_lines_without_a_terminal(caplog):
    caplog.set_level(logging.INFO)
    with progress.Progress(10, bar=False, enabled=True) as p:
        p.update(3)  # no metrics: nothing logged
        p.update(5, {"loss": 0.123456, "acc": None})
    lines = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert lines == ["train step 5/10 (50%): loss=0.1235 acc=nan"]


def test_progress_bar_on_a_terminal(capsys):
    with progress.Progress(10, initial=2, bar=True, enabled=True) as p:
        p.update(7, {"loss": 1.5})
    err = capsys.readouterr().err
    assert "7/10" in err and "loss=1.5" in err
    with progress.Progress(10, bar=True, enabled=False) as p:  # other processes: silent
        p.update(7, {"loss": 1.5})
    assert capsys.readouterr().err == ""
