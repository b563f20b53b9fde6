"""Single-channel lesions, peer replacement and how well channel scores predict lesion damage.

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (Sec. 4.1, App. K.2).

`lesion_probe` picks `layers` depth-spaced non-depthwise units, `channels` random channels of
each, and measures for every channel: the test-loss increase when it is masked alone
(`redundax.prune.channels.lesion_damage`), the increase when it is instead replaced by a ridge
reconstruction from its top `peers` peers (`redundax.prune.channels.peer_replacement`), and the
channel's two-axis metrics. It then reports, per score, the within-unit Spearman correlation of
"safer to remove" with lower damage (averaged over units), and over the nontrivial lesions (damage
above `threshold`) the fraction of damage peer replacement recovers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from jax.sharding import Mesh
from scipy import stats as sstats

from redundax.prune import channels as pc
from redundax.prune import recovery
from redundax.prune.graph import ChannelGraph


def lesion_units(graph: ChannelGraph, layers: int) -> list:
    """`layers` depth-spaced units (evenly over the non-depthwise units at least 4 wide)."""
    units = [u for u in graph.units if not u.depthwise and graph.spaces[u.dst].width >= 4]
    if not units:
        raise ValueError("the graph has no non-depthwise unit of width >= 4 to lesion.")
    picks = np.unique(np.round(np.linspace(0, len(units) - 1, layers)).astype(int))
    return [units[i] for i in picks]


def score_sets(rows: list[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """ "Safer to remove" scores of lesioned channels: -I_X, H, z(-I_X) + z(H), peer R_X, -task MI."""
    z = lambda v: (v - v.mean()) / (v.std() or 1)
    ix, h = np.array([r["ix"] for r in rows]), np.array([r["compact"] for r in rows])
    return {
        "-I_X": -ix,
        "H": h,
        "-I_X+H": z(-ix) + z(h),
        "peer": np.array([r["rx"] for r in rows]),
        "-task_MI": -np.array([r["task_mi"] for r in rows]),
    }


def summarise(rows: list[Mapping[str, Any]], threshold: float) -> dict[str, Any]:
    """Score/damage rank agreement per unit (averaged) and peer-replacement recovery."""
    agree: dict[str, list] = {}
    for unit in dict.fromkeys(r["unit"] for r in rows):
        sub = [r for r in rows if r["unit"] == unit]
        neg = -np.array([r["damage"] for r in sub])
        for k, v in score_sets(sub).items():
            if np.ptp(v) > 0 and np.ptp(neg) > 0:
                agree.setdefault(k, []).append(sstats.spearmanr(v, neg).statistic)
    out: dict[str, Any] = {
        "spearman_with_lower_damage": {k: float(np.mean(v)) for k, v in agree.items()}
    }
    nontriv = [r for r in rows if r["damage"] > threshold]
    if nontriv:
        rec = np.array([(r["damage"] - r["replace_damage"]) / r["damage"] for r in nontriv])
        out["replacement"] = {
            "n": len(nontriv),
            "median_recovery": float(np.median(rec)),
            "peer_helps": float(np.mean(rec > 0)),
        }
        if len(nontriv) >= 3:
            for key, name in (
                ("peer_r2", "rho_peer_r2_recovery"),
                ("task_mi", "rho_task_mi_recovery"),
            ):
                out["replacement"][name] = float(
                    sstats.spearmanr([r[key] for r in nontriv], rec).statistic
                )
    return out


def lesion_probe(
    model,
    graph: ChannelGraph,
    per: Mapping[str, Mapping[str, np.ndarray]],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    layers: int,
    channels: int,
    peers: int,
    threshold: float,
    rng: np.random.Generator,
    mesh: Mesh | None = None,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Lesion and peer-replacement rows and their summary (module docstring).

    Args:
      model, graph: the trained network and its channel graph.
      per: per-unit metrics of `redundax.analysis.channels.compute_metrics` (`cov`, `conv_mean`,
        `ix`, `task_mi`, `compact`, `rx`).
      images, labels: the split the damage is measured on (test split in the paper).
      layers, channels, peers, threshold: units lesioned, channels per unit, peers of a
        replacement, the damage above which a lesion counts as nontrivial.
      rng: draws the channels.
      mesh, batch_size: the `data` mesh (default: all devices) and the global batch size of every
        evaluation (lesions and replacements).

    Returns:
      `{"rows": [...], "spearman_with_lower_damage": {...}, "replacement": {...}}`.
    """
    if layers < 1 or channels < 1 or peers < 1:
        raise ValueError(
            f"`layers`, `channels` and `peers` must be >= 1; got {layers}, {channels}, {peers}."
        )
    evaluate = lambda m: recovery.evaluate(m, images, labels, batch_size=batch_size, mesh=mesh)
    base = evaluate(model)["loss"]
    rows = []
    for u in lesion_units(graph, layers):
        width = graph.spaces[u.dst].width
        chans = np.sort(rng.choice(width, min(channels, width), replace=False))
        dmg = pc.lesion_damage(
            model, graph, u.name, chans, images, labels, batch_size=batch_size, mesh=mesh
        )
        m = per[u.name]
        for c, d in zip(chans, dmg, strict=True):
            rep, r2 = pc.peer_replacement(
                model, graph, u.name, int(c), m["cov"], m["conv_mean"], peers=peers
            )
            rows.append(
                {
                    "unit": u.name,
                    "channel": int(c),
                    "damage": float(d),
                    "replace_damage": float(evaluate(rep)["loss"] - base),
                    "peer_r2": r2,
                    **{k: float(m[k][c]) for k in ("ix", "task_mi", "compact", "rx")},
                }
            )
    return {"rows": rows, **summarise(rows, threshold)}
