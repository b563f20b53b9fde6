"""Two-axis channel metrics of a trained CNN over a fixed calibration set, and their summaries.

Reference: Safaai et al., "Task Relevance Is Not Local Replaceability" (Sec. 2, App. A, C, K, L).

One frozen forward pass (eval-mode BatchNorm) over a fixed calibration subset of the training split,
whose indices are saved (`calibration_indices`, `save_indices`), streams mergeable moments for every
conv of a `redundax.prune.graph.ChannelGraph`:

- `spatial`: the pre-BN conv output Y, images x positions as samples (local axis: R_X, hulls, R-graph);
- `pooled`: [GAP(Y), T] with T = f_z(x) - max_{c != z} f_c(x) the ground-truth logit margin
  (target axis: task MI, Red_T, Syn, S-graph, triplets);
- optionally `patches`: the unfolded conv input patches, whose covariance is Sigma_X of eq. 1.

The signal power s_i = w_i^T Sigma_X w_i equals the variance of Y_i over the same samples (a conv is
w_i applied to each patch), so I_X is computed from `spatial` by default; `patches=True` evaluates
eq. 1 through Sigma_X itself (same numbers up to round-off, at O(k²) memory per layer).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from scipy import stats as sstats

from redundax.functionals import Moments
from redundax.functionals import channels as fch
from redundax.functionals.moments import self_gram
from redundax.prune import graph as graph_lib
from redundax.prune.flops import captured
from redundax.train import evaluate as evaluate_lib
from redundax.train import mesh as mesh_lib
from redundax.train.progress import track

LOCAL = ("ix", "rx", "w_norm2")
TARGET = ("task_mi", "red_t", "syn")
METRICS = LOCAL + TARGET


# ------------------------------------------------------------------------------------------------
# Calibration set


def calibration_indices(num_examples: int, size: int, seed: int = 0) -> np.ndarray:
    """A fixed, sorted random subset of `size` indices of `range(num_examples)`."""
    if not 0 < size <= num_examples:
        raise ValueError(f"calibration `size` must be in [1, {num_examples}]; got {size}.")
    return np.sort(np.random.default_rng(seed).choice(num_examples, size, replace=False))


def save_indices(path, indices: np.ndarray, **meta) -> None:
    pathlib.Path(path).write_text(json.dumps({"indices": np.asarray(indices).tolist(), **meta}))


def load_indices(path) -> np.ndarray:
    return np.asarray(json.loads(pathlib.Path(path).read_text())["indices"], np.int64)


# ------------------------------------------------------------------------------------------------
# Streaming statistics


def logit_margin(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """T = f_z(x) - max_{c != z} f_c(x): ground-truth logit margin (Sec. 2.1)."""
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
    other = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return true - jnp.max(other, axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LayerStats:
    spatial: Moments
    pooled: Moments
    patches: Moments | None = None


def conv_patches(x: jax.Array, conv) -> jax.Array:
    """Unfolded input patches of `conv` for input `x` (b, H, W, C) -> (b*h*w, k) in filter order.

    Non-depthwise: k = kh*kw*C ordered (kh, kw, C) like `conv.kernel[..., i].reshape(-1)`.
    Depthwise: `(C, b*h*w, kh*kw)`, one patch matrix per channel.
    """
    kh, kw = conv.kernel_size
    pad = conv.padding
    p = jax.lax.conv_general_dilated_patches(
        x,
        (kh, kw),
        tuple(conv.strides) if conv.strides else (1, 1),
        pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )  # (b, h, w, C*kh*kw) ordered (C, kh, kw)
    c = x.shape[-1]
    p = p.reshape(-1, c, kh * kw)
    if conv.feature_group_count > 1:
        return jnp.swapaxes(p, 0, 1)
    return jnp.swapaxes(p, 1, 2).reshape(p.shape[0], kh * kw * c)


def masked_moments(x: jax.Array, weight: jax.Array) -> Moments:
    """`Moments` of the samples of `x` `(..., n, d)` whose `weight` `(n,)` is 1 (0: padding).

    With every weight 1 this is `Moments.from_samples(x)`; under `jit` with `x` sharded over a
    mesh's sample axis the sums are global (XLA reduces across devices).
    """
    w = weight.astype(x.dtype)
    count = jnp.sum(w)
    mean = jnp.sum(x * w[:, None], axis=-2) / count
    xc = (x - mean[..., None, :]) * w[:, None]
    return Moments(count=jnp.full(x.shape[:-2], count, x.dtype), mean=mean, comoment=self_gram(xc))


def _pad_rows(v: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([v, np.zeros((size - len(v), *v.shape[1:]), v.dtype)])


def _padded_batches(images, labels, batch_size: int, mesh) -> Iterator[tuple]:
    """This process's parts of fixed-size global batches, the last one padded, with a mask."""
    arrays = {"image": images, "label": labels}
    size = max(1, min(batch_size, len(labels)))
    local = -(-size // mesh.size) * mesh.size // jax.process_count()
    for part in evaluate_lib.array_batches(arrays, size, mesh):
        valid = len(part["label"])
        yield (
            _pad_rows(part["image"], local),
            _pad_rows(part["label"], local),
            np.arange(local) < valid,
        )


def extract_stats(
    model,
    graph: graph_lib.ChannelGraph,
    images,
    labels,
    *,
    batch_size: int = 250,
    patches: bool = False,
    mesh: Mesh | None = None,
    desc: str | None = None,
) -> dict[str, LayerStats]:
    """Stream per-unit moments over (images, labels) in eval mode (module docstring).

    Batches are sharded over `mesh`'s `data` axis (default: every device), the last one padded
    and masked; every statistic is a global-batch one, so the result does not depend on the device
    or process count beyond float reassociation. `desc` names a progress bar over the batches.
    """
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    if len(images) != len(labels) or len(images) < 2:
        raise ValueError(
            f"`images` and `labels` need the same length >= 2; got {len(images)} and {len(labels)}."
        )
    mesh = mesh_lib.make_data_mesh() if mesh is None else mesh
    gdef, state = nnx.split(nnx.view(model, use_running_average=True))
    state = mesh_lib.replicate(state, mesh)
    convs = {u.name: graph_lib.get_path(model, u.conv) for u in graph.units}
    tap = {u.name: (*u.conv[:-1], "conv_in", "__call__") for u in graph.units}

    def batch_stats(state, x, y, w):
        m = nnx.merge(gdef, state)
        logits, inter = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        flat = captured(inter)
        t = logit_margin(logits, y)
        out = {}
        for u in graph.units:
            act = flat[(*u.conv, "__call__")]
            n = act.shape[-1]
            pooled = jnp.concatenate([jnp.mean(act, axis=(1, 2)), t[:, None]], axis=1)
            pm = None
            if patches:
                if tap[u.name] not in flat:
                    raise ValueError(
                        f"{u.name}: the conv input is not captured (no `conv_in` tap); "
                        "use patches=False (identical I_X from output variances)."
                    )
                pt = conv_patches(flat[tap[u.name]], convs[u.name])
                pm = masked_moments(pt, jnp.repeat(w, pt.shape[-2] // len(w)))
            positions = act.shape[1] * act.shape[2]
            out[u.name] = LayerStats(
                masked_moments(act.reshape(-1, n), jnp.repeat(w, positions)),
                masked_moments(pooled, w),
                pm,
            )
        return out

    replicated = mesh_lib.replicated_sharding(mesh)

    @functools.partial(jax.jit, out_shardings=replicated)
    def step(carry, state, x, y, w):
        new = batch_stats(state, x, y, w)
        return jax.tree.map(
            lambda a, b: a.merge(b), carry, new, is_leaf=lambda z: isinstance(z, Moments)
        )

    first = jax.jit(batch_stats, out_shardings=replicated)
    carry = None
    batches = list(_padded_batches(images, labels, batch_size, mesh))
    for x, y, w in track(batches, desc=desc or "channel statistics"):
        x, y, w = mesh_lib.shard_batch((x, y, w), mesh)
        carry = first(state, x, y, w) if carry is None else step(carry, state, x, y, w)
    return jax.tree.map(lambda a: jnp.asarray(mesh_lib.to_host(a)), carry)


# ------------------------------------------------------------------------------------------------
# Per-layer metrics


def unit_filters(model, unit: graph_lib.Unit) -> np.ndarray:
    """`(channels, kh*kw*c_in/groups)` filters, flattened in (kh, kw, c_in) order."""
    k = np.asarray(graph_lib.get_path(model, unit.conv).kernel[...])  # (kh, kw, cin/g, out)
    return np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)


@dataclasses.dataclass(frozen=True)
class MetricConfig:
    m: int = 10
    hull_eps: float = 0.05
    hull_cap: int = 10
    hull_pool: int | None = None
    triplet_top: int = 24
    max_triplets: int = 1500
    top_fraction: float = 0.1
    seed: int = 0


def bucket(n: int, minimum: int = 32) -> int:
    """Padded layer width: the next power of two (at least `minimum`), to share compilations."""
    return max(minimum, 1 << (max(n, 1) - 1).bit_length())


@functools.partial(jax.jit, static_argnames=("m", "eps", "cap", "pool"))
def _layer_core(corr_sp, corr_p, r_t, s, n_real, *, m, eps, cap, pool):
    """Per-channel metrics of one layer on width-padded statistics (padding: independent channels).

    Padded channels have zero correlation with everything and zero signal power, so they add
    nothing to any sum, are never a hull member (zero gain), never beat a real channel as a
    task-MI partner (ties go to the lower index), and are excluded from sigma0²'s median.
    """
    rgraph = fch.redundancy_graph_from_corr(corr_sp)
    task_mi = fch.task_mi_from_corr(r_t)
    sgraph = fch.synergy_graph_from_corr(corr_p, r_t)
    idx = fch.top_partners(task_mi, m)
    hulls = fch.greedy_hulls(corr_sp, eps=eps, cap=cap, pool=pool)
    return {
        "ix": fch.input_capture_from_power(s),
        "rx": jnp.sum(rgraph, axis=-1) / (n_real - 1),
        "task_mi": task_mi,
        "red_t": jnp.mean(jnp.minimum(task_mi[:, None], task_mi[idx]), axis=-1),
        "syn": jnp.mean(jnp.take_along_axis(sgraph, idx, axis=-1), axis=-1),
        "e_full": hulls.e_full,
        "hull_size": hulls.size,
        "compact": fch.compact_hull_score(hulls.e_full, hulls.size),
        "rgraph": rgraph,
        "sgraph": sgraph,
    }


def _pad(a: np.ndarray, size: int, diag: float = 0.0) -> np.ndarray:
    a = np.asarray(a, np.float32)
    if a.ndim == 1:
        return np.pad(a, (0, size - a.shape[0]))
    out = np.pad(a, ((0, size - a.shape[0]), (0, size - a.shape[1])))
    out[np.arange(a.shape[0], size), np.arange(a.shape[0], size)] = diag
    return out


@jax.jit
def _layer_moments(spatial: Moments, pooled: Moments):
    """Covariance and correlation of the spatial samples, correlation of [GAP(Y), T] (one program)."""
    return spatial.covariance(), spatial.correlation(), pooled.correlation()


def layer_metrics(model, unit: graph_lib.Unit, st: LayerStats, cfg: MetricConfig = MetricConfig()):
    """Per-channel metrics `{name: (N,)}` and layer summaries `{name: float}` of one unit."""
    cov, corr_sp, pooled = (np.asarray(a) for a in _layer_moments(st.spatial, st.pooled))
    cov = cov.astype(np.float64)
    var = np.diag(cov).copy()
    w = unit_filters(model, unit)
    if st.patches is not None:
        s = np.asarray(fch.signal_power(jnp.asarray(w), st.patches.covariance()))
    else:
        s = var
    corr_p, r_t = pooled[:-1, :-1], pooled[:-1, -1]
    n = corr_sp.shape[-1]
    mean = np.asarray(st.spatial.mean, np.float64)
    count = float(st.spatial.count)
    out = {
        "s": s,
        "w_norm2": (w * w).sum(1),
        "conv_mean": mean,
        "conv_second": var * (count - 1) / count + mean**2,
        "valid": var > 0,
    }
    out["rq"] = s / np.maximum(out["w_norm2"], 1e-30)
    summary: dict[str, float] = {"channels": float(n)}
    if n < 2:
        out["ix"] = np.asarray(fch.input_capture_from_power(jnp.asarray(s)))
        for k in ("rx", "task_mi", "red_t", "syn", "e_full", "compact"):
            out[k] = np.zeros(n)
        out["hull_size"] = np.zeros(n, np.int32)
        out["cov"] = cov
        return out, summary
    size = bucket(n)
    cap = min(cfg.hull_cap, n - 1 if cfg.hull_pool is None else min(cfg.hull_pool, n - 1))
    core = _layer_core(
        _pad(corr_sp, size, 1.0),
        _pad(corr_p, size, 1.0),
        _pad(r_t, size),
        _pad(s, size),
        jnp.float32(n),
        m=min(cfg.m, n - 1),
        eps=cfg.hull_eps,
        cap=cap,
        pool=None if cfg.hull_pool is None else min(cfg.hull_pool, size - 1),
    )
    core = {k: np.asarray(v) for k, v in core.items()}
    for k in ("ix", "rx", "task_mi", "red_t", "syn", "e_full", "hull_size", "compact"):
        out[k] = core[k][:n]
    summary.update(
        hull_mean=float(np.mean(out["hull_size"])),
        hull_singleton=float(np.mean(out["hull_size"] == 1)),
        hull_saturated=float(np.mean(out["hull_size"] >= cap)),
        q_r=fch.graph_modularity(core["rgraph"][:n, :n], cfg.top_fraction),
        q_s=fch.graph_modularity(core["sgraph"][:n, :n], cfg.top_fraction),
    )
    if n >= 3:
        tri = fch.triplet_excess_from_corr(
            jnp.asarray(corr_p),
            jnp.asarray(r_t),
            top=cfg.triplet_top,
            max_triplets=cfg.max_triplets,
            seed=cfg.seed,
        )
        summary["s3_s2"] = float(tri.ratio)
    out["cov"] = cov
    return out, summary


def compute_metrics(
    model, graph, stats: Mapping[str, LayerStats], cfg: MetricConfig = MetricConfig()
):
    """`({unit: per-channel metrics}, {unit: layer summary})` for every unit."""
    per, summ = {}, {}
    for u in graph.units:
        per[u.name], summ[u.name] = layer_metrics(model, u, stats[u.name], cfg)
    return per, summ


# ------------------------------------------------------------------------------------------------
# Summaries: Spearman, ARI vs permutation null, propagation


def zscore(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def spearman_matrix(metrics: Mapping[str, np.ndarray], names: Sequence[str] = METRICS):
    """Within-layer Spearman matrix among `names` over valid (non-constant) channels; NaN if < 3."""
    valid = np.asarray(metrics.get("valid", np.ones(len(metrics[names[0]]), bool)))
    k = len(names)
    out = np.full((k, k), np.nan)
    if valid.sum() < 3:
        return out
    cols = np.stack([np.asarray(metrics[n])[valid] for n in names], 1)
    for i in range(k):
        for j in range(k):
            a, b = cols[:, i], cols[:, j]
            if np.ptp(a) > 0 and np.ptp(b) > 0:
                out[i, j] = sstats.spearmanr(a, b).statistic
    return out


def ari_vs_null(local, target, *, k: int = 3, n_perm: int = 200, seed: int = 0) -> dict[str, float]:
    """ARI between k-means clusterings of local and target features, and its permutation null.

    Features are z-scored within the layer; k-means (k clusters, 4 restarts). The null permutes
    channels' target labels relative to their local labels (App. E, C1).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    local = np.column_stack([zscore(c) for c in np.asarray(local, np.float64).T])
    target = np.column_stack([zscore(c) for c in np.asarray(target, np.float64).T])
    n = len(local)
    if n < 2 * k:
        return {
            "ari": float("nan"),
            "null_mean": float("nan"),
            "null_p95": float("nan"),
            "p": float("nan"),
        }
    la = KMeans(k, n_init=4, random_state=seed).fit_predict(local)
    lb = KMeans(k, n_init=4, random_state=seed).fit_predict(target)
    ari = adjusted_rand_score(la, lb)
    rng = np.random.default_rng(seed)
    null = np.array([adjusted_rand_score(la, rng.permutation(lb)) for _ in range(n_perm)])
    return {
        "ari": float(ari),
        "null_mean": float(null.mean()),
        "null_p95": float(np.quantile(null, 0.95)),
        "p": float((1 + np.sum(null >= ari)) / (1 + n_perm)),
    }


def propagation(
    model,
    graph,
    per: Mapping[str, Mapping[str, np.ndarray]],
    names: Sequence[str] = ("ix", "rx", "task_mi", "syn"),
) -> dict:
    """Eq. 13 propagation: Spearman(m_bar_s, m_d) for consecutive unit pairs (producer -> reader).

    Returns `{"matrix": (S, D) mean over pairs, "pairs": count}`; only pairs whose destination reads
    a single-writer space directly (non-depthwise) are used.
    """
    mats = []
    for u in graph.units:
        src = graph.producer(u)
        if src is None:
            continue
        kern = np.asarray(graph_lib.get_path(model, u.conv).kernel[...])
        mat = np.full((len(names), len(names)), np.nan)
        for i, a in enumerate(names):
            routed = np.asarray(fch.weight_routed_metric(kern, per[src.name][a]))
            for j, b in enumerate(names):
                d = np.asarray(per[u.name][b])
                if np.ptp(routed) > 0 and np.ptp(d) > 0 and len(d) >= 3:
                    mat[i, j] = sstats.spearmanr(routed, d).statistic
        mats.append(mat)
    if not mats:
        return {"names": list(names), "matrix": np.full((len(names),) * 2, np.nan), "pairs": 0}
    return {"names": list(names), "matrix": np.nanmean(np.stack(mats), 0), "pairs": len(mats)}


def alignment_summary(
    per: Mapping[str, Mapping[str, np.ndarray]],
    *,
    k: int = 3,
    n_perm: int = 200,
    seed: int = 0,
    min_channels: int = 8,
) -> dict:
    """Within-layer rho(I_X, I(T;Y)), the full Spearman matrix and ARI vs null, over layers."""
    rhos, aris, nulls, p95s, ps, mats = [], [], [], [], [], []
    for name, m in per.items():
        valid = np.asarray(m["valid"])
        if valid.sum() < min_channels:
            continue
        mat = spearman_matrix(m, METRICS)
        mats.append(mat)
        rhos.append(mat[0, 3])
        loc = np.column_stack([m["ix"], m["rx"]])[valid]
        tgt = np.column_stack([m["task_mi"], m["syn"]])[valid]
        a = ari_vs_null(loc, tgt, k=k, n_perm=n_perm, seed=seed)
        aris.append(a["ari"])
        nulls.append(a["null_mean"])
        p95s.append(a["null_p95"])
        ps.append(a["p"])
        del name
    if not mats:
        return {"layers": 0}
    return {
        "layers": len(mats),
        "rho_ix_taskmi_mean": float(np.nanmean(rhos)),
        "rho_ix_taskmi_sd": float(np.nanstd(rhos)),
        "rho_taskmi_redt_mean": float(np.nanmean([mm[3, 4] for mm in mats])),
        "ari_mean": float(np.nanmean(aris)),
        "ari_null_mean": float(np.nanmean(nulls)),
        "ari_null_p95_mean": float(np.nanmean(p95s)),
        "frac_layers_p_gt_005": float(np.mean(np.asarray(ps) > 0.05)),
        "spearman_names": list(METRICS),
        "spearman_mean": np.nanmean(np.stack(mats), 0).tolist(),
    }


def paired_bootstrap(
    diffs: Sequence[float], *, n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Mean of paired per-seed differences and its percentile bootstrap CI (App. F, Table 9)."""
    d = np.asarray(diffs, np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, d.size, (n_boot, d.size))].mean(1)
    a = (1 - level) / 2
    return {
        "mean": float(d.mean()),
        "lo": float(np.quantile(boots, a)),
        "hi": float(np.quantile(boots, 1 - a)),
        "n": int(d.size),
    }
