"""MAE redundancy-balance sweep (Bi, Zhu & Calhoun, 2025, Sec. 4-5, eq. 2, Table 2, Figs. 1-2).

    python -m experiments.mae --config configs/mae.py --workdir runs/mae

Trains a masked autoencoder with L = L_recon + lambda_red R_spec(Z) (eq. 2) for every lambda_red in
``sweep.lambdas`` and every seed in ``sweep.seeds`` (members share the data order; initialisation
and masking noise come from the seed), logs R_spec, effective rank, R_chi2 and the Gaussian total
correlation of Z on a fixed held-out batch each epoch, probes the frozen encoder linearly, and
writes Table 2 (``results.json``, ``results.md``) with two baselines (a linear probe on raw pixels
and on the encoder at its random initialisation), an R* estimate, Figure 1 and Figure 2.

Sections: config validation, data, model and optimiser, the per-member program, baselines,
results and R*, main.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from ml_collections import ConfigDict

from redundax import sweep
from redundax.functionals import (
    chi2_redundancy,
    effective_rank,
    gaussian_total_correlation,
    spectral_redundancy,
)
from redundax.models.mae import MAE, Z_MODES, mae_config, num_kept, objective, representation
from redundax.probe import linear_probe

log = logging.getLogger("experiments.mae")

# --------------------------------------------------------------------------------------------------
# Config validation (before anything is built or trained)
# --------------------------------------------------------------------------------------------------


def _fail(field: str, message: str) -> None:
    raise ValueError(f"config.{field}: {message}")


def validate_config(config: ConfigDict) -> None:
    """Raise ``ValueError`` naming the offending config field, before any training."""
    from redundax.data import dataset_info, known_datasets

    if config.data.name not in known_datasets():
        _fail("data.name", f"unknown dataset {config.data.name!r}; known: {known_datasets()}.")
    spec = dataset_info(config.data.name)
    lambdas = list(config.sweep.lambdas)
    if not lambdas:
        _fail("sweep.lambdas", "the lambda grid is empty; give at least one value, e.g. "
              "--config.sweep.lambdas='(0.0, 0.01)'.")
    for lam in lambdas:
        if not isinstance(lam, int | float) or not math.isfinite(lam) or lam < 0:
            _fail("sweep.lambdas", f"every lambda must be a finite number >= 0; got {lam!r}.")
    if len(set(lambdas)) != len(lambdas):
        _fail("sweep.lambdas", f"values must be distinct; got {lambdas}.")
    seeds = list(config.sweep.seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        _fail("sweep.seeds", f"give at least one integer seed; got {seeds}.")
    if len(set(seeds)) != len(seeds):
        _fail("sweep.seeds", f"seeds must be distinct; got {seeds}.")
    if config.sweep.shard_members and not config.sweep.vectorize:
        _fail("sweep.shard_members", "sharding the member axis needs sweep.vectorize=True.")
    ratio = config.mask_ratio
    if not isinstance(ratio, int | float) or not 0.0 < ratio < 1.0:
        _fail("mask_ratio", f"must lie strictly between 0 and 1; got {ratio!r}.")
    if config.z_mode not in Z_MODES:
        _fail("z_mode", f"must be one of {Z_MODES}; got {config.z_mode!r}.")
    try:
        model = model_config(config)
    except ValueError as e:
        _fail("model.size", str(e))
    size = spec.image_shape[0]
    if spec.image_shape[0] != spec.image_shape[1]:
        _fail("data.name", f"square images needed; got {spec.image_shape}.")
    if model.patch_size < 1 or size % model.patch_size:
        _fail("model.patch_size", f"patch size {model.patch_size} does not divide the "
              f"{size}x{size} images of {config.data.name}; choose a divisor of {size}.")
    for field in ("embed_dim", "decoder_embed_dim"):
        if getattr(model, field) % 4:
            _fail(f"model.{field}", f"must be a multiple of 4 (2-D sin-cos positions); got "
                  f"{getattr(model, field)}.")
    for dim, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if getattr(model, dim) % getattr(model, heads):
            _fail(f"model.{heads}", f"{getattr(model, heads)} heads do not divide "
                  f"model.{dim}={getattr(model, dim)}.")
    try:
        num_kept(model.num_patches, ratio)
    except ValueError as e:
        _fail("mask_ratio", str(e))
    b = config.data.batch_size
    if not isinstance(b, int) or b < 2:
        _fail("data.batch_size", f"must be an integer >= 2 (R_spec needs a batch); got {b!r}.")
    if b % jax.process_count():
        _fail("data.batch_size", f"{b} is not divisible by the {jax.process_count()} processes.")
    if not config.sweep.vectorize and b % jax.device_count():
        _fail("data.batch_size", f"{b} is not divisible by the {jax.device_count()} devices "
              "(members train data parallel when sweep.vectorize=False).")
    o = config.optim
    if not isinstance(o.epochs, int) or o.epochs < 1:
        _fail("optim.epochs", f"must be a positive integer; got {o.epochs!r}.")
    if not 0 <= o.warmup_epochs <= o.epochs:
        _fail("optim.warmup_epochs", f"must lie in [0, optim.epochs]; got {o.warmup_epochs}.")
    if not o.learning_rate > 0:
        _fail("optim.learning_rate", f"must be positive; got {o.learning_rate}.")
    e = config.eval
    if not 1 <= e.final_epochs <= o.epochs:
        _fail("eval.final_epochs", f"must lie in [1, optim.epochs={o.epochs}]; got "
              f"{e.final_epochs}.")
    if e.heldout_size < 2:
        _fail("eval.heldout_size", f"must be >= 2; got {e.heldout_size}.")
    if e.batch_size < 1:
        _fail("eval.batch_size", f"must be positive; got {e.batch_size}.")
    if e.every_steps < 0:
        _fail("eval.every_steps", f"must be >= 0; got {e.every_steps}.")
    if config.probe.steps < 1:
        _fail("probe.steps", f"must be positive; got {config.probe.steps}.")
    if not 0 < config.r_star.level < 1:
        _fail("r_star.level", f"must lie in (0, 1); got {config.r_star.level}.")
    if not 0 < config.r_star.alpha < 1:
        _fail("r_star.alpha", f"must lie in (0, 1); got {config.r_star.alpha}.")


def model_config(config: ConfigDict):
    """The :class:`MAEConfig` of ``config.model`` for the dataset's image shape."""
    from redundax.data import dataset_info

    spec = dataset_info(config.data.name)
    m = config.model
    return mae_config(
        m.size,
        image_size=spec.image_shape[0],
        in_channels=spec.image_shape[2],
        patch_size=m.patch_size,
        embed_dim=m.embed_dim,
        depth=m.depth,
        num_heads=m.num_heads,
        decoder_embed_dim=m.decoder_embed_dim,
        decoder_depth=m.decoder_depth,
        decoder_num_heads=m.decoder_num_heads,
        mlp_ratio=m.mlp_ratio,
        norm_pix_loss=m.norm_pix_loss,
        dtype=m.dtype,
    )


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    """The training iterator factory and the fixed arrays every member shares."""

    make_iterator: Any  # () -> iterator of {"image", "label"} batches, same order every call
    steps_per_epoch: int
    heldout: np.ndarray  # (n, H, W, C) held-out images (the test split's first n)
    probe_train: tuple[np.ndarray, np.ndarray]
    probe_test: tuple[np.ndarray, np.ndarray]
    num_classes: int


def load_data(config: ConfigDict) -> Data:
    from redundax import data as rdata

    name, data_dir = config.data.name, config.data.data_dir
    source = rdata.get_source(name, "train", data_dir)
    spec = rdata.dataset_info(name)
    batch = config.data.batch_size

    def make_iterator():
        return rdata.make_iterator(
            source, global_batch_size=batch, seed=config.data.seed, shuffle=True,
            augment=config.data.augment, drop_remainder=True,
        )

    train = rdata.load_arrays(name, "train", data_dir)
    test = rdata.load_arrays(name, "test", data_dir)
    n_held = min(config.eval.heldout_size, len(test[0]))
    chunk = min(config.eval.batch_size, n_held)
    n_held -= n_held % chunk  # equal chunks: the chunked loss equals the whole-batch loss
    return Data(
        make_iterator=make_iterator,
        steps_per_epoch=rdata.steps_per_epoch(len(source), batch),
        heldout=test[0][:n_held],
        probe_train=train,
        probe_test=test,
        num_classes=spec.num_classes,
    )


def _chunks(images: jax.Array, size: int) -> tuple[jax.Array, int]:
    """``(n, ...)`` -> ``(k, size, ...)`` zero-padded, and the original n."""
    n = images.shape[0]
    size = min(size, n)
    k = -(-n // size)
    pad = k * size - n
    if pad:
        images = jnp.concatenate([images, jnp.zeros((pad, *images.shape[1:]), images.dtype)])
    return images.reshape(k, size, *images.shape[1:]), n


# --------------------------------------------------------------------------------------------------
# Model, optimiser and the per-member program
# --------------------------------------------------------------------------------------------------


def make_optimizer(config: ConfigDict, steps_per_epoch: int) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay (MAE, He et al., 2022, App. A.1); weight decay on
    matrices only (not biases, norms, or the class and mask tokens)."""
    o = config.optim
    total = o.epochs * steps_per_epoch
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, o.learning_rate, o.warmup_epochs * steps_per_epoch, total, 0.0
    )
    return optax.adamw(
        schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
        mask=lambda params: jax.tree.map(lambda x: x.ndim == 2, params),
    )


def z_metrics(z: jax.Array) -> dict[str, jax.Array]:
    """The four redundancy measures of Z logged every epoch (Def. 2; Prop. 4; Prop. 5)."""
    return {
        "spectral_redundancy": spectral_redundancy(z),
        "effective_rank": effective_rank(z),
        "chi2_redundancy": chi2_redundancy(z),
        "gaussian_total_correlation": gaussian_total_correlation(z),
    }


class MAEProgram:
    """Per-member pure functions of the sweep (see :class:`redundax.sweep.Program`).

    State: ``{"params", "opt_state", "rng", "step"}``. The member's seed gives the initialisation
    key ``fold_in(key(seed), 0)`` and the masking stream ``fold_in(key(seed), 1)``, folded with the
    step number, so members with one seed share init and masks whatever their lambda.
    """

    def __init__(self, config: ConfigDict, data: Data, *, replicate=None):
        self.config = config
        self.data = data
        self.model_config = model_config(config)
        self.graphdef = nnx.graphdef(nnx.eval_shape(lambda: MAE(self.model_config,
                                                                rngs=nnx.Rngs(0))))
        self.tx = make_optimizer(config, data.steps_per_epoch)
        self.mask_ratio = float(config.mask_ratio)
        self.z_mode = config.z_mode
        self.eval_key = jax.random.PRNGKey(config.eval.mask_seed)
        self.replicate = replicate
        self._init = jax.jit(self._init_params)

    # -- state ------------------------------------------------------------------------------------
    def _init_params(self, seed: jax.Array) -> dict:
        key = jax.random.PRNGKey(seed)
        params = nnx.state(MAE(self.model_config, rngs=nnx.Rngs(params=jax.random.fold_in(key, 0))))
        return {
            "params": params,
            "opt_state": self.tx.init(params),
            "rng": jax.random.fold_in(key, 1),
            "step": jnp.zeros((), jnp.int32),
        }

    def init(self, member: sweep.Member) -> dict:
        state = self._init(member.seed)
        return self.replicate(state) if self.replicate is not None else state

    def model(self, params) -> MAE:
        return nnx.merge(self.graphdef, params)

    # -- training ---------------------------------------------------------------------------------
    def loss(self, params, images, key, lam, penalty: bool = True):
        return objective(self.model(params), images, key, lam, mask_ratio=self.mask_ratio,
                         z_mode=self.z_mode, penalty=penalty)

    def train_step(self, state: dict, lam: jax.Array, batch: dict) -> tuple[dict, dict]:
        key = jax.random.fold_in(state["rng"], state["step"])
        (loss, aux), grads = jax.value_and_grad(self.loss, has_aux=True)(
            state["params"], batch["image"], key, lam
        )
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}
        return new, {"loss": loss, **aux}

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, state: dict, lam: jax.Array, images: jax.Array) -> dict:
        """Validation reconstruction loss and the redundancy of Z on the fixed held-out batch.

        Z is taken exactly as the penalty takes it (masked forward pass, ``z_mode``), with masks
        drawn from the fixed evaluation key, identical for every member and every epoch.
        """
        del lam
        model = self.model(state["params"])
        chunks, _ = _chunks(images, self.config.eval.batch_size)

        def one(args):
            i, x = args
            out = model(x, jax.random.fold_in(self.eval_key, i), self.mask_ratio)
            return out.loss, representation(out.latent, self.z_mode).astype(jnp.float32)

        losses, zs = jax.lax.map(one, (jnp.arange(chunks.shape[0]), chunks))
        z = zs.reshape(-1, zs.shape[-1])
        return {"recon_loss": jnp.mean(losses), **z_metrics(z)}

    def features(self, params, images: jax.Array) -> jax.Array:
        """Frozen-encoder features of whole images, pooled like Z (tokens: mean)."""
        model = self.model(params)
        chunks, n = _chunks(images, self.config.eval.batch_size)
        feats = jax.lax.map(lambda x: model.features(x, self.z_mode), chunks)
        return feats.reshape(-1, feats.shape[-1])[:n]

    def probe(self, features_train, features_test) -> dict:
        p = self.config.probe
        (_, y_train), (_, y_test) = self.data.probe_train, self.data.probe_test
        res = linear_probe(
            features_train, jnp.asarray(y_train), features_test, jnp.asarray(y_test),
            num_classes=self.data.num_classes, steps=p.steps, learning_rate=p.learning_rate,
            weight_decay=p.weight_decay, batch_size=p.batch_size,
            key=jax.random.PRNGKey(p.seed),
        )
        return res._asdict()

    def probe_params(self, params) -> dict:
        (x_train, _), (x_test, _) = self.data.probe_train, self.data.probe_test
        return self.probe(self.features(params, x_train), self.features(params, x_test))

    def finish(self, axis: sweep.MemberAxis, state, members) -> list[dict]:
        fn = axis.map(self.probe_params, in_axes=(0,))
        results = axis.take(fn(state["params"]))
        return [{f"probe_{k}": float(v) for k, v in r.items()} for r in results]


# --------------------------------------------------------------------------------------------------
# Baselines: raw pixels, and the encoder at its random initialisation
# --------------------------------------------------------------------------------------------------


def baselines(program: MAEProgram, seeds: Sequence[int], vectorize: bool) -> dict:
    """Linear probes trained exactly like the members' on (a) raw pixels and (b) the encoder at
    initialisation (one per seed; its Z measured on the held-out batch like a member's)."""
    (x_train, _), (x_test, _) = program.data.probe_train, program.data.probe_test
    raw = jax.jit(program.probe)(
        jnp.asarray(x_train.reshape(len(x_train), -1)), jnp.asarray(x_test.reshape(len(x_test), -1))
    )
    members = [sweep.Member(0.0, s) for s in seeds]
    rows = []
    held = jnp.asarray(program.data.heldout)
    if vectorize:
        axis = sweep.MemberAxis(len(members), vectorize=True)
        states = sweep.stack([program.init(m) for m in members])
        probes = axis.take(axis.map(program.probe_params, (0,))(states["params"]))
        evals = axis.take(axis.map(program.evaluate, (0, None, None))(states, 0.0, held))
    else:
        probe_fn, eval_fn = jax.jit(program.probe_params), jax.jit(program.evaluate)
        states = [program.init(m) for m in members]
        probes = [jax.device_get(probe_fn(s["params"])) for s in states]
        evals = [jax.device_get(eval_fn(s, 0.0, held)) for s in states]
    for m, p, e in zip(members, probes, evals, strict=True):
        rows.append({"seed": m.seed, "probe_top1": float(p["top1"]),
                     "val_loss": float(e["recon_loss"]),
                     **{k: float(v) for k, v in e.items() if k != "recon_loss"}})
    summary = _mean_std(rows, [k for k in rows[0] if k != "seed"])
    return {
        "raw_pixels": {"probe_top1": float(raw["top1"]), "num_features": int(x_train[0].size)},
        "random_init": {"rows": rows, **summary},
    }


# --------------------------------------------------------------------------------------------------
# Results: Table 2 rows, per-lambda summary, R*
# --------------------------------------------------------------------------------------------------

ROW_METRICS = ("spectral_redundancy", "effective_rank", "chi2_redundancy",
               "gaussian_total_correlation")


def member_row(result: dict, final_epochs: int) -> dict:
    """One row of Table 2: Z metrics averaged over the last ``final_epochs`` epoch evaluations
    (the paper's "mean value over the final training epochs"); val_loss at the end."""
    epochs = [h for h in result["history"] if float(h["epoch"]).is_integer()]
    last = epochs[-final_epochs:]
    row = {"lambda_red": result["value"], "seed": result["seed"]}
    for k in ROW_METRICS:
        row[k] = float(np.mean([h[f"val/{k}"] for h in last]))
    row["val_loss"] = float(epochs[-1]["val/recon_loss"])
    row["train_loss"] = float(epochs[-1]["train/recon_loss"])
    row["probe_top1"] = float(result["probe_top1"])
    row["probe_train_top1"] = float(result["probe_train_top1"])
    return row


def _mean_std(rows: Sequence[dict], keys: Sequence[str]) -> dict:
    out = {}
    for k in keys:
        v = np.asarray([r[k] for r in rows], np.float64)
        out[f"{k}_mean"] = float(v.mean())
        out[f"{k}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return out


def summarise(rows: Sequence[dict]) -> list[dict]:
    keys = [*ROW_METRICS, "val_loss", "train_loss", "probe_top1", "probe_train_top1"]
    out = []
    for lam in sorted({r["lambda_red"] for r in rows}):
        group = [r for r in rows if r["lambda_red"] == lam]
        out.append({"lambda_red": lam, "num_seeds": len(group), **_mean_std(group, keys)})
    return out


def _quadratic_max(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """Least-squares ``y = c0 + c1 x + c2 x^2``; the argmax if it is interior to ``[min x, max x]``
    and the parabola opens downwards, else None."""
    if len(np.unique(x)) < 3:
        return None, None
    c2, c1, c0 = np.polyfit(x, y, 2)
    coef = np.array([c0, c1, c2])
    if c2 >= 0:
        return coef, None
    r = -c1 / (2 * c2)
    return coef, (float(r) if x.min() < r < x.max() else None)


def _one_sided_slope_p(x: np.ndarray, y: np.ndarray, sign: int) -> tuple[float, float]:
    """OLS slope of y on x and the one-sided p-value for ``sign * slope > 0``."""
    from scipy import stats

    if len(x) < 3 or len(np.unique(x)) < 2:
        return float("nan"), 1.0
    res = stats.linregress(x, y)
    t = res.slope / res.stderr if res.stderr > 0 else np.inf * np.sign(res.slope)
    return float(res.slope), float(stats.t.sf(sign * t, len(x) - 2))


def estimate_r_star(
    rows: Sequence[dict], *, bootstrap: int, seed: int, level: float, alpha: float = 0.05
) -> dict:
    """R*: the maximiser of a quadratic fit of probe top-1 against R_spec (Theorem 2's interior
    optimum), with a bootstrap over seeds (all members of a resampled seed together; over members
    when there is a single seed), and a test of whether the points support a U at all.

    The points *support a U* only if (i) the fit to all points has an interior maximum, (ii) at
    least ``level`` of the bootstrap fits do too, and (iii) the two-lines test (Simonsohn, 2018)
    agrees: split at the fitted R*, accuracy rises with R_spec below it and falls above it, each
    slope significant at one-sided ``alpha`` (a concave quadratic alone is not evidence of a U: a
    rising, saturating relation also gives one). The interval is the central ``level`` range of
    the bootstrap R* among fits with an interior maximum. Where no member has an R_spec near R*,
    the statement names the gap: a fitted peak there is located by the curve's shape, not by data.
    """
    x = np.asarray([r["spectral_redundancy"] for r in rows], np.float64)
    y = np.asarray([r["probe_top1"] for r in rows], np.float64)
    seeds = np.asarray([r["seed"] for r in rows])
    coef, r_star = _quadratic_max(x, y)
    out: dict[str, Any] = {
        "method": "quadratic least squares of probe top-1 on R_spec; bootstrap over "
        + ("seeds" if len(np.unique(seeds)) > 1 else "members")
        + "; two-lines test split at R*",
        "coefficients": None if coef is None else [float(c) for c in coef],
        "r_star": r_star,
        "bootstrap": bootstrap,
        "level": level,
        "alpha": alpha,
    }
    if coef is None:
        out.update(supported=False, interior_fraction=0.0, interval=None, two_lines=None,
                   data_gap=None,
                   statement="Fewer than three distinct R_spec values: no curve can be fitted, "
                   "so the points do not support a U.")
        return out
    rng = np.random.default_rng(seed)
    units = np.unique(seeds) if len(np.unique(seeds)) > 1 else np.arange(len(rows))
    labels = seeds if len(np.unique(seeds)) > 1 else np.arange(len(rows))
    stars, interior = [], 0
    for _ in range(bootstrap):
        pick = rng.choice(units, size=len(units), replace=True)
        idx = np.concatenate([np.flatnonzero(labels == u) for u in pick])
        _, r = _quadratic_max(x[idx], y[idx])
        if r is not None:
            interior += 1
            stars.append(r)
    frac = interior / bootstrap if bootstrap else 0.0
    interval = None
    if stars:
        lo, hi = np.quantile(stars, [(1 - level) / 2, 1 - (1 - level) / 2])
        interval = [float(lo), float(hi)]
    two_lines, gap = None, None
    if r_star is not None:
        left, right = x < r_star, x >= r_star
        s_left, p_left = _one_sided_slope_p(x[left], y[left], +1)
        s_right, p_right = _one_sided_slope_p(x[right], y[right], -1)
        two_lines = {"slope_below": s_left, "p_below": p_left, "n_below": int(left.sum()),
                     "slope_above": s_right, "p_above": p_right, "n_above": int(right.sum())}
        below, above = x[x < r_star], x[x >= r_star]
        gap = [float(below.max()), float(above.min())]
    two_lines_ok = two_lines is not None and max(two_lines["p_below"], two_lines["p_above"]) < alpha
    supported = r_star is not None and frac >= level and two_lines_ok
    c2 = coef[2]
    if supported:
        statement = (
            f"Probe accuracy peaks at an interior spectral redundancy: R* = {r_star:.3f} "
            f"({level:.0%} bootstrap interval [{interval[0]:.3f}, {interval[1]:.3f}]); "
            f"{frac:.0%} of the bootstrap fits have an interior maximum; two-lines test: "
            f"rising below R* (p = {two_lines['p_below']:.3f}), falling above it "
            f"(p = {two_lines['p_above']:.3f})."
        )
    elif c2 >= 0:
        statement = (f"The points do not support a U: the fitted parabola opens upwards "
                     f"(curvature {c2:.3g}).")
    elif r_star is None:
        statement = ("The points do not support a U: the fitted maximum lies outside the "
                     "observed R_spec range.")
    elif frac < level:
        statement = (f"The points do not support a U: only {frac:.0%} of the bootstrap fits "
                     f"have an interior maximum (needed: {level:.0%}).")
    else:
        statement = (
            f"The points do not support a U: the quadratic fit peaks at R* = {r_star:.3f}, but "
            f"the two-lines test split there needs accuracy to rise below it and fall above it, "
            f"each at one-sided p < {alpha}; got p = {two_lines['p_below']:.3f} (rise) and "
            f"p = {two_lines['p_above']:.3f} (fall).")
    if gap is not None and gap[1] - gap[0] > 0.25 * (x.max() - x.min()):
        statement += (
            f" No member has R_spec between {gap[0]:.3f} and {gap[1]:.3f}, where the fitted peak"
            " lies: there its position comes from the curve's shape, not from measured points.")
    out.update(supported=bool(supported), interior_fraction=frac, interval=interval,
               two_lines=two_lines, data_gap=gap, statement=statement)
    return out


def timing(results: dict, members, seconds: float, baseline_seconds: float, trained: int) -> dict:
    """Wall times: this invocation's, and the recorded training time of every member group (a
    restarted sweep reports the groups trained earlier too)."""
    groups = {}
    for m in members:
        g = results[m.tag].get("group")
        if g is not None:
            groups[g["id"]] = g
    return {
        "this_run_training_seconds": seconds,
        "baseline_seconds": baseline_seconds,
        "members_trained_this_run": trained,
        "members": len(members),
        "groups": list(groups.values()),
        "recorded_training_seconds": sum(g["seconds"] for g in groups.values()),
    }


def regime(r_spec: float, r_star: dict) -> str:
    if not r_star.get("supported"):
        return "-"
    lo, hi = r_star["interval"]
    if r_spec < lo:
        return "under-redundant"
    if r_spec > hi:
        return "over-redundant"
    return "balanced (near R*)"


def _pm(mean: float, std: float, fmt: str = "{:.3f}", scale: float = 1.0) -> str:
    return f"{fmt.format(mean * scale)} ± {fmt.format(std * scale)}"


def results_markdown(summary, base, r_star, config: ConfigDict) -> str:
    """Table 2 layout (lambda, R_spec, validation loss, top-1, regime) plus the other measures and
    the baselines as extra rows."""
    n_seeds = len(config.sweep.seeds)
    lines = [
        f"# MAE redundancy sweep on {config.data.name}",
        "",
        f"Mean ± std over {n_seeds} seed(s). R_spec, r_eff, R_chi2 and TC of Z ({config.z_mode}) "
        f"on a fixed held-out batch, averaged over the final {config.eval.final_epochs} epoch(s); "
        "validation loss = masked-patch MSE at the end; top-1 = linear probe on the test split.",
        "",
        "| λ_red | R_spec | r_eff | R_χ² | TC (nats) | Validation loss | Top-1 (%) | Regime |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary:
        lines.append(
            f"| {s['lambda_red']:g} | {_pm(s['spectral_redundancy_mean'], s['spectral_redundancy_std'])}"
            f" | {_pm(s['effective_rank_mean'], s['effective_rank_std'], '{:.2f}')}"
            f" | {_pm(s['chi2_redundancy_mean'], s['chi2_redundancy_std'], '{:.3g}')}"
            f" | {_pm(s['gaussian_total_correlation_mean'], s['gaussian_total_correlation_std'], '{:.3g}')}"
            f" | {_pm(s['val_loss_mean'], s['val_loss_std'], '{:.4f}')}"
            f" | {_pm(s['probe_top1_mean'], s['probe_top1_std'], '{:.1f}', 100)}"
            f" | {regime(s['spectral_redundancy_mean'], r_star)} |"
        )
    ri = base["random_init"]
    lines.append(
        f"| random-init encoder (baseline) | {_pm(ri['spectral_redundancy_mean'], ri['spectral_redundancy_std'])}"
        f" | {_pm(ri['effective_rank_mean'], ri['effective_rank_std'], '{:.2f}')}"
        f" | {_pm(ri['chi2_redundancy_mean'], ri['chi2_redundancy_std'], '{:.3g}')}"
        f" | {_pm(ri['gaussian_total_correlation_mean'], ri['gaussian_total_correlation_std'], '{:.3g}')}"
        f" | {_pm(ri['val_loss_mean'], ri['val_loss_std'], '{:.4f}')}"
        f" | {_pm(ri['probe_top1_mean'], ri['probe_top1_std'], '{:.1f}', 100)} | - |"
    )
    raw = base["raw_pixels"]
    lines.append(
        f"| raw pixels (baseline, {raw['num_features']} features) | - | - | - | - | - "
        f"| {100 * raw['probe_top1']:.1f} | - |"
    )
    lines += ["", f"**R\\*.** {r_star['statement']}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def _data_parallel(config: ConfigDict):
    """Sequential members on several devices: batches sharded over the ``data`` mesh, state
    replicated. Returns ``(place_batch, replicate)`` or ``(None, None)`` on one device."""
    if config.sweep.vectorize or jax.device_count() == 1:
        return None, None
    from redundax.train import mesh as tmesh

    data_mesh = tmesh.make_data_mesh()
    return (lambda batch: tmesh.shard_batch(batch, data_mesh),
            lambda tree: tmesh.replicate(tree, data_mesh))


def config_fingerprint(config: ConfigDict) -> str:
    """Digest of everything that changes a member's result (not the grid, nor the layout)."""
    d = config.to_dict()
    d["sweep"] = {}
    d.pop("r_star", None)
    d["eval"] = {k: v for k, v in d["eval"].items() if k != "final_epochs"}
    return sweep.fingerprint(d)


def run(config: ConfigDict, workdir: str) -> dict:
    """Run the sweep (or its unfinished members) and write every output to ``workdir``."""
    from redundax.train import checkpoint, metrics

    validate_config(config)
    work = pathlib.Path(workdir)
    if jax.process_index() == 0:
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(
            json.dumps(checkpoint.config_to_dict(config), indent=2, sort_keys=True) + "\n")

    data = load_data(config)
    place_batch, replicate = _data_parallel(config)
    program = MAEProgram(config, data, replicate=replicate)
    members = sweep.grid(config.sweep.lambdas, config.sweep.seeds)
    store = sweep.ResultStore(work / "members", config_fingerprint(config))
    schedule = sweep.Schedule(
        num_steps=config.optim.epochs * data.steps_per_epoch,
        steps_per_epoch=data.steps_per_epoch,
        eval_every=config.eval.every_steps,
        checkpoint_every=config.checkpoint_every_epochs * data.steps_per_epoch,
    )
    mesh = sweep.member_mesh() if config.sweep.shard_members else None
    pending = store.pending(members)
    writer = metrics.Writer(work)

    def on_eval(member: sweep.Member, record: dict) -> None:
        # one record per member and evaluation; names carry the member, e.g.
        # "lam_0.01_seed_2/val/spectral_redundancy" (TensorBoard groups them by member)
        writer.write(record["step"], {f"{member.tag}/{k}": v for k, v in record.items()
                                      if k != "step"})
        if record["step"] and (member == pending[-1] or not config.sweep.vectorize):
            log.info("%s step %d epoch %.1f: train recon %.4f, val recon %.4f, R_spec %.3f, "
                     "r_eff %.2f", member.tag, record["step"], record["epoch"],
                     record["train/recon_loss"], record["val/recon_loss"],
                     record["val/spectral_redundancy"], record["val/effective_rank"])

    trained = len(pending)
    try:
        results, seconds = sweep.run_sweep(
            program, members, store=store, vectorize=config.sweep.vectorize, mesh=mesh,
            checkpoint_root=work / "checkpoints", data=data.make_iterator,
            eval_data=jnp.asarray(data.heldout), schedule=schedule, place_batch=place_batch,
            on_eval=on_eval,
        )
    finally:
        writer.close()
    t0 = time.perf_counter()
    base = baselines(program, list(config.sweep.seeds), config.sweep.vectorize)
    rows = [member_row(results[m.tag], config.eval.final_epochs) for m in members]
    summary = summarise(rows)
    r_star = estimate_r_star(rows, bootstrap=config.r_star.bootstrap, seed=config.r_star.seed,
                             level=config.r_star.level, alpha=config.r_star.alpha)
    out = {"rows": rows, "summary": summary, "baselines": base, "r_star": r_star,
           "timing": timing(results, members, seconds, time.perf_counter() - t0, trained)}
    if jax.process_index() == 0:
        metrics.write_json(work / "results.json", out, indent=1)
        (work / "results.md").write_text(results_markdown(summary, base, r_star, config))
        from redundax.plots import mae as plots

        histories = {m.tag: (m.value, m.seed, results[m.tag]["history"]) for m in members}
        plots.figure1(rows, summary, base, r_star, work / "figure1_accuracy_vs_redundancy.png")
        plots.figure2(histories, work / "figure2_rank_and_redundancy.png")
    log.info("Sweep %.1f s; results in %s", seconds, work)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.mae --config configs/mae.py[:preset] --workdir DIR``."""
    from redundax.train import cli

    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("redundax").setLevel(logging.INFO)
    cli.main(run, "configs/mae.py", argv)


if __name__ == "__main__":
    main()
