"""Layer entropy rate, redundancy score R_l and layer pruning of BERT-family encoders (Liang, 2025).

    python -m experiments.layers --config configs/layers.py --workdir runs/layers
    python -m experiments.layers --config configs/layers.py:glue --config.glue.model_path=DIR \\
        --config.glue.data_dir=TFDS_DIR --workdir runs/glue

Default task "sentences" (offline): load the pretrained MiniLM, split Python's documentation into
calibration and held-out paragraphs, stream eq. 25 over calibration batches (with ShortGPT block
influence and knowledge entropy from the same passes), check the profile's shape, remove k layers by
every criterion (and every single layer, as an oracle), and score each pruned encoder by fidelity to
the unpruned sentence embeddings and by held-out query -> passage retrieval; optionally recover with a
distillation fine-tune. Task "glue": the paper's Table 1 protocol (configs/layers.py). Writes
`results.json`, `results.md`, `metrics.jsonl`, TensorBoard events, PNG figures and the pruned
checkpoint of `prune.save_criterion` (HF format, reloaded and checked).
"""

from __future__ import annotations

import functools
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx
from scipy import stats as sstats

from redundax import monitor, text
from redundax.functionals import entropy_rate as er
from redundax.models import hf_loader
from redundax.models.bert import SequenceClassifier, make_hidden_fn, mean_pool
from redundax.plots import layers as plots
from redundax.prune import layers as pl
from redundax.train import cli
from redundax.train import metrics as metrics_lib
from redundax.train import state as state_lib
from redundax.train.progress import Progress, track

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "layers.py")


# ------------------------------------------------------------------------------------ helpers


def profile_shape(r: np.ndarray, min_change: float) -> dict[str, Any]:
    """Describe R_l against the paper's cap-shape claim (low at both ends, interior peak).

    `cap_shaped` requires an interior argmax, a rise from layer 1 to the peak of at least
    `min_change` x peak and a fall from the peak to layer L of at least as much.
    """
    r = np.asarray(r, np.float64)
    peak = int(np.argmax(r))
    rise = float((r[peak] - r[0]) / r[peak]) if r[peak] > 0 else 0.0
    fall = float((r[peak] - r[-1]) / r[peak]) if r[peak] > 0 else 0.0
    interior = 0 < peak < r.size - 1
    return {
        "peak_layer": peak + 1,
        "rise_from_first": rise,
        "fall_to_last": fall,
        "monotone_decreasing": bool(np.all(np.diff(r) <= 0)),
        "cap_shaped": bool(interior and rise >= min_change and fall >= min_change),
    }


def _spearman(a, b) -> float:
    res = sstats.spearmanr(a, b)
    return float(res.statistic if hasattr(res, "statistic") else res[0])


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _model_name(path: str) -> str:
    p = pathlib.Path(path)
    return p.parent.name if p.name == "model" else p.name


def _layers_label(drop) -> str:
    return ",".join(str(i + 1) for i in drop) or "-"


# ------------------------------------------------------------------------------------ sentences


def _corpus(config) -> dict[str, list]:
    c = config.corpus
    paragraphs = text.python_doc_paragraphs(c.source)
    calib_paras, held_paras = text.hash_split(paragraphs, c.heldout_fraction, salt="layers")
    rng = np.random.default_rng(config.seed)

    def sentences(paras):
        out = []
        for p in paras:
            out += [
                s
                for s in text.split_sentences(p)
                if 6 <= len(s.split()) <= 60 and s.rstrip().endswith((".", "!", "?", '."', ".)"))
            ]
        out = list(dict.fromkeys(out))
        return [out[i] for i in rng.permutation(len(out))]

    calib = sentences(calib_paras)
    held = sentences(held_paras)
    pairs = text.retrieval_pairs(held_paras)
    pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    need = {
        "num_calibration": (len(calib), c.num_calibration),
        "num_heldout": (len(held), c.num_heldout),
        "num_retrieval": (len(pairs), c.num_retrieval),
    }
    for name, (have, want) in need.items():
        if have < want:
            raise ValueError(
                f"config.corpus.{name}={want} but the corpus ({c.source!r}) has only {have}; "
                f"lower config.corpus.{name} or change config.corpus.heldout_fraction."
            )
    return {
        "calibration": calib[: c.num_calibration],
        "heldout": held[: c.num_heldout],
        "pairs": pairs[: c.num_retrieval],
    }


def _evaluate(model, tok, corpus, refs, config) -> dict[str, float]:
    kw = {"batch_size": config.eval_batch_size, "pad_to_multiple_of": config.pad_to_multiple_of}
    emb = pl.embed_texts(model, tok, corpus["heldout"], **kw)
    q = pl.embed_texts(model, tok, [p[0] for p in corpus["pairs"]], **kw)
    p = pl.embed_texts(model, tok, [p[1] for p in corpus["pairs"]], **kw)
    out = {"fidelity": pl.embedding_fidelity(emb, refs["heldout"])}
    out.update(pl.retrieval_scores(q, p))
    return out


def _recovery_batches(tok, corpus, targets, config):
    """Endless distillation batches of calibration sentences with the teacher's embeddings."""
    sents = corpus["calibration"]
    b = config.recovery.batch_size
    rng = np.random.default_rng(config.seed + 1)
    while True:
        order = rng.permutation(len(sents))
        for i in range(0, len(order) - b + 1, b):
            idx = order[i : i + b]
            batch = text.tokenize(
                tok, [sents[j] for j in idx], pad_to_multiple_of=config.pad_to_multiple_of
            )
            batch["target"] = targets[idx]
            yield batch


def run_sentences(config, workdir: pathlib.Path) -> dict[str, Any]:
    t0 = time.time()
    model_dir = pathlib.Path(config.model.path) if config.model.path else hf_loader.minilm_dir()
    model, model_cfg = hf_loader.load_pretrained(model_dir)
    if config.model.num_layers:
        if not 0 < config.model.num_layers <= model.num_layers:
            raise ValueError(
                f"config.model.num_layers={config.model.num_layers} must be in 1..{model.num_layers} "
                "(0 keeps every layer)."
            )
        model = pl.remove_layers(model, range(config.model.num_layers, model.num_layers))
        model_cfg = model.config
    tok = text.load_tokenizer(model_dir, max_length=config.model.max_length)
    corpus = _corpus(config)
    num_layers = model.num_layers
    logging.info(
        "model %s: %d layers, d=%d; corpus: %d calibration, %d held-out, %d pairs",
        model_dir,
        num_layers,
        model_cfg.hidden_size,
        len(corpus["calibration"]),
        len(corpus["heldout"]),
        len(corpus["pairs"]),
    )

    # --------------------------------------------------------------- scores on calibration batches
    calib_batches = text.token_batches(
        tok,
        corpus["calibration"],
        config.scores.batch_size,
        drop_remainder=True,
        pad_to_multiple_of=config.pad_to_multiple_of,
    )
    stats = pl.collect_statistics(
        model,
        track(calib_batches, desc="layer scores"),
        pooling=config.scores.pooling,
        extra_poolings=tuple(config.scores.extra_poolings),
    )
    entropy = (
        np.asarray(er.gaussian_entropy_constant(model_cfg.hidden_size, config.scores.sigma2))
        - stats.redundancy
    )
    # covariance spectra of the same hidden states, mean-pooled over tokens (redundax.monitor)
    spectra = monitor.measure(
        model,
        track(calib_batches, desc="covariance spectra"),
        where=r"embeddings|layers\.\d+",
        metrics=tuple(config.scores.monitor_metrics),
        reduce="mean",
        mask=lambda b: b["attention_mask"],
    )
    shape = profile_shape(stats.redundancy, config.scores.cap_min_change)
    t_scores = time.time() - t0
    logging.info("R_l = %s (%s)", np.round(stats.redundancy, 4).tolist(), shape)

    # --------------------------------------------------------------- reference and pruned models
    kw = {"batch_size": config.eval_batch_size, "pad_to_multiple_of": config.pad_to_multiple_of}
    refs = {"heldout": pl.embed_texts(model, tok, corpus["heldout"], **kw)}
    q = pl.embed_texts(model, tok, [p[0] for p in corpus["pairs"]], **kw)
    p = pl.embed_texts(model, tok, [p[1] for p in corpus["pairs"]], **kw)
    unpruned = {"fidelity": 1.0, **pl.retrieval_scores(q, p)}

    cache: dict[tuple[int, ...], dict[str, float]] = {}

    def evaluate(drop: tuple[int, ...]) -> dict[str, float]:
        if drop not in cache:
            cache[drop] = _evaluate(pl.remove_layers(model, drop), tok, corpus, refs, config)
        return cache[drop]

    single = []
    if config.prune.single_layer_ablation:
        for i in track(range(num_layers), desc="single-layer ablation"):
            single.append({"layer": i + 1, **evaluate((i,))})

    rows = []
    for criterion in track(config.prune.criteria, desc="pruning criteria"):
        seeds = config.prune.random_seeds if criterion == "random" else (None,)
        for k in config.prune.ks:
            for seed in seeds:
                drop = pl.select_layers(
                    criterion, k, num_layers, stats, seed=config.seed if seed is None else seed
                )
                row = {
                    "criterion": criterion,
                    "k": k,
                    "seed": seed,
                    "dropped": [i + 1 for i in drop],
                    **evaluate(drop),
                }
                rows.append(row)
                logging.info(
                    "%s k=%d drop %s: %s",
                    criterion,
                    k,
                    _layers_label(drop),
                    {m: round(v, 4) for m, v in row.items() if isinstance(v, float)},
                )

    # --------------------------------------------------------------- optional recovery fine-tune
    step_counter = [0]
    with metrics_lib.Writer(workdir) as writer:
        writer.write(
            0,
            {
                **{f"redundancy/layer{i + 1}": float(v) for i, v in enumerate(stats.redundancy)},
                **{
                    f"block_influence/layer{i + 1}": float(v)
                    for i, v in enumerate(stats.block_influence)
                },
                **{
                    f"knowledge_entropy/layer{i + 1}": float(v)
                    for i, v in enumerate(stats.knowledge_entropy)
                },
                **{f"monitor/{k}": v for k, v in monitor.flatten(spectra).items()},
            },
        )
        if config.recovery.steps > 0:
            kw_cal = {
                "batch_size": config.eval_batch_size,
                "pad_to_multiple_of": config.pad_to_multiple_of,
            }
            targets = pl.embed_texts(model, tok, corpus["calibration"], **kw_cal)
            recovered_cache: dict[tuple[int, ...], dict[str, float]] = {}
            for row in rows:
                if row["k"] != max(config.prune.ks) or row["seed"] not in (None, 0):
                    continue
                drop = tuple(i - 1 for i in row["dropped"])
                if drop not in recovered_cache:
                    tag = f"recovery/{_layers_label(drop)}"

                    with Progress(config.recovery.steps, desc=tag) as progress:

                        def on_step(step, m, tag=tag, progress=progress):
                            step_counter[0] += 1
                            writer.write(step_counter[0], {f"{tag}/{k}": v for k, v in m.items()})
                            if step % max(progress.total // 10, 1) == 0 or step == progress.total:
                                progress.update(step, m)

                        recovered = pl.recover(
                            pl.remove_layers(model, drop),
                            pl.distillation_loss,
                            _recovery_batches(tok, corpus, targets, config),
                            steps=config.recovery.steps,
                            learning_rate=config.recovery.learning_rate,
                            weight_decay=config.recovery.weight_decay,
                            seed=config.seed,
                            on_step=on_step,
                        )
                    recovered_cache[drop] = _evaluate(recovered, tok, corpus, refs, config)
                row.update({f"{m}_recovered": v for m, v in recovered_cache[drop].items()})

    # --------------------------------------------------------------- saved, reloaded checkpoint
    saved = None
    if config.prune.save_criterion:
        k = max(config.prune.ks)
        drop = pl.select_layers(config.prune.save_criterion, k, num_layers, stats, seed=config.seed)
        pruned = pl.remove_layers(model, drop)
        out_dir = workdir / f"pruned_{config.prune.save_criterion}_k{k}"
        pl.save_pruned(
            pruned,
            out_dir,
            dropped=drop,
            original_num_layers=num_layers,
            criterion=config.prune.save_criterion,
            statistics=stats,
            source_dir=model_dir,
        )
        reloaded, record = pl.load_pruned(out_dir)
        batch = text.tokenize(tok, corpus["heldout"][:8])
        a = pl.embed_batches(pruned, [batch])
        b = pl.embed_batches(reloaded, [batch])
        saved = {
            "path": str(out_dir),
            "dropped": [i + 1 for i in drop],
            "num_layers": reloaded.num_layers,
            "recorded_dropped": [i + 1 for i in record["dropped_layers"]],
            "reload_max_abs_diff": float(np.max(np.abs(a - b))),
        }

    # --------------------------------------------------------------- results
    results: dict[str, Any] = {
        "task": "sentences",
        "model": str(model_dir),
        "num_layers": num_layers,
        "hidden_size": model_cfg.hidden_size,
        "corpus": {k: len(v) for k, v in corpus.items()},
        "calibration": {
            "batch_size": config.scores.batch_size,
            "num_batches": stats.num_batches,
            "num_pairs": stats.num_pairs,
            "num_tokens": stats.num_tokens,
            "pooling": config.scores.pooling,
        },
        "statistics": stats.to_dict(),
        "layer_spectra": spectra,
        "entropy_rate": entropy.tolist(),
        "sigma2": config.scores.sigma2,
        "profile_shape": shape,
        "profile_shape_by_pooling": {
            k: profile_shape(np.asarray(v), config.scores.cap_min_change)
            for k, v in stats.redundancy_by_pooling.items()
        },
        "unpruned": unpruned,
        "single_layer_ablation": single,
        "pruning": rows,
        "saved_checkpoint": saved,
        "seconds": {"scores": t_scores, "total": time.time() - t0},
    }
    if single:
        damage = [1.0 - s["fidelity"] for s in single]
        results["criterion_vs_ablation_spearman"] = {
            "redundancy_vs_fidelity_loss": _spearman(-stats.redundancy, damage),
            "block_influence_vs_fidelity_loss": _spearman(stats.block_influence, damage),
            "knowledge_entropy_vs_fidelity_loss": _spearman(-stats.knowledge_entropy, damage),
        }
    _write_sentence_results(workdir, results, config)
    return results


def _write_sentence_results(workdir: pathlib.Path, results: dict[str, Any], config) -> None:
    metrics_lib.write_json(workdir / "results.json", results)
    st = results["statistics"]
    single = {s["layer"]: s for s in results["single_layer_ablation"]}
    prof_rows = []
    for i in range(results["num_layers"]):
        s = single.get(i + 1, {})
        prof_rows.append(
            [
                i + 1,
                st["redundancy"][i],
                results["entropy_rate"][i],
                st["block_influence"][i],
                st["knowledge_entropy"][i],
                s.get("fidelity", "-"),
                s.get("recall@1", "-"),
            ]
        )
    shape = results["profile_shape"]
    verdict = (
        f"peak at layer {shape['peak_layer']}, rise from layer 1 {100 * shape['rise_from_first']:.1f}%"
        f" of the peak, fall to layer {results['num_layers']} "
        f"{100 * shape['fall_to_last']:.1f}%; cap-shaped (both >= "
        f"{100 * config.scores.cap_min_change:.0f}%): {shape['cap_shaped']}; monotone "
        f"decreasing: {shape['monotone_decreasing']}"
    )
    metric_cols = ["fidelity", "recall@1", "recall@5", "mrr"]
    has_rec = any("fidelity_recovered" in r for r in results["pruning"])
    header = ["criterion", "k", "seed", "removed layers", *metric_cols]
    if has_rec:
        header += ["fidelity (recovered)", "recall@1 (recovered)"]
    rows = [
        ["unpruned", 0, "-", "-", *[results["unpruned"][m] for m in metric_cols]]
        + (["-", "-"] if has_rec else [])
    ]
    for r in results["pruning"]:
        row = [
            r["criterion"],
            r["k"],
            "-" if r["seed"] is None else r["seed"],
            _layers_label([i - 1 for i in r["dropped"]]),
            *[r[m] for m in metric_cols],
        ]
        if has_rec:
            row += [r.get("fidelity_recovered", "-"), r.get("recall@1_recovered", "-")]
        rows.append(row)
    parts = [
        "# Layer redundancy (Liang, 2025): " + _model_name(results["model"]),
        "",
        f"Calibration: {results['calibration']['num_batches']} batches of "
        f"B = {results['calibration']['batch_size']} sentences "
        f"({results['calibration']['pooling']}-pooled), "
        f"{results['calibration']['num_pairs']} pairs. Entropy rate H_l = d/2 ln(2 pi e sigma^2) "
        f"- R_l with sigma^2 = {results['sigma2']}.",
        "",
        "## Per-layer profile",
        "",
        _md_table(
            [
                "layer",
                "R_l (eq. 25)",
                "H_l (Thm 2, nats)",
                "block influence",
                "knowledge entropy",
                "fidelity w/o layer",
                "recall@1 w/o layer",
            ],
            prof_rows,
        ),
        "",
        f"Shape: {verdict}.",
        "",
    ]
    spectra = results.get("layer_spectra", {})
    if spectra:
        names = list(next(iter(spectra.values())))
        parts += [
            "Covariance spectra of the mean-pooled hidden states on the same calibration batches "
            "(`redundax.monitor`; `embeddings` is the input of layer 1):",
            "",
            _md_table(["hidden state", *names], [[k, *v.values()] for k, v in spectra.items()]),
            "",
        ]
    by_pool = st.get("redundancy_by_pooling", {})
    if len(by_pool) > 1:
        shapes = results["profile_shape_by_pooling"]
        parts += [
            "R_l under other poolings of the token states (same calibration passes): "
            "mean = mean over tokens, first = token 0, tokens = every token a sample.",
            "",
            _md_table(
                ["layer", *by_pool],
                [[i + 1, *[by_pool[k][i] for k in by_pool]] for i in range(results["num_layers"])],
            ),
            "",
            "; ".join(
                f"{k}: peak at layer {v['peak_layer']}, cap-shaped {v['cap_shaped']}"
                for k, v in shapes.items()
            )
            + ".",
            "",
        ]
        for k, v in by_pool.items():
            zeros = [i + 1 for i, x in enumerate(v) if x == 0.0]
            if zeros:
                parts += [
                    f"{k}: R_l = 0 exactly at layer(s) {zeros}: every consecutive difference of "
                    "the layer's input or output is zero (e.g. the first token's embedding is the "
                    "same [CLS] vector for every sentence), which the zero-difference convention "
                    "scores 0; a cap produced this way says nothing about redundancy.",
                    "",
                ]
    if "criterion_vs_ablation_spearman" in results:
        sp = results["criterion_vs_ablation_spearman"]
        parts += [
            "Spearman correlation between a criterion's prune-first ordering and the fidelity "
            "lost by removing that single layer (positive = the criterion prunes harmless layers "
            f"first): R_l {sp['redundancy_vs_fidelity_loss']:.3f}, block influence "
            f"{sp['block_influence_vs_fidelity_loss']:.3f}, knowledge entropy "
            f"{sp['knowledge_entropy_vs_fidelity_loss']:.3f}.",
            "",
        ]
    parts += [
        "## Pruning (held-out sentences and query -> passage retrieval)",
        "",
        _md_table(header, rows),
        "",
    ]
    if results["saved_checkpoint"]:
        s = results["saved_checkpoint"]
        parts += [
            f"Saved `{s['path']}` (layers {s['dropped']} removed, {s['num_layers']} kept); "
            f"reloaded max |diff| = {s['reload_max_abs_diff']:.2e}.",
            "",
        ]
    (workdir / "results.md").write_text("\n".join(parts))

    profiles = {f"R_l ({k}-pooled)": v for k, v in st.get("redundancy_by_pooling", {}).items()}
    plots.redundancy_profile(
        profiles or {"R_l": st["redundancy"]},
        workdir / "redundancy_profile.png",
        secondary={"BI": st["block_influence"]},
        title=f"{_model_name(results['model'])}: R_l per layer",
    )
    for metric, label in (
        ("fidelity", "fidelity (mean cosine)"),
        ("recall@1", "retrieval recall@1"),
    ):
        plots.pruning_curves(
            results["pruning"],
            metric,
            workdir / f"pruning_{metric.replace('@', '')}.png",
            baseline=results["unpruned"][metric],
            ylabel=label,
        )


# ------------------------------------------------------------------------------------ GLUE


def _classification_loss(num_labels: int) -> Callable:
    def loss_fn(model, batch, rng):
        del rng
        logits = model(
            batch["input_ids"],
            batch["attention_mask"],
            batch["token_type_ids"],
            deterministic=False,
        )
        if num_labels == 1:
            loss = jnp.mean((logits[:, 0] - batch["label"]) ** 2)
            return loss, {}
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return loss, {"accuracy": acc}

    return loss_fn


def _encode_split(tok, a, b, labels, max_len: int, limit: int):
    if limit:
        a, labels = a[:limit], labels[:limit]
        b = None if b is None else b[:limit]
    enc = text.tokenize(tok, a, b, length=max_len) if a else None
    if enc is None:
        raise ValueError("a GLUE split is empty.")
    enc["label"] = labels
    return enc


def _batches(data: dict[str, np.ndarray], batch_size: int, rng: np.random.Generator | None):
    n = data["input_ids"].shape[0]
    order = np.arange(n) if rng is None else rng.permutation(n)
    stop = n - n % batch_size if rng is not None else n
    for i in range(0, stop, batch_size):
        idx = order[i : i + batch_size]
        yield {k: v[idx] for k, v in data.items()}


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _logits(state, input_ids, attention_mask, token_type_ids, *, graphdef):
    return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids)


def _predict(model: SequenceClassifier, data, batch_size: int) -> np.ndarray:
    graphdef, state = nnx.split(model)
    out = [
        np.asarray(
            _logits(
                state, b["input_ids"], b["attention_mask"], b["token_type_ids"], graphdef=graphdef
            )
        )
        for b in _batches(data, batch_size, None)
    ]
    logits = np.concatenate(out)
    return logits[:, 0] if model.num_labels == 1 else logits.argmax(-1)


@functools.lru_cache(maxsize=8)
def _glue_train_step(
    num_labels: int, total: int, learning_rate: float, weight_decay: float, warmup_fraction: float
):
    """AdamW with linear warm-up/decay and its jitted step (`redundax.prune.layers`), for one
    classification head size: the loss function object is made once per `num_labels`."""
    tx, _, step = pl.adamw_warmup_step(
        _classification_loss(num_labels), total, learning_rate, weight_decay, warmup_fraction
    )
    return tx, step


def _finetune(
    model,
    train,
    config,
    epochs: int,
    spec,
    writer,
    tag: str,
    step0: int,
    on_epoch: Callable[[int, nnx.Module], None] | None = None,
):
    g = config.glue
    steps_per_epoch = train["input_ids"].shape[0] // g.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"glue.batch_size={g.batch_size} exceeds the {spec.name} training set.")
    tx, train_step = _glue_train_step(
        spec.num_labels,
        steps_per_epoch * epochs,
        float(g.learning_rate),
        float(g.weight_decay),
        float(g.warmup_fraction),
    )
    state = state_lib.create(pl.detached_copy(model), tx, config.seed)
    rng = np.random.default_rng(config.seed)
    step = step0
    with Progress(steps_per_epoch * epochs, desc=tag) as progress:
        for epoch in range(epochs):
            for batch in _batches(train, g.batch_size, rng):
                state, m = train_step(state, batch)
                step += 1
                if step % 50 == 0:
                    m = {k: float(v) for k, v in m.items()}
                    writer.write(step, {f"{tag}/{k}": v for k, v in m.items()})
                    progress.update(step - step0, m)
            if on_epoch is not None:
                on_epoch(epoch + 1, state.model())
    return state.model(), step


def _pooled_hidden(model: SequenceClassifier, batches, pooling: str) -> list[np.ndarray]:
    fn, state = make_hidden_fn(model.encoder)
    out = []
    for b in batches:
        h = fn(state, b["input_ids"], b["attention_mask"], b["token_type_ids"])
        if pooling == "first":
            out.append(np.asarray(h[:, :, 0]))
        else:
            out.append(np.asarray(mean_pool(h, b["attention_mask"])))
    return out


def run_glue(config, workdir: pathlib.Path, load_split: Callable = text.load_glue) -> dict:
    """The paper's Table 1 protocol (configs/layers.py, preset glue)."""
    g = config.glue
    if not g.model_path:
        raise ValueError(
            "config.glue.model_path is empty: point it at an HF-format RoBERTa-base directory "
            "(config.json, model.safetensors, tokenizer.json), e.g. one written by transformers' "
            "save_pretrained(safe_serialization=True) plus tokenizer.save_pretrained."
        )
    model_dir = pathlib.Path(g.model_path)
    hf_loader.load_config(model_dir)  # clear error when the directory is not a checkpoint
    tok = text.load_tokenizer(model_dir, max_length=g.max_length)
    dtype = {"float32": None, "bfloat16": jnp.bfloat16}[g.dtype]
    results: dict[str, Any] = {"task": "glue", "model": str(model_dir), "tasks": {}}
    with metrics_lib.Writer(workdir) as writer:
        step = 0
        for task in g.tasks:
            spec = text.glue_task(task)
            a, b, y = load_split(task, "train", g.data_dir or None)
            train = _encode_split(tok, a, b, y, g.max_length, g.max_train_examples)
            a, b, y = load_split(task, spec.eval_split, g.data_dir or None)
            evalset = _encode_split(tok, a, b, y, g.max_length, g.max_eval_examples)
            model, _ = hf_loader.load_classifier(
                model_dir, spec.num_labels, dtype=dtype, seed=config.seed
            )
            score_rng = np.random.default_rng(config.seed + 7)
            score_batches = list(_batches(train, config.scores.batch_size, score_rng))
            if g.score_batches:
                score_batches = score_batches[: g.score_batches]
            epochs: list[dict[str, Any]] = []
            previous: list[np.ndarray] | None = None
            holder: dict[str, Any] = {}

            def on_epoch(epoch, m, epochs=epochs, score_batches=score_batches, holder=holder):
                nonlocal previous
                stats = pl.collect_statistics(
                    m.encoder, score_batches, pooling=config.scores.pooling
                )
                pooled = _pooled_hidden(m, score_batches, config.scores.pooling)
                rec = {
                    "epoch": epoch,
                    "redundancy": stats.redundancy.tolist(),
                    "block_influence": stats.block_influence.tolist(),
                    "knowledge_entropy": stats.knowledge_entropy.tolist(),
                }
                if previous is not None:
                    acc = er.RedundancyAccumulator.zeros(m.encoder.num_layers)
                    for new, old in zip(pooled, previous, strict=True):
                        acc = acc.update(new, previous=old)
                    rec["spacetime_redundancy"] = np.asarray(acc.scores()).tolist()
                previous = pooled
                holder["stats"] = stats
                epochs.append(rec)

            model, step = _finetune(
                model, train, config, g.epochs, spec, writer, f"{task}/finetune", step, on_epoch
            )
            base = text.glue_metric(task, _predict(model, evalset, g.batch_size), evalset["label"])
            rows = [{"criterion": "none", "removed": [], **base}]
            stats = holder["stats"]
            for criterion in g.criteria:
                drop = pl.select_layers(
                    criterion, g.num_removed, model.encoder.num_layers, stats, seed=config.seed
                )
                pruned = pl.remove_layers(model, drop)
                pruned, step = _finetune(
                    pruned,
                    train,
                    config,
                    g.recovery_epochs,
                    spec,
                    writer,
                    f"{task}/{criterion}",
                    step,
                )
                metric = text.glue_metric(
                    task, _predict(pruned, evalset, g.batch_size), evalset["label"]
                )
                rows.append({"criterion": criterion, "removed": [i + 1 for i in drop], **metric})
                logging.info("%s %s drop %s: %s", task, criterion, _layers_label(drop), metric)
            results["tasks"][task] = {"metric": spec.metric, "epochs": epochs, "rows": rows}
            metrics_lib.write_json(workdir / "results.json", results)
    _write_glue_results(workdir, results)
    return results


def _write_glue_results(workdir: pathlib.Path, results: dict[str, Any]) -> None:
    metrics_lib.write_json(workdir / "results.json", results)
    tasks = list(results["tasks"])
    criteria = list(
        dict.fromkeys(r["criterion"] for t in tasks for r in results["tasks"][t]["rows"])
    )
    rows = []
    for c in criteria:
        row = [c]
        for t in tasks:
            match = [r for r in results["tasks"][t]["rows"] if r["criterion"] == c]
            row.append(match[0]["score"] if match else "-")
        rows.append(row)
    md = [
        "# Layer pruning on GLUE (Liang, 2025, Table 1 protocol)",
        "",
        _md_table(["criterion", *[f"{t} ({results['tasks'][t]['metric']})" for t in tasks]], rows),
        "",
    ]
    (workdir / "results.md").write_text("\n".join(md))
    profiles = {
        t: results["tasks"][t]["epochs"][-1]["redundancy"]
        for t in tasks
        if results["tasks"][t]["epochs"]
    }
    if profiles:
        plots.redundancy_profile(
            profiles, workdir / "redundancy_profile.png", title="R_l per layer after fine-tuning"
        )


# ------------------------------------------------------------------------------------ entry


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if config.task == "sentences":
        return run_sentences(config, workdir)
    if config.task == "glue":
        return run_glue(config, workdir)
    raise ValueError(f"config.task must be 'sentences' or 'glue'; got {config.task!r}.")


if __name__ == "__main__":
    cli.main(run, DEFAULT_CONFIG)
