"""The pruning-method registry: every channel-scoring method of the paper by name.

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (Sec. 4, App. C).

`METHODS` maps a method name to a scorer `f(inputs) -> {unit: (channels,) keep scores}`;
`method_scores(methods, inputs)` scores every listed method. `ScoreInputs` carries what any method
may read: the trained model and its channel graph, the per-unit two-axis metrics
(`redundax.analysis.channels.compute_metrics`), the calibration arrays, a seed and the `data` mesh
that data-based scores run on.

- baselines (`BASELINE_METHODS`): `magnitude` (filter l2 norm), `fpgm` (distance to the other
  filters), `bn_scale` (|gamma|), `random`, `act_rms` (BN-output RMS from the calibration moments),
  `taylor` (first-order Taylor on `taylor_batches` calibration batches, sharded over `mesh`);
- local axis (`LOCAL_METHODS`) and target axis (`TARGET_METHODS`):
  `redundax.prune.channels.information_scores` with weights `alpha`, `gamma`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from jax.sharding import Mesh

from redundax.prune import channels as pc
from redundax.prune.graph import ChannelGraph


@dataclasses.dataclass(frozen=True)
class ScoreInputs:
    """What a scoring method may read (module docstring)."""

    model: Any
    graph: ChannelGraph
    per: Mapping[str, Mapping[str, np.ndarray]]
    calib: tuple[np.ndarray, np.ndarray]
    seed: int = 0
    alpha: float = 2.0
    gamma: float = 0.25
    taylor_batches: int = 4
    batch_size: int = 256
    mesh: Mesh | None = None  # the `data` mesh of data-based scores (default: all devices)


def _taylor(s: ScoreInputs) -> dict[str, np.ndarray]:
    images, labels = s.calib
    bs = s.batch_size
    n = min(s.taylor_batches, max(1, len(labels) // bs))
    batches = [(images[i * bs : (i + 1) * bs], labels[i * bs : (i + 1) * bs]) for i in range(n)]
    return pc.taylor_scores(s.model, s.graph, batches, mesh=s.mesh)


def _act_rms(s: ScoreInputs) -> dict[str, np.ndarray]:
    return pc.activation_rms_scores(
        s.model,
        s.graph,
        {k: v["conv_mean"] for k, v in s.per.items()},
        {k: v["conv_second"] for k, v in s.per.items()},
    )


def _information(name: str) -> Callable[[ScoreInputs], dict[str, np.ndarray]]:
    return lambda s: pc.information_scores(s.per, alpha=s.alpha, gamma=s.gamma)[name]


METHODS: dict[str, Callable[[ScoreInputs], dict[str, np.ndarray]]] = {
    "magnitude": lambda s: pc.magnitude_scores(s.model, s.graph),
    "taylor": _taylor,
    "random": lambda s: pc.random_scores(s.graph, s.seed),
    "fpgm": lambda s: pc.fpgm_scores(s.model, s.graph),
    "bn_scale": lambda s: pc.bn_scale_scores(s.model, s.graph),
    "act_rms": _act_rms,
    **{name: _information(name) for name in pc.LOCAL_METHODS + pc.TARGET_METHODS},
}


def method_scores(methods: Sequence[str], inputs: ScoreInputs) -> dict[str, dict[str, np.ndarray]]:
    """`{method: {unit: keep scores}}` for every name of `methods` (module docstring)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(
            f"unknown pruning method(s) {unknown} in `methods`; choose from {sorted(METHODS)}."
        )
    return {m: METHODS[m](inputs) for m in methods}
