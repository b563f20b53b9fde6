"""MAE redundancy-balance sweep (Bi, Zhu & Calhoun, 2025, Sec. 4-5, eq. 2, Table 2, Figs. 1-2).

    python -m experiments.mae --config configs/mae.py --workdir runs/mae

Trains a masked autoencoder with L = L_recon + lambda_red R_spec(Z) (eq. 2) for every lambda_red in
``sweep.lambdas`` and every seed in ``sweep.seeds`` (members share the data order; initialisation
and masking noise come from the seed), then refines the lambda grid where neighbouring members'
mean R_spec differ by more than ``sweep.refine.gap`` (geometric midpoints, each round one vectorised
group; ``redundax.analysis.lambda_grid``). Logs R_spec, effective rank, R_chi2 and the Gaussian
total correlation of Z on a fixed held-out batch each epoch, probes the frozen encoder linearly, and
writes Table 2 (``results.json``, ``results.md``) with two baselines (a linear probe on raw pixels
and on the encoder at its random initialisation), the best member's margin over each, the R*
verdict (``redundax.analysis.r_star``: "measured" only when members bracket the fitted peak) and
three figures (accuracy vs R_spec, training dynamics, accuracy vs lambda).

Sections: config validation, data, model and optimiser, the per-member program, baselines,
training rounds, main.
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

from redundax import data as rdata
from redundax import monitor, sweep
from redundax.analysis import lambda_grid, mae_table
from redundax.analysis.mae_table import mean_std, member_row
from redundax.models.mae import MAE, Z_MODES, mae_config, num_kept, objective, representation
from redundax.plots import mae as plots
from redundax.probe import linear_probe
from redundax.train import checkpoint, cli, metrics
from redundax.train import mesh as tmesh

log = logging.getLogger("experiments.mae")

# --------------------------------------------------------------------------------------------------
# Config validation (before anything is built or trained)
# --------------------------------------------------------------------------------------------------


def _fail(field: str, message: str) -> None:
    raise ValueError(f"config.{field}: {message}")


def _check_ranges(config: ConfigDict) -> None:
    """Scalar fields against their allowed ranges: ``(field, ok, requirement)``."""
    o, e, ref, rs = config.optim, config.eval, config.sweep.refine, config.r_star
    b = config.data.batch_size

    def is_int(v, low):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    checks = [
        (
            "mask_ratio",
            isinstance(config.mask_ratio, int | float) and 0 < config.mask_ratio < 1,
            "must lie strictly between 0 and 1",
        ),
        ("z_mode", config.z_mode in Z_MODES, f"must be one of {Z_MODES}"),
        ("data.batch_size", is_int(b, 2), "must be an integer >= 2 (R_spec needs a batch)"),
        ("optim.epochs", is_int(o.epochs, 1), "must be a positive integer"),
        ("optim.warmup_epochs", 0 <= o.warmup_epochs <= o.epochs, "must lie in [0, optim.epochs]"),
        ("optim.learning_rate", o.learning_rate > 0, "must be positive"),
        (
            "eval.final_epochs",
            1 <= e.final_epochs <= o.epochs,
            f"must lie in [1, optim.epochs={o.epochs}]",
        ),
        ("eval.heldout_size", e.heldout_size >= 2, "must be >= 2"),
        ("eval.batch_size", e.batch_size >= 1, "must be positive"),
        ("eval.every_steps", e.every_steps >= 0, "must be >= 0"),
        ("probe.steps", config.probe.steps >= 1, "must be positive"),
        ("sweep.refine.rounds", is_int(ref.rounds, 0), "must be an integer >= 0 (0: off)"),
        ("sweep.refine.max_members", is_int(ref.max_members, 0), "must be an integer >= 0"),
        ("sweep.refine.gap", ref.gap > 0, "must be a positive R_spec difference, e.g. 0.1"),
        ("sweep.refine.tol", ref.tol >= 0, "must be >= 0"),
        ("sweep.refine.min_ratio", ref.min_ratio > 1, "must be > 1, e.g. 1.5"),
        ("r_star.bootstrap", is_int(rs.bootstrap, 1), "must be a positive integer"),
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


def validate_config(config: ConfigDict) -> None:
    """Raise ``ValueError`` naming the offending config field, before any training."""
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
    if config.sweep.shard_members and not config.sweep.vectorize:
        _fail("sweep.shard_members", "sharding the member axis needs sweep.vectorize=True.")
    _check_ranges(config)
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
            f"patch size {model.patch_size} does not divide the "
            f"{shape[0]}x{shape[0]} images of {config.data.name}; choose a divisor of "
            f"{shape[0]}.",
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
    b = config.data.batch_size
    if b % jax.process_count():
        _fail("data.batch_size", f"{b} is not divisible by the {jax.process_count()} processes.")
    if not config.sweep.vectorize and b % jax.device_count():
        _fail(
            "data.batch_size",
            f"{b} is not divisible by the {jax.device_count()} devices "
            "(members train data parallel when sweep.vectorize=False).",
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
    name, data_dir = config.data.name, config.data.data_dir
    source = rdata.get_source(name, "train", data_dir)
    spec = rdata.dataset_info(name)
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
        schedule,
        b1=o.b1,
        b2=o.b2,
        weight_decay=o.weight_decay,
        mask=lambda params: jax.tree.map(lambda x: x.ndim == 2, params),
    )


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
        self.graphdef = nnx.graphdef(
            nnx.eval_shape(lambda: MAE(self.model_config, rngs=nnx.Rngs(0)))
        )
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
        return objective(
            self.model(params),
            images,
            key,
            lam,
            mask_ratio=self.mask_ratio,
            z_mode=self.z_mode,
            penalty=penalty,
        )

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
        return {"recon_loss": jnp.mean(losses), **monitor.from_samples(z, mae_table.ROW_METRICS)}

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
        rows.append(
            {
                "seed": m.seed,
                "probe_top1": float(p["top1"]),
                "val_loss": float(e["recon_loss"]),
                **{k: float(v) for k, v in e.items() if k != "recon_loss"},
            }
        )
    summary = mean_std(rows, [k for k in rows[0] if k != "seed"])
    return {
        "raw_pixels": {"probe_top1": float(raw["top1"]), "num_features": int(x_train[0].size)},
        "random_init": {"rows": rows, **summary},
    }


# --------------------------------------------------------------------------------------------------
# Training: the grid, then refinement rounds
# --------------------------------------------------------------------------------------------------


def train_rounds(
    program, config: ConfigDict, store: sweep.ResultStore, **run_kwargs
) -> tuple[dict[str, dict], list[dict]]:
    """Round 0 trains ``sweep.lambdas`` x ``sweep.seeds``; each of up to ``sweep.refine.rounds``
    further rounds adds the lambdas :func:`lambda_grid.refine` places in the R_spec gaps of the
    members so far (within ``sweep.refine.max_members``) and trains them as one group with
    :func:`sweep.run_sweep` (finished members are skipped, so a restart replays the same rounds).

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
        out, seconds = sweep.run_sweep(program, members, store=store, **run_kwargs)
        results.update({m.tag: {**out[m.tag], "round": k} for m in members})
        rounds.append(
            {
                "round": k,
                "lambdas": new,
                "members": len(members),
                "trained": trained,
                "seconds": seconds,
            }
        )
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


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def _data_parallel(config: ConfigDict):
    """Sequential members on several devices: batches sharded over the ``data`` mesh, state
    replicated. Returns ``(place_batch, replicate)`` or ``(None, None)`` on one device."""
    if config.sweep.vectorize or jax.device_count() == 1:
        return None, None
    data_mesh = tmesh.make_data_mesh()
    return (
        lambda batch: tmesh.shard_batch(batch, data_mesh),
        lambda tree: tmesh.replicate(tree, data_mesh),
    )


def config_fingerprint(config: ConfigDict) -> str:
    """Digest of everything that changes a member's result (not the grid, nor the layout)."""
    d = config.to_dict()
    d["sweep"] = {}
    d.pop("r_star", None)
    d["eval"] = {k: v for k, v in d["eval"].items() if k != "final_epochs"}
    return sweep.fingerprint(d)


def run(config: ConfigDict, workdir: str) -> dict:
    """Run the sweep (or its unfinished members) and write every output to ``workdir``."""
    validate_config(config)
    work = pathlib.Path(workdir)
    if jax.process_index() == 0:
        work.mkdir(parents=True, exist_ok=True)
        (work / "config.json").write_text(
            json.dumps(checkpoint.config_to_dict(config), indent=2, sort_keys=True) + "\n"
        )

    data = load_data(config)
    place_batch, replicate = _data_parallel(config)
    program = MAEProgram(config, data, replicate=replicate)
    store = sweep.ResultStore(work / "members", config_fingerprint(config))
    schedule = sweep.Schedule(
        num_steps=config.optim.epochs * data.steps_per_epoch,
        steps_per_epoch=data.steps_per_epoch,
        eval_every=config.eval.every_steps,
        checkpoint_every=config.checkpoint_every_epochs * data.steps_per_epoch,
    )
    writer = metrics.Writer(work)
    log_every = max(config.optim.epochs // 4, 1)

    def on_eval(member: sweep.Member, record: dict) -> None:
        # one record per member and evaluation; names carry the member, e.g.
        # "lam_0.01_seed_2/val/spectral_redundancy" (TensorBoard groups them by member)
        writer.write(
            record["step"], {f"{member.tag}/{k}": v for k, v in record.items() if k != "step"}
        )
        # every member's record each epoch (sequential), else every quarter of training
        shown = not config.sweep.vectorize or record["epoch"] % log_every == 0
        if record["step"] and shown:
            log.info(
                "%s epoch %.1f: train recon %.4f, val recon %.4f, R_spec %.3f, r_eff %.2f",
                member.tag,
                record["epoch"],
                record["train/recon_loss"],
                record["val/recon_loss"],
                record["val/spectral_redundancy"],
                record["val/effective_rank"],
            )

    def on_start(members: Sequence[sweep.Member], step: int) -> None:
        # a resumed (or restarted) group rewrites its members' records after `step`: drop them
        writer.drop_after(step, tuple(f"{m.tag}/" for m in members))

    try:
        results, rounds = train_rounds(
            program,
            config,
            store,
            vectorize=config.sweep.vectorize,
            mesh=sweep.member_mesh() if config.sweep.shard_members else None,
            checkpoint_root=work / "checkpoints",
            data=data.make_iterator,
            eval_data=jnp.asarray(data.heldout),
            schedule=schedule,
            place_batch=place_batch,
            on_eval=on_eval,
            on_start=on_start,
        )
    finally:
        writer.close()
    t0 = time.perf_counter()
    base = baselines(program, list(config.sweep.seeds), config.sweep.vectorize)
    rows = [
        {**member_row(r, config.eval.final_epochs), "round": r["round"]} for r in results.values()
    ]
    res = mae_table.report(
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
    markdown = res.pop("markdown")
    out = {
        "rows": rows,
        "baselines": base,
        **res,
        "refinement": config.sweep.refine.to_dict(),
        "timing": timing(results, rounds, time.perf_counter() - t0),
    }
    if jax.process_index() == 0:
        metrics.write_json(work / "results.json", out, indent=1)
        (work / "results.md").write_text(markdown)
        histories = {t: (r["value"], r["seed"], r["history"]) for t, r in results.items()}
        plots.figure1(
            rows, res["summary"], base, res["r_star"], work / "figure1_accuracy_vs_redundancy.png"
        )
        plots.figure2(histories, work / "figure2_rank_and_redundancy.png")
        plots.figure3(rows, res["summary"], base, work / "figure3_accuracy_vs_lambda.png")
    log.info("%s %s", res["warning"] or "", res["headline"])
    log.info("R*: %s", res["r_star"]["statement"])
    log.info(
        "Sweep %.1f s (%s); results in %s",
        out["timing"]["this_run_training_seconds"],
        ", ".join(
            f"round {r['round']}: {r['members']} members {r['seconds']:.0f} s" for r in rounds
        ),
        work,
    )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m experiments.mae --config configs/mae.py[:preset] --workdir DIR``."""
    logging.getLogger("experiments").setLevel(logging.INFO)
    logging.getLogger("redundax").setLevel(logging.INFO)
    cli.main(run, "configs/mae.py", argv)


if __name__ == "__main__":
    main()
