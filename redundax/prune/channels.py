"""Structured channel pruning: scores, global-threshold masks, lesions, peer replacement, physical
shrinking and FLOPs-matched AUC (recovery fine-tunes and evaluation: `redundax.prune.recovery`).

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (Sec. 4, App. C, F, K.2).

Masks are `{unit name: bool (channels,)}` over the units of a `redundax.prune.graph.ChannelGraph`. A
masked channel has its BatchNorm scale and bias set to zero (`apply_masks`), so the unit outputs
exactly zero there; `shrink` turns a masked network into a smaller dense one with identical outputs.
Scores are "keep" scores: higher means more important, the lowest are pruned first.

The data-based pieces run on the engine's `data` mesh (`redundax.train.mesh`), over all devices
and processes: `lesion_damage` evaluates every lesion through `redundax.prune.recovery.evaluate`
(`make_eval_step` + `evaluate_batches`), and `taylor_scores` gets each calibration batch's
gradient from `evaluate_batches` as a mean of masked per-example gradient sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from redundax.prune import graph as graph_lib
from redundax.prune import recovery
from redundax.prune.graph import ChannelGraph, apply_masks, effective_masks, get_path
from redundax.train import evaluate as evaluate_lib
from redundax.train import mesh as mesh_lib
from redundax.train import step as step_lib

# The paper's 10 channel sparsities (fraction of channels removed), App. C.
SPARSITIES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)

Masks = dict[str, np.ndarray]
Scores = Mapping[str, Any]


# ------------------------------------------------------------------------------------------------
# Masks


def global_threshold_masks(
    graph: ChannelGraph, scores: Scores, sparsity: float, *, min_keep: int = 1
) -> Masks:
    """Prune the `sparsity` fraction of all channels with the lowest scores, across every unit.

    One global ranking over all units' channels (ties broken by unit order, then channel index);
    each unit keeps at least its `min_keep` best channels so that no layer is cut entirely.

    Args:
      graph: the model's channel graph.
      scores: `{unit: (channels,)}` keep scores, comparable across layers.
      sparsity: fraction of channels to remove, in [0, 1).
      min_keep: channels each unit keeps regardless of the threshold.
    """
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"`sparsity` must be in [0, 1); got {sparsity}.")
    if min_keep < 1:
        raise ValueError(f"`min_keep` must be >= 1; got {min_keep}.")
    names = graph.names
    missing = [n for n in names if n not in scores]
    if missing:
        raise ValueError(f"`scores` lacks units {missing}; score every unit of the graph.")
    vals = [np.asarray(scores[n], np.float64).reshape(-1) for n in names]
    for n, v in zip(names, vals, strict=True):
        if v.shape != (graph.spaces[graph.unit(n).dst].width,):
            raise ValueError(f"scores of {n!r} have shape {v.shape}; expected one per channel.")
        if not np.isfinite(v).all():
            raise ValueError(f"scores of {n!r} contain NaN/Inf; clean them before pruning.")
    flat = np.concatenate(vals)
    n_prune = math.floor(sparsity * flat.size)
    order = np.argsort(flat, kind="stable")
    keep = np.ones(flat.size, bool)
    keep[order[:n_prune]] = False
    masks, start = {}, 0
    for n, v in zip(names, vals, strict=True):
        m = keep[start : start + v.size].copy()
        if m.sum() < min(min_keep, v.size):
            m[np.argsort(-v, kind="stable")[: min(min_keep, v.size)]] = True
        masks[n] = m
        start += v.size
    return masks


def channel_sparsity(masks: Mapping[str, np.ndarray]) -> float:
    tot = sum(np.size(m) for m in masks.values())
    return 1.0 - sum(int(np.sum(m)) for m in masks.values()) / tot


# ------------------------------------------------------------------------------------------------
# Weight- and data-based baseline scores


def filters(model, graph: ChannelGraph) -> dict[str, np.ndarray]:
    """`{unit: (channels, kh*kw*c_in/groups)}` flattened conv filters (one row per output channel)."""
    out = {}
    for u in graph.units:
        k = np.asarray(get_path(model, u.conv).kernel[...])
        out[u.name] = np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)
    return out


def magnitude_scores(model, graph: ChannelGraph) -> dict[str, np.ndarray]:
    """l2 norm of each output filter [Li et al., 2017]."""
    return {n: np.linalg.norm(w, axis=1) for n, w in filters(model, graph).items()}


def fpgm_scores(model, graph: ChannelGraph) -> dict[str, np.ndarray]:
    """FPGM [He et al., 2019]: sum of l2 distances to the layer's other filters.

    Filters near the geometric median (small total distance) are the most replaceable by the rest
    and are pruned first. Under one global threshold the sums are not comparable across layers: a
    sum over more peers is larger, so narrow layers (and depthwise units, whose filters are short)
    are pruned first. FPGM itself prunes a fixed fraction per layer; the paper does not say how it
    places FPGM under its global threshold, so this score is used as is.
    """
    out = {}
    for n, w in filters(model, graph).items():
        d = np.sqrt(np.maximum(((w[:, None, :] - w[None, :, :]) ** 2).sum(-1), 0.0))
        out[n] = d.sum(1)
    return out


def bn_scale_scores(model, graph: ChannelGraph) -> dict[str, np.ndarray]:
    """|gamma| of the BatchNorm after each conv (Network Slimming, Liu et al., 2017)."""
    return {u.name: np.abs(np.asarray(get_path(model, u.bn).scale[...])) for u in graph.units}


def random_scores(graph: ChannelGraph, seed: int) -> dict[str, np.ndarray]:
    """Uniform random scores [Li et al., 2022]."""
    rng = np.random.default_rng(seed)
    return {u.name: rng.random(graph.spaces[u.dst].width) for u in graph.units}


def activation_rms_scores(model, graph: ChannelGraph, conv_mean, conv_second) -> dict:
    """RMS over calibration samples and positions of each unit's BatchNorm output (eval mode).

    With a = gamma (y - mu) / sqrt(var + eps) + beta for the pre-BN conv output y, E[a²] follows from
    the first two moments of y: `conv_mean[u]` = E[y], `conv_second[u]` = E[y²] (per channel).
    """
    out = {}
    for u in graph.units:
        bn = get_path(model, u.bn)
        g = np.asarray(bn.scale[...], np.float64)
        b = np.asarray(bn.bias[...], np.float64)
        mu = np.asarray(bn.mean[...], np.float64)
        inv = 1.0 / np.sqrt(np.asarray(bn.var[...], np.float64) + bn.epsilon)
        m1 = np.asarray(conv_mean[u.name], np.float64)
        m2 = np.asarray(conv_second[u.name], np.float64)
        ey = g * inv * (m1 - mu)
        ey2 = (g * inv) ** 2 * (m2 - 2 * m1 * mu + mu * mu)
        out[u.name] = np.sqrt(np.maximum(ey2 + 2 * b * ey + b * b, 0.0))
    return out


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _taylor_step(graph: ChannelGraph, mesh: Mesh):
    """The engine's gradient evaluation step for `taylor_scores`: `{unit: sum_examples
    gamma dl/dgamma + beta dl/dbeta, "count"}` for the per-example cross-entropies l."""
    paths = {u.name: u.bn for u in graph.units}

    def losses(model, batch):
        return optax.softmax_cross_entropy_with_integer_labels(
            model(batch["image"]), batch["label"]
        )

    def contributions(params, grads):
        flat_p, flat_g = dict(nnx.to_flat_state(params)), dict(nnx.to_flat_state(grads))
        return {
            name: flat_p[(*bn, "scale")][...] * flat_g[(*bn, "scale")][...]
            + flat_p[(*bn, "bias")][...] * flat_g[(*bn, "bias")][...]
            for name, bn in paths.items()
        }

    return step_lib.make_gradient_eval_step(losses, contributions, mesh=mesh)


def taylor_scores(
    model,
    graph: ChannelGraph,
    batches: Sequence[tuple[Any, Any]],
    *,
    mesh: Mesh | None = None,
) -> dict[str, np.ndarray]:
    """First-order Taylor importance |sum_positions a * dL/da| of each unit's BN output a
    [Molchanov et al., 2019], averaged over calibration batches (eval-mode BatchNorm).

    Uses gamma dL/dgamma + beta dL/dbeta = sum_positions a dL/da: the first-order change of the loss
    L (mean cross-entropy of one calibration batch) when the channel is masked (its BN scale and
    bias zeroed). Each batch is one global batch, sharded over the `data` mesh through
    `redundax.train.evaluate.evaluate_batches` (padded and masked to a multiple of the device
    count): the gradient of the batch mean is the mean of the per-example gradients, summed over
    devices and processes, so the scores do not depend on the device or process count.

    Args:
      model, graph: the network and its channel graph.
      batches: whole `(images, labels)` calibration batches (the same on every process).
      mesh: the `data` mesh (`redundax.train.mesh.make_data_mesh`); default: all devices.
    """
    if not batches:
        raise ValueError("`batches` is empty; pass at least one (images, labels) batch.")
    mesh = mesh_lib.make_data_mesh() if mesh is None else mesh
    step = _taylor_step(graph, mesh)
    state = recovery.as_state(model, mesh)
    acc = {u.name: 0.0 for u in graph.units}
    for i, (x, y) in enumerate(batches):
        arrays = {"image": np.asarray(x), "label": np.asarray(y)}
        size = len(arrays["label"])
        if size == 0 or len(arrays["image"]) != size:
            raise ValueError(
                f"calibration batch {i} of `batches` has {len(arrays['image'])} images and {size} "
                "labels; every batch needs the same non-zero number of both."
            )
        contrib = evaluate_lib.evaluate_batches(
            step, state, evaluate_lib.array_batches(arrays, size, mesh), batch_size=size, mesh=mesh
        )
        acc = {k: v + np.abs(contrib[k]) for k, v in acc.items()}
    return {k: v / len(batches) for k, v in acc.items()}


# ------------------------------------------------------------------------------------------------
# Lesions, peer replacement


def lesion_damage(
    model,
    graph: ChannelGraph,
    unit: str,
    channels: Sequence[int],
    images,
    labels,
    *,
    batch_size: int = 512,
    mesh: Mesh | None = None,
) -> np.ndarray:
    """Loss increase (eval mode, no fine-tuning) when each listed channel of `unit` is masked alone.

    Every lesion's mean cross-entropy over the whole split comes from one pass of
    `redundax.prune.recovery.evaluate` (the engine's eval step and `evaluate_batches`: batches
    sharded over the `data` mesh, the last one padded and masked, sums over devices and
    processes): its metric holds one per-example loss per lesion (the channel's BN scale and bias
    zeroed) and one for the intact network.

    Args:
      model, graph: the network and its channel graph.
      unit: the unit whose channels are lesioned.
      channels: channel indices of `unit`, each lesioned alone.
      images, labels: the whole split (the same on every process).
      batch_size: global evaluation batch size.
      mesh: the `data` mesh (`redundax.train.mesh.make_data_mesh`); default: all devices.

    Returns:
      `(len(channels),)` mean-loss increases.
    """
    u = graph.unit(unit)
    width = graph.spaces[u.dst].width
    channels = np.asarray(channels, np.int32).reshape(-1)
    if channels.size and (channels.min() < 0 or channels.max() >= width):
        raise ValueError(f"`channels` must index 0..{width - 1} of {unit}; got {channels}.")
    keeps = np.stack([np.ones(width)] + [np.arange(width) != c for c in channels]).astype(
        np.float32
    )
    names = [f"lesion_{i}" for i in range(len(keeps))]  # lesion_0: the intact network

    def metric_fn(model, batch):
        gdef, state = nnx.split(model)

        def one(keep):
            m = nnx.merge(gdef, state, copy=True)
            bn = get_path(m, u.bn)
            bn.scale.set_value(bn.scale[...] * keep)
            bn.bias.set_value(bn.bias[...] * keep)
            return optax.softmax_cross_entropy_with_integer_labels(
                m(batch["image"]), batch["label"]
            )

        losses = jax.lax.map(one, jnp.asarray(keeps))
        return dict(zip(names, losses, strict=True))

    means = recovery.evaluate(
        model, images, labels, batch_size=batch_size, mesh=mesh, metric_fn=metric_fn
    )
    tot = np.array([means[n] for n in names], np.float64)
    return tot[1:] - tot[0]


def peer_replacement(
    model,
    graph: ChannelGraph,
    unit: str,
    channel: int,
    cov,
    mean,
    *,
    peers: int = 8,
    ridge: float = 1e-3,
):
    """A copy of `model` whose channel is replaced by a ridge reconstruction from its top peers.

    The reconstruction y_i ~ a + sum_j b_j y_j from the `peers` same-layer channels most correlated
    with i (pre-BN conv outputs; App. K.2, top-8 peers) is fitted from the calibration covariance
    `cov` `(N, N)` and mean `(N,)` with ridge `ridge * mean(diag)`. A conv is linear in its filters, so
    the replacement is exact surgery: filter i <- sum_j b_j w_j and BN running mean mu_i <- mu_i - a.

    Returns:
      `(replaced_model, r2)`: the edited copy and the reconstruction R² on the calibration moments.
    """
    u = graph.unit(unit)
    if u.depthwise:
        raise ValueError(
            f"{unit} is depthwise: a channel's peers see other inputs, so a filter "
            "edit cannot express the reconstruction."
        )
    cov = np.asarray(cov, np.float64)
    mean = np.asarray(mean, np.float64)
    sd = np.sqrt(np.maximum(np.diag(cov), 1e-30))
    corr = cov / np.outer(sd, sd)
    cand = [j for j in np.argsort(-np.abs(corr[channel]), kind="stable") if j != channel][:peers]
    c_pp = cov[np.ix_(cand, cand)]
    lam = ridge * max(float(np.mean(np.diag(c_pp))), 1e-30)
    b = np.linalg.solve(c_pp + lam * np.eye(len(cand)), cov[cand, channel])
    a = mean[channel] - b @ mean[cand]
    r2 = float(b @ cov[cand, channel] * 2 - b @ c_pp @ b) / max(cov[channel, channel], 1e-30)
    new = nnx.clone(model)
    conv = get_path(new, u.conv)
    k = np.array(conv.kernel[...])
    k[..., channel] = np.tensordot(k[..., cand], b, axes=([-1], [0]))
    conv.kernel.set_value(jnp.asarray(k, conv.kernel[...].dtype))
    bn = get_path(new, u.bn)
    mu = np.asarray(bn.mean[...]).copy()
    mu[channel] -= a
    bn.mean.set_value(jnp.asarray(mu, bn.mean[...].dtype))
    return new, r2


# ------------------------------------------------------------------------------------------------
# Physical shrinking


def shrink(model, graph: ChannelGraph, masks: Mapping[str, np.ndarray]):
    """A smaller dense copy of `model` computing exactly what the masked model computes.

    Every conv keeps the surviving channels of the spaces it reads and writes
    (`redundax.prune.graph.alive`), BatchNorm follows its conv, a depthwise conv keeps one group per
    surviving channel, and the classifier keeps its surviving inputs. Writers of a residual stream keep
    the stream's surviving channels, their own masked ones with zero BN scale and bias, which is
    what makes the outputs identical. A space left with no channel keeps one all-zero channel
    (`redundax.prune.graph.kept_channels`).

    Returns:
      `(small_model, small_graph)`.
    """
    eff = effective_masks(graph, masks)
    new = apply_masks(nnx.clone(model), graph, eff)
    live = {k: np.flatnonzero(v) for k, v in graph_lib.kept_channels(graph, eff).items()}
    # slicing in NumPy, `device_put` back: eager jnp ops would compile once per new shape
    for u in graph.units:
        conv = get_path(new, u.conv)
        out_idx = live[u.dst]
        k = np.asarray(conv.kernel[...])
        if u.depthwise:
            k = k[..., out_idx]
            conv.feature_group_count = len(out_idx)
            conv.in_features = len(out_idx)
        else:
            k = k[:, :, live[u.src], :][..., out_idx]
            conv.in_features = len(live[u.src])
        conv.kernel = nnx.Param(jax.device_put(k))
        conv.out_features = len(out_idx)
        conv.kernel_shape = tuple(k.shape)
        bn = get_path(new, u.bn)
        for attr in ("scale", "bias", "mean", "var"):
            var = getattr(bn, attr)
            setattr(bn, attr, type(var)(jax.device_put(np.asarray(var[...])[out_idx])))
        bn.num_features = len(out_idx)
    for d in graph.dense:
        lin = get_path(new, d.path)
        lin.kernel = nnx.Param(jax.device_put(np.asarray(lin.kernel[...])[live[d.src], :]))
        lin.in_features = len(live[d.src])
    return new, graph_lib.channel_graph(new)


# ------------------------------------------------------------------------------------------------
# FLOPs-matched AUC


def common_interval(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]]):
    """[max of per-method minima, min of per-method maxima] of the FLOPs-pruned fractions."""
    lo = max(float(np.min(x)) for x, _ in curves.values())
    hi = min(float(np.max(x)) for x, _ in curves.values())
    return lo, hi


def curve_auc(x, y, lo: float, hi: float) -> float:
    """Mean of the piecewise-linear curve y(x) over [lo, hi] (area / interval length)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if hi <= lo:
        return float("nan")
    grid = np.unique(np.concatenate([[lo, hi], x[(x > lo) & (x < hi)]]))
    vals = np.interp(grid, x, y)
    return float(np.trapezoid(vals, grid) / (hi - lo))


def flops_matched_auc(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    interval: tuple[float, float] | None = None,
) -> tuple[dict[str, float], tuple[float, float]]:
    """FLOPs-matched accuracy-retention AUC per method over the common FLOPs interval (App. C, F).

    Args:
      curves: `{method: (flops_pruned_fraction, accuracy_retention)}` points of each pruning curve.
      interval: the FLOPs-pruned range to integrate over; default: the common range of all methods.

    Returns:
      `({method: AUC}, (lo, hi))`; AUC is the curve's mean retention over the interval.
    """
    if not curves:
        raise ValueError("`curves` is empty.")
    lo, hi = common_interval(curves) if interval is None else interval
    return {k: curve_auc(x, y, lo, hi) for k, (x, y) in curves.items()}, (lo, hi)


# ------------------------------------------------------------------------------------------------
# Information-based scores (two-axis metrics, `redundax.analysis.channels`)

LOCAL_METHODS = ("ix", "composite_ix", "local_rx", "local_compact")
TARGET_METHODS = ("task_mi", "composite_pid", "pid_no_red")
BASELINE_METHODS = ("magnitude", "taylor", "random", "fpgm", "bn_scale", "act_rms")


def _z(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def information_scores(
    per: Mapping[str, Mapping[str, np.ndarray]], *, alpha: float = 2.0, gamma: float = 0.25
) -> dict[str, dict[str, np.ndarray]]:
    """Keep scores of the local-axis and target-axis families from per-channel metrics.

    z(.) standardises within the layer, so a global threshold compares layers on a common scale.
    The paper fixes Composite-I_X's weights (alpha = 2, gamma = 0.25, no task-MI term, App. C) but
    not its formula; here:

    local axis (replaceability):
      ix:            I_X (already per-layer normalised by sigma0² = median s_i);
      composite_ix:  alpha z(I_X) - gamma z(R_X);
      local_rx:      z(I_X) - z(R_X);
      local_compact: z(I_X) - z(E_full / max(1, |H|))  (Fig. 5 local compact score, as keep score);
    target axis (task-directed PID):
      task_mi:       I(T; Y);
      composite_pid: alpha z(I(T;Y)) - gamma z(Red_T) + gamma z(Syn);
      pid_no_red:    z(I(T;Y)) + z(Syn).
    """
    out: dict[str, dict[str, np.ndarray]] = {k: {} for k in LOCAL_METHODS + TARGET_METHODS}
    for name, m in per.items():
        ix, rx = m["ix"], m["rx"]
        out["ix"][name] = np.asarray(ix, np.float64)
        out["composite_ix"][name] = alpha * _z(ix) - gamma * _z(rx)
        out["local_rx"][name] = _z(ix) - _z(rx)
        out["local_compact"][name] = _z(ix) - _z(m["compact"])
        out["task_mi"][name] = np.asarray(m["task_mi"], np.float64)
        out["composite_pid"][name] = (
            alpha * _z(m["task_mi"]) - gamma * _z(m["red_t"]) + gamma * _z(m["syn"])
        )
        out["pid_no_red"][name] = _z(m["task_mi"]) + _z(m["syn"])
    return out
