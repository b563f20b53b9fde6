"""Label-free redundancy monitoring of any Flax NNX model's layers.

Capture the outputs of the modules `where` selects (`capture`, with `nnx.capture`), accumulate their
`redundax.functionals.Moments` over batches, devices and hosts (`measure`), and report named metrics
of them (`metrics`): spectral redundancy, effective rank, spectral entropy, Gaussian total
correlation, chi-square redundancy, RankMe, alpha-ReQ and the sample count.

    from redundax import monitor
    results = monitor.measure(model, batches, where=nnx.Linear, metrics=("effective_rank", "rankme"))
    # {"blocks.0.mlp.fc1": {"effective_rank": 41.3, "rankme": 52.0, "undersampled": 0.0}, ...}

`monitor.evaluator(held_out, where=...)` is the same measurement for `redundax.train.loop.train`;
`monitor.from_samples(z, names)` the metrics of one representation matrix.
"""

from redundax.monitor.capture import MonitorOutput, capture_outputs, default_apply, select
from redundax.monitor.evaluator import evaluator, flatten, history
from redundax.monitor.metrics import (
    DEFAULT_METRICS,
    METRICS,
    RANKME_EPS,
    from_moments,
    from_samples,
)
from redundax.monitor.streaming import accumulate, measure

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "RANKME_EPS",
    "MonitorOutput",
    "accumulate",
    "capture_outputs",
    "default_apply",
    "evaluator",
    "flatten",
    "from_moments",
    "from_samples",
    "history",
    "measure",
    "select",
]
