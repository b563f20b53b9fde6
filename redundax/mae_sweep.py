"""The MAE redundancy-balance sweep on the engine (Bi, Zhu & Calhoun, 2025, Sec. 4-5, eq. 2).

The pieces ``experiments/mae.py`` assembles, importable on their own:

- ``model_config(config)``, ``validate_config(config)``: the MAE of ``config.model`` for the
  dataset, and every field checked (a ``ValueError`` naming the field) before anything is built.
- ``load_data(config, mesh)`` -> ``Data``: the training iterator factory (process-local batches),
  the fixed held-out images and the probe's splits.
- ``make_optimizer(config, steps_per_epoch)``: ``redundax.train.optim.build(config.optim, ...)``
  (AdamW, warm-up then cosine decay, decay on matrices only: MAE, He et al., 2022, App. A.1).
- ``MAEProgram``: what each sweep member trains (``redundax.sweep.Program``): the loss
  L_recon + lambda_red R_spec(Z) (eq. 2, ``redundax.models.mae.objective``), the held-out
  evaluation (validation loss and the redundancy of Z from its first two moments, with fixed
  masks) and the linear probe of the frozen encoder.
- ``baselines(program, seeds, layout_kwargs)``: linear probes on raw pixels and on the encoder at
  its random initialisation.
- ``train_rounds(program, config, store, **run_kwargs)``: the grid, then refinement rounds where
  neighbouring mean R_spec differ (``redundax.analysis.lambda_grid``), each one vectorised group.
- ``timing(results, rounds, baseline_seconds)``, ``config_fingerprint(config)``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh
from ml_collections import ConfigDict

from redundax import data as rdata
from redundax import monitor, sweep
from redundax.analysis import lambda_grid, mae_table
from redundax.analysis.mae_table import mean_std, member_row
from redundax.functionals.moments import Moments, self_gram
from redundax.models.mae import (
    MAE,
    Z_MODES,
    mae_config,
    masked_mse,
    num_kept,
    objective,
    patchify,
    representation,
)
from redundax.probe import linear_probe
from redundax.train import config_schema, failures, optim
from redundax.train import evaluate as evaluate_lib
from redundax.train import state as state_lib

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------


def _fail(field: str, message: str) -> None:
    raise failures.UsageError(f"config.{field}: {message}")


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def _check_ranges(config: ConfigDict) -> None:
    """Scalar fields against their allowed ranges: ``(field, ok, requirement)``."""
    o, e, ref, rs = config.optim, config.eval, config.sweep.refine, config.r_star
    epochs = config.train.epochs
    checks = [
        (
            "mask_ratio",
            isinstance(config.mask_ratio, int | float) and 0 < config.mask_ratio < 1,
            "must lie strictly between 0 and 1",
        ),
        ("z_mode", config.z_mode in Z_MODES, f"must be one of {Z_MODES}"),
        ("data.batch_size", _is_int(config.data.batch_size, 2), "must be an integer >= 2"),
        ("train.epochs", _is_int(epochs, 1), "must be a positive integer"),
        ("optim.warmup_epochs", 0 <= o.warmup_epochs < max(epochs, 2), "must lie in [0, epochs)"),
        ("optim.lr", o.lr > 0, "must be positive"),
        ("eval.final_epochs", 1 <= e.final_epochs <= epochs, f"must lie in [1, {epochs}]"),
        ("eval.heldout_size", e.heldout_size >= 2, "must be >= 2"),
        ("eval.batch_size", e.batch_size >= 1, "must be positive"),
        ("eval.every_steps", e.every_steps >= 0, "must be >= 0"),
        ("checkpoint.every_epochs", _is_int(config.checkpoint.every_epochs, 0), "must be >= 0"),
        ("run.log_every", _is_int(config.run.log_every, 1), "must be a positive integer"),
        ("probe.steps", config.probe.steps >= 1, "must be positive"),
        ("sweep.member_shards", _is_int(config.sweep.member_shards, 1), "must be an int >= 1"),
        ("sweep.refine.rounds", _is_int(ref.rounds, 0), "must be an integer >= 0 (0: off)"),
        ("sweep.refine.max_members", _is_int(ref.max_members, 0), "must be an integer >= 0"),
        ("sweep.refine.gap", ref.gap > 0, "must be a positive R_spec difference, e.g. 0.1"),
        ("sweep.refine.tol", ref.tol >= 0, "must be >= 0"),
        ("sweep.refine.min_ratio", ref.min_ratio > 1, "must be > 1, e.g. 1.5"),
        ("r_star.bootstrap", _is_int(rs.bootstrap, 1), "must be a positive integer"),
        ("r_star.level", 0 < rs.level < 1, "must lie in (0, 1)"),
        ("r_star.alpha", 0 < rs.alpha < 1, "must lie in (0, 1)"),
        ("r_star.resolution", rs.resolution > 0, "must be a positive R_spec distance, e.g. 0.1"),
    ]
    for field, ok, requirement in checks:
        if not ok:
            value = config
            for part in field.split("."):
                value = value[part]
            _fail(field, f"{requirement}; got {value!r}.")


def validate_config(config: ConfigDict, schema: ConfigDict | None = None) -> None:
    """Raise ``failures.UsageError`` (a ``ValueError``) naming the offending config field, before
    any training (the CLI prints it without a traceback and exits 2).

    ``schema``: the default config (``configs/mae.py``); every field of ``config`` must be one of
    its fields (an old or misspelt name gets the right one, ``config_schema.check_fields``)."""
    if schema is not None:
        try:
            config_schema.check_fields(config, schema)
        except ValueError as error:  # a user-fixable error: the CLI prints it and exits 2
            raise failures.UsageError(str(error)) from None
    if config.data.name not in rdata.known_datasets():
        _fail(
            "data.name", f"unknown dataset {config.data.name!r}; known: {rdata.known_datasets()}."
        )
    lambdas, seeds = list(config.sweep.lambdas), list(config.sweep.seeds)
    if not lambdas:
        _fail(
            "sweep.lambdas",
            "the lambda grid is empty; give at least one value, e.g. "
            "--config.sweep.lambdas='(0.0, 0.01)'.",
        )
    for lam in lambdas:
        if not isinstance(lam, int | float) or not math.isfinite(lam) or lam < 0:
            _fail("sweep.lambdas", f"every lambda must be a finite number >= 0; got {lam!r}.")
    if len(set(lambdas)) != len(lambdas):
        _fail("sweep.lambdas", f"values must be distinct; got {lambdas}.")
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) for s in seeds):
        _fail("sweep.seeds", f"give at least one integer seed; got {seeds}.")
    if len(set(seeds)) != len(seeds):
        _fail("sweep.seeds", f"seeds must be distinct; got {seeds}.")
    _check_ranges(config)
    try:
        sweep.check_chunk(config.sweep.member_chunk)
    except ValueError as error:
        raise failures.UsageError(f"config.{error}") from None
    shards = config.sweep.member_shards
    if shards > 1 and not config.sweep.vectorize:
        _fail("sweep.member_shards", "sharding the member axis needs sweep.vectorize=True.")
    if jax.device_count() % shards or jax.local_device_count() % shards:
        _fail(
            "sweep.member_shards",
            f"{shards} does not divide the {jax.local_device_count()} devices of each process.",
        )
    try:
        model = model_config(config)
    except ValueError as e:
        _fail("model.size", str(e))
    shape = rdata.dataset_info(config.data.name).image_shape
    if shape[0] != shape[1]:
        _fail("data.name", f"square images needed; got {shape}.")
    if model.patch_size < 1 or shape[0] % model.patch_size:
        _fail(
            "model.patch_size",
            f"patch size {model.patch_size} does not divide the {shape[0]}x{shape[0]} images of "
            f"{config.data.name}; choose a divisor of {shape[0]}.",
        )
    for dim, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
        if getattr(model, dim) % 4:
            _fail(
                f"model.{dim}",
                f"must be a multiple of 4 (2-D sin-cos positions); got {getattr(model, dim)}.",
            )
        if getattr(model, dim) % getattr(model, heads):
            _fail(
                f"model.{heads}",
                f"{getattr(model, heads)} heads do not divide model.{dim}={getattr(model, dim)}.",
            )
    try:
        num_kept(model.num_patches, config.mask_ratio)
    except ValueError as e:
        _fail("mask_ratio", str(e))
    data_shards = jax.device_count() // shards
    if config.data.batch_size % (data_shards * jax.process_count()):
        _fail(
            "data.batch_size",
            f"{config.data.batch_size} does not split over the {data_shards} data-parallel "
            f"devices ({jax.process_count()} process(es)); choose a multiple of {data_shards}.",
        )


def model_config(config: ConfigDict):
    """The :class:`MAEConfig` of ``config.model`` for the dataset's image shape."""
    spec = rdata.dataset_info(config.data.name)
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


def config_fingerprint(config: ConfigDict) -> str:
    """Digest of everything that changes a member's result (not the grid, the layout, the
    cadence of logs and checkpoints, nor the post-hoc analyses)."""
    d = config.to_dict()
    for section in ("sweep", "r_star", "run", "checkpoint"):
        d.pop(section, None)
    d["data"] = {k: v for k, v in d["data"].items() if k != "data_dir"}
    d["eval"] = {k: v for k, v in d["eval"].items() if k not in ("final_epochs", "every_steps")}
    return sweep.fingerprint(d)


# --------------------------------------------------------------------------------------------------
# Data and optimizer
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Data:
    """The training iterator factory and the fixed arrays every member shares."""

    make_iterator: Any  # () -> iterator of process-local {"image", "label"} batches, same order
    steps_per_epoch: int
    heldout: np.ndarray  # (n, H, W, C) held-out images (the test split's first n)
    probe_train: tuple[np.ndarray, np.ndarray]
    probe_test: tuple[np.ndarray, np.ndarray]
    num_classes: int


def load_data(config: ConfigDict) -> Data:
    """``config.data``'s training stream (this process's share of each global batch) and the
    held-out and probe arrays (whole, identical on every process)."""
    name, data_dir = config.data.name, config.data.data_dir
    source = rdata.get_source(name, "train", data_dir)
    batch = config.data.batch_size

    def make_iterator():
        return rdata.make_iterator(
            source,
            global_batch_size=batch,
            seed=config.data.seed,
            shuffle=True,
            augment=config.data.augment,
            drop_remainder=True,
        )

    train = rdata.load_arrays(name, "train", data_dir)
    test = rdata.load_arrays(name, "test", data_dir)
    return Data(
        make_iterator=make_iterator,
        steps_per_epoch=rdata.steps_per_epoch(len(source), batch),
        heldout=test[0][: min(config.eval.heldout_size, len(test[0]))],
        probe_train=train,
        probe_test=test,
        num_classes=rdata.dataset_info(name).num_classes,
    )


def make_optimizer(
    config: ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``redundax.train.optim.build`` of ``config.optim`` over ``train.epochs`` (warm-up epochs
    turned into steps)."""
    section = config_schema.epochs_to_steps(config.optim, steps_per_epoch)
    return optim.build(section, config.train.epochs * steps_per_epoch)


def fixed_batches(images: np.ndarray, batch_size: int, mesh: Mesh) -> Iterator[np.ndarray]:
    """This process's part of every global batch of ``images``, the last one zero-padded to the
    same size (one compilation). The global size is ``batch_size`` (at most ``len(images)``)
    rounded up to a multiple of the device count."""
    n = len(images)
    size = -(-min(batch_size, n) // mesh.size) * mesh.size
    local, p = size // jax.process_count(), jax.process_index()
    for start in range(0, n, size):
        chunk = images[start : start + size]
        if len(chunk) < size:
            pad = np.zeros((size - len(chunk), *chunk.shape[1:]), images.dtype)
            chunk = np.concatenate([chunk, pad])
        yield chunk[p * local : (p + 1) * local]


# --------------------------------------------------------------------------------------------------
# The per-member program
# --------------------------------------------------------------------------------------------------


class MAEProgram:
    """What each sweep member trains (see :class:`redundax.sweep.Program`).

    The member's seed gives the initialisation key ``fold_in(PRNGKey(seed), 0)`` and the
    ``TrainState``'s key ``fold_in(PRNGKey(seed), 1)``, which the engine folds with the step
    number for the masking noise: members with one seed share init and masks whatever their
    lambda.
    """

    def __init__(self, config: ConfigDict, data: Data):
        self.config = config
        self.data = data
        self.model_config = model_config(config)
        self.tx, self.learning_rate = make_optimizer(config, data.steps_per_epoch)
        self.mask_ratio = float(config.mask_ratio)
        self.z_mode = config.z_mode
        self.eval_key = jax.random.PRNGKey(config.eval.mask_seed)
        self.eval_batch_size = int(config.eval.batch_size)
        self.num_heldout = len(data.heldout)
        # global held-out batch: its rows are in held-out order on any number of processes (a
        # process pads only the last batch), so the masks drawn for it are the same everywhere
        self.heldout_batch_size = min(self.eval_batch_size, self.num_heldout)
        self._init = jax.jit(self._create)

    # -- state ------------------------------------------------------------------------------------
    def _create(self, seed: jax.Array) -> state_lib.TrainState:
        key = jax.random.PRNGKey(seed)
        model = MAE(self.model_config, rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
        return state_lib.create(model, self.tx, jax.random.fold_in(key, 1))

    def init(self, member: sweep.Member) -> state_lib.TrainState:
        return self._init(member.seed)

    # -- training: eq. 2 --------------------------------------------------------------------------
    def loss_fn(self, model: MAE, batch: Mapping, rng: jax.Array, lam: jax.Array):
        return objective(
            model, batch["image"], rng, lam, mask_ratio=self.mask_ratio, z_mode=self.z_mode
        )

    # -- evaluation -------------------------------------------------------------------------------
    def eval_step(
        self, state: state_lib.TrainState, lam: jax.Array, batch: Mapping, center: Any = None
    ) -> dict:
        """Masked sums over a held-out batch (``redundax.sweep.Program``): without ``center``
        (first pass, the encoder alone) the sum of Z; with ``center`` (the held-out mean of Z)
        the co-moment ``sum (z - center)(z - center)^T`` and the per-example reconstruction
        loss. Z is taken exactly as the penalty takes it (masked forward pass, ``z_mode``) with
        masks from the fixed evaluation key folded with the batch's position, identical for
        every member, epoch and pass."""
        del lam
        model = state.model()
        images = batch["image"]
        key = jax.random.fold_in(self.eval_key, batch["index"][0] // images.shape[0])
        w = batch["mask"].astype(jnp.float32)
        if center is None:
            latent, _ = model.encode(images, key, self.mask_ratio)
            z = representation(latent, self.z_mode).astype(jnp.float32)
            ws = jnp.repeat(w, z.shape[0] // w.shape[0])  # "tokens": samples per example
            return {"z": jnp.sum(z * ws[:, None], 0), "z_samples": jnp.sum(ws), "count": jnp.sum(w)}
        out = model(images, key, self.mask_ratio)
        z = representation(out.latent, self.z_mode).astype(jnp.float32)
        ws = jnp.repeat(w, z.shape[0] // w.shape[0])
        target = patchify(images, self.model_config.patch_size)
        per_example = jax.vmap(
            lambda t, p, m: masked_mse(t[None], p[None], m[None], self.model_config.norm_pix_loss)
        )(target, out.pred, out.mask)
        return {
            "recon_loss": jnp.sum(per_example * w),
            "comoment": self_gram((z - center) * jnp.sqrt(ws)[:, None]),
            "count": jnp.sum(w),
        }

    def eval_center(self, means: Mapping[str, Any]) -> Any:
        """The held-out mean of Z (the second pass centres on it, as ``Moments.from_samples``)."""
        return means["z"] / means["z_samples"][..., None]

    def eval_metrics(self, means: Mapping[str, Any], centered: Mapping[str, Any]) -> dict:
        """Validation loss and the redundancy metrics of the held-out Z
        (``redundax.monitor.from_moments``) from the two passes' means over the held-out
        examples (a leading member axis is allowed)."""
        samples = means["z_samples"] * self.num_heldout
        moments = Moments(
            count=samples,
            mean=self.eval_center(means),
            comoment=centered["comoment"] * self.num_heldout,
        )
        return {
            "recon_loss": centered["recon_loss"],
            **monitor.from_moments(moments, mae_table.ROW_METRICS),
        }

    def heldout_batches(self, mesh: Mesh) -> Any:
        """The held-out evaluation batches (a factory: each call starts them afresh): this
        process's parts of ``eval.batch_size`` global batches, with each example's ``"index"``
        (``evaluate_batches`` pads and masks the last one)."""
        arrays = {
            "image": self.data.heldout,
            "index": np.arange(len(self.data.heldout), dtype=np.int32),
        }
        return lambda: evaluate_lib.array_batches(arrays, self.heldout_batch_size, mesh)

    # -- probe ------------------------------------------------------------------------------------
    def _features(self, state: state_lib.TrainState, images: jax.Array) -> jax.Array:
        return state.model().features(images, self.z_mode)

    def features(self, layout: sweep.Layout, state: Any, images: np.ndarray) -> jax.Array:
        """Frozen-encoder features ``([members,] n, D)`` of whole images, pooled like Z, in
        fixed-size batches sharded over the data axis (replicated result)."""
        fn = layout.map(self._features, in_axes=(0, None))
        parts = []
        for batch in fixed_batches(images, self.eval_batch_size, layout.mesh):
            parts.append(np.asarray(jax.device_get(fn(state, layout.batch(batch)))))
        feats = np.concatenate(parts, axis=-2)[..., : len(images), :]
        return sweep.place(feats, layout.replicated)

    def probe(self, features_train: jax.Array, features_test: jax.Array) -> dict:
        p = self.config.probe
        (_, y_train), (_, y_test) = self.data.probe_train, self.data.probe_test
        res = linear_probe(
            features_train,
            jnp.asarray(y_train),
            features_test,
            jnp.asarray(y_test),
            num_classes=self.data.num_classes,
            steps=p.steps,
            learning_rate=p.learning_rate,
            weight_decay=p.weight_decay,
            batch_size=p.batch_size,
            key=jax.random.PRNGKey(p.seed),
        )
        return res._asdict()

    def finish(self, layout: sweep.Layout, state: Any, members: Sequence[sweep.Member]) -> list:
        """Each member's linear probe on its frozen encoder (``probe_top1``, ...)."""
        (x_train, _), (x_test, _) = self.data.probe_train, self.data.probe_test
        f_train = self.features(layout, state, x_train)
        f_test = self.features(layout, state, x_test)
        results = layout.take(layout.map(self.probe, in_axes=(0, 0))(f_train, f_test))
        return [{f"probe_{k}": float(v) for k, v in r.items()} for r in results]


# --------------------------------------------------------------------------------------------------
# Baselines: raw pixels, and the encoder at its random initialisation
# --------------------------------------------------------------------------------------------------


def baselines(program: MAEProgram, seeds: Sequence[int], *, vectorize: bool, mesh: Mesh) -> dict:
    """Linear probes trained exactly like the members' on (a) raw pixels and (b) the encoder at
    initialisation (one per seed; its Z measured on the held-out data like a member's)."""
    (x_train, _), (x_test, _) = program.data.probe_train, program.data.probe_test
    raw = jax.jit(program.probe)(
        jnp.asarray(x_train.reshape(len(x_train), -1)), jnp.asarray(x_test.reshape(len(x_test), -1))
    )
    members = [sweep.Member(0.0, s) for s in seeds]
    groups = [members] if vectorize else [[m] for m in members]
    probes, evals = [], []
    for group in groups:
        layout = sweep.Layout(
            len(group),
            vectorize=vectorize,
            mesh=mesh,
            member_chunk=program.config.sweep.member_chunk,
        )
        state, values = sweep.init_members(program, group, layout)
        probes += program.finish(layout, state, group)
        evals += sweep.evaluate_members(
            program,
            layout,
            state,
            values,
            program.heldout_batches(mesh),
            batch_size=program.heldout_batch_size,
        )
    rows = [
        {
            "seed": m.seed,
            "probe_top1": p["probe_top1"],
            "val_loss": e["recon_loss"],
            **{k: v for k, v in e.items() if k != "recon_loss"},
        }
        for m, p, e in zip(members, probes, evals, strict=True)
    ]
    summary = mean_std(rows, [k for k in rows[0] if k != "seed"])
    return {
        "raw_pixels": {"probe_top1": float(raw["top1"]), "num_features": int(x_train[0].size)},
        "random_init": {"rows": rows, **summary},
    }


# --------------------------------------------------------------------------------------------------
# Training: the grid, then refinement rounds
# --------------------------------------------------------------------------------------------------


def train_rounds(
    program: sweep.Program, config: ConfigDict, store: sweep.ResultStore, **run_kwargs
) -> tuple[dict[str, dict], list[dict]]:
    """Round 0 trains ``sweep.lambdas`` x ``sweep.seeds``; each of up to ``sweep.refine.rounds``
    further rounds adds the lambdas :func:`lambda_grid.refine` places in the R_spec gaps of the
    members so far (within ``sweep.refine.max_members``) and trains them as one group with
    :func:`redundax.sweep.run_sweep` (finished members are skipped, so a restart replays the same
    rounds) in chunks of ``sweep.member_chunk`` members; ``config`` is recorded with each group's
    checkpoints.

    Returns:
      ``{member tag: result}`` (each with its ``round``) and one record per round
      (``round``, ``lambdas``, ``members``, ``trained``: members trained by this call, ``seconds``).
    """
    seeds, ref = list(config.sweep.seeds), config.sweep.refine
    results: dict[str, dict] = {}
    rounds: list[dict] = []
    new, budget = list(config.sweep.lambdas), ref.max_members
    for k in range(ref.rounds + 1):
        if k:
            rows = [member_row(r, config.eval.final_epochs) for r in results.values()]
            lams, r_spec = lambda_grid.mean_by_lambda(rows)
            new = lambda_grid.refine(
                lams,
                r_spec,
                gap=ref.gap,
                max_new=budget // len(seeds),
                tol=ref.tol,
                min_ratio=ref.min_ratio,
            )
            if not new:
                break
            budget -= len(new) * len(seeds)
            log.info("Refinement round %d: lambda %s (R_spec gaps > %g)", k, new, ref.gap)
        members = sweep.grid(new, seeds)
        trained = len(store.pending(members))
        out, seconds = sweep.run_sweep(
            program,
            members,
            store=store,
            config=config,
            member_chunk=config.sweep.member_chunk,
            **run_kwargs,
        )
        results.update({m.tag: {**out[m.tag], "round": k} for m in members})
        rounds.append(
            {"round": k, "lambdas": new, "members": len(members), "trained": trained,
             "seconds": seconds}
        )  # fmt: skip
    return results, rounds


def timing(results: dict, rounds: list[dict], baseline_seconds: float) -> dict:
    """Wall times: this invocation's per round, and the recorded training time of every member
    group (a restarted sweep reports the groups trained earlier too)."""
    groups = {}
    for r in results.values():
        if r.get("group") is not None:
            groups[r["group"]["id"]] = {**r["group"], "round": r["round"]}
    return {
        "this_run_training_seconds": sum(r["seconds"] for r in rounds),
        "baseline_seconds": baseline_seconds,
        "members_trained_this_run": sum(r["trained"] for r in rounds),
        "members": len(results),
        "rounds": rounds,
        "groups": list(groups.values()),
        "recorded_training_seconds": sum(g["seconds"] for g in groups.values()),
    }


def table(config: ConfigDict, results: dict, base: dict) -> tuple[list[dict], dict]:
    """Table 2: member rows (with their round) and ``mae_table.report`` (summary, margins, R*,
    headline, markdown)."""
    rows = [
        {**member_row(r, config.eval.final_epochs), "round": r["round"]} for r in results.values()
    ]
    report = mae_table.report(
        rows,
        base,
        r_star=config.r_star.to_dict(),
        tol=config.sweep.refine.tol,
        title=f"MAE redundancy sweep on {config.data.name}",
        caption=(
            f"{len(rows)} members; mean ± std over {len(config.sweep.seeds)} seed(s); round ="
            " the refinement round that added the lambda (0: the configured grid). R_spec, "
            f"r_eff, R_χ² and TC of Z ({config.z_mode}) on a fixed held-out batch, averaged "
            f"over the final {config.eval.final_epochs} epoch(s); validation loss = "
            "masked-patch MSE at the end; top-1 = linear probe on the test split."
        ),
    )
    return rows, report
