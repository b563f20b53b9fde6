"""Progress without a terminal: every phase of the channels and layers experiments and each group
of a sweep logs periodic lines `<phase> step k/n (p%)`, reaching n/n."""

from __future__ import annotations

import logging
import re

import pytest

from redundax.train.progress import track


def _steps(caplog, desc: str) -> list[tuple[int, int]]:
    """(k, n) of every progress line of the phase `desc`."""
    pattern = re.compile(rf"^{re.escape(desc)} step (\d+)/(\d+) \(\d+%\)")
    found = (pattern.match(r.getMessage()) for r in caplog.records)
    return [(int(m[1]), int(m[2])) for m in found if m]


def test_track_logs_every_tenth_and_the_end(caplog):
    caplog.set_level(logging.INFO)
    assert list(track(range(25), desc="phase", bar=False)) == list(range(25))
    assert _steps(caplog, "phase") == [
        (k, 25) for k in (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25)
    ]


def test_channels_smoke_logs_training_and_pruning_progress(caplog, tmp_path):
    from configs.channels import get_config
    from experiments import channels as exp

    caplog.set_level(logging.INFO)
    c = get_config("smoke")
    c.archs = c.archs[:1]  # resnet18
    c.prune.methods = ("magnitude", "random")
    c.latency.enabled = False
    c.run.log_every = 2
    exp.run(c, tmp_path)
    train = _steps(caplog, "resnet18/seed42 train")
    assert len(train) >= 2 and train[-1][0] == train[-1][1]  # periodic, up to the last step
    assert _steps(caplog, "seed 42 pruning curves") == [(1, 2), (2, 2)]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for phase in ("train", "metrics", "alignment", "lesions", "scores", "pruning"):
        assert f"resnet18/seed42: {phase} took" in messages


def test_layers_smoke_logs_every_phase(caplog, tmp_path):
    from configs.layers import get_config
    from experiments import layers as exp
    from redundax.models import hf_loader

    try:
        hf_loader.minilm_dir()
    except ValueError as error:
        pytest.skip(str(error))
    caplog.set_level(logging.INFO)
    c = get_config("smoke")
    exp.run(c, tmp_path)
    batches = c.data.num_calibration // c.scores.batch_size
    criteria = len(c.prune.criteria)
    for phase, n in (
        ("layer scores", batches),
        ("covariance spectra", batches),
        ("pruning criteria", criteria),
    ):
        assert _steps(caplog, phase)[-1] == (n, n), phase
    recovery = [r.getMessage() for r in caplog.records if r.getMessage().startswith("recovery/")]
    assert any(re.match(r"recovery/\S+ step 2/2 \(100%\): .*loss=", m) for m in recovery), recovery
