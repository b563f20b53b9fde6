"""Layer entropy rate, redundancy score R_l and layer pruning of BERT-family encoders (Liang, 2025).

    python -m experiments.layers --config configs/layers.py --workdir runs/layers
    python -m experiments.layers --config configs/layers.py:glue --config.glue.model_path=DIR \\
        --config.data.data_dir=TFDS_DIR --workdir runs/glue

Default data "python_docs" (offline): load the pretrained MiniLM, split Python's documentation into
calibration and held-out paragraphs, stream eq. 25 over calibration batches (with ShortGPT block
influence and knowledge entropy from the same passes), check the profile's shape, remove k layers by
every criterion (and every single layer, as an oracle), and score each pruned encoder by fidelity to
the unpruned sentence embeddings and by held-out query -> passage retrieval; optionally recover with a
distillation fine-tune (`train.steps`). Data "glue": the paper's Table 1 protocol
(`redundax.glue.run_protocol`). The fine-tunes train data-parallel on the engine
(`redundax.prune.finetune`), each with its checkpoints under `<workdir>/recovery/` or
`<workdir>/glue/`: a SIGTERM saves and exits 143, the same command resumes, and a finished run
rerun reports that it is complete. Writes `results.json`, `results.md`, `metrics.jsonl`, PNG
figures and the pruned checkpoint of `prune.save_criterion` (HF format, reloaded and checked).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from configs import layers as layers_config
from redundax import glue, monitor, text
from redundax.functionals import entropy_rate as er
from redundax.models import hf_loader
from redundax.prune import finetune as ft
from redundax.prune import layer_study as study
from redundax.prune import layers as pl
from redundax.train import cli, config_schema
from redundax.train import mesh as mesh_lib
from redundax.train import metrics as metrics_lib
from redundax.train.progress import track

DEFAULT_CONFIG = str(pathlib.Path(__file__).resolve().parent.parent / "configs" / "layers.py")


def load_model(config):
    """The encoder (first `model.num_layers` layers), its directory and tokenizer."""
    model_dir = pathlib.Path(config.model.path) if config.model.path else hf_loader.minilm_dir()
    model, _ = hf_loader.load_pretrained(model_dir)
    if config.model.num_layers:
        if not 0 < config.model.num_layers <= model.num_layers:
            raise ValueError(
                f"config.model.num_layers={config.model.num_layers} must be in 1..{model.num_layers} "
                "(0 keeps every layer)."
            )
        model = pl.remove_layers(model, range(config.model.num_layers, model.num_layers))
    return model, model_dir, text.load_tokenizer(model_dir, max_length=config.model.max_length)


def layer_scores(model, tok, corpus, config):
    """R_l, block influence, knowledge entropy and covariance spectra on calibration batches."""
    batches = text.token_batches(
        tok,
        corpus["calibration"],
        config.scores.batch_size,
        drop_remainder=True,
        pad_to_multiple_of=config.data.pad_to_multiple_of,
    )
    stats = pl.collect_statistics(
        model,
        track(batches, desc="layer scores"),
        pooling=config.scores.pooling,
        extra_poolings=tuple(config.scores.extra_poolings),
    )
    # The spectra are summed over processes (`redundax.monitor`): each feeds its rows of every
    # batch, on one local device (the replicated eigendecompositions need no more).
    local = config.scores.batch_size // jax.process_count()
    rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)
    spectra = monitor.measure(
        model,
        track([{k: v[rows] for k, v in b.items()} for b in batches], desc="covariance spectra"),
        where=r"embeddings|layers\.\d+",
        metrics=tuple(config.scores.monitor_metrics),
        reduce="mean",
        mask=lambda b: b["attention_mask"],
        mesh=mesh_lib.make_data_mesh(jax.local_devices()[:1]),
    )
    return stats, spectra


def recover(model, drop, tok, corpus, targets, config, mesh, workdir):
    """The recovered encoder without layers `drop` (None when preempted)."""
    label = study.layers_label(drop)
    batches = study.distillation_batches(
        tok, corpus["calibration"], targets, batch_size=config.data.batch_size,
        seed=config.seed + 1, pad_to_multiple_of=config.data.pad_to_multiple_of,
    )  # fmt: skip
    state = ft.finetune(
        pl.remove_layers(model, drop), pl.distillation_loss, batches,
        num_steps=config.train.steps, optim_config=config.optim, mesh=mesh,
        rundir=workdir / "recovery" / f"drop_{label.replace(',', '_')}", config=config,
        checkpoint_every=config.checkpoint.every_steps, log_every=config.run.log_every,
        progress=config.run.progress, desc=f"recovery/{label}", seed=config.seed,
    )  # fmt: skip
    return None if state is None else ft.host_model(state)


def run_sentences(config, workdir: pathlib.Path, mesh) -> dict[str, Any] | None:
    t0 = time.time()
    model, model_dir, tok = load_model(config)
    corpus = study.sentence_corpus(config.data, config.seed)
    num_layers, d = model.num_layers, model.config.hidden_size
    logging.info("model %s: %d layers, d=%d; corpus %s", model_dir, num_layers, d,
                 {k: len(v) for k, v in corpus.items()})  # fmt: skip
    stats, spectra = layer_scores(model, tok, corpus, config)
    entropy = np.asarray(er.gaussian_entropy_constant(d, config.scores.sigma2)) - stats.redundancy
    shape = study.profile_shape(stats.redundancy, config.scores.cap_min_change)
    t_scores = time.time() - t0
    logging.info("R_l = %s (%s)", np.round(stats.redundancy, 4).tolist(), shape)

    kw = {
        "batch_size": config.eval.batch_size,
        "pad_to_multiple_of": config.data.pad_to_multiple_of,
    }
    reference = pl.embed_texts(model, tok, corpus["heldout"], **kw)
    unpruned = study.embedding_scores(model, tok, corpus, None, **kw)
    cache: dict[tuple[int, ...], dict[str, float]] = {}

    def scores(drop: tuple[int, ...]) -> dict[str, float]:
        if drop not in cache:
            pruned = pl.remove_layers(model, drop)
            cache[drop] = study.embedding_scores(pruned, tok, corpus, reference, **kw)
        return cache[drop]

    single = []
    if config.prune.single_layer_ablation:
        for i in track(range(num_layers), desc="single-layer ablation"):
            single.append({"layer": i + 1, **scores((i,))})
    rows = []
    for criterion in track(config.prune.criteria, desc="pruning criteria"):
        seeds = config.prune.random_seeds if criterion == "random" else (None,)
        for k in config.prune.ks:
            for seed in seeds:
                drop = pl.select_layers(criterion, k, num_layers, stats,
                                        seed=config.seed if seed is None else seed)  # fmt: skip
                rows.append({"criterion": criterion, "k": k, "seed": seed,
                             "dropped": [i + 1 for i in drop], **scores(drop)})  # fmt: skip

    if config.train.steps > 0:  # recovery fine-tunes of the largest k
        targets = pl.embed_texts(model, tok, corpus["calibration"], **kw)
        recovered: dict[tuple[int, ...], dict[str, float]] = {}
        for row in rows:
            if row["k"] != max(config.prune.ks) or row["seed"] not in (None, 0):
                continue
            drop = tuple(i - 1 for i in row["dropped"])
            if drop not in recovered:
                m = recover(model, drop, tok, corpus, targets, config, mesh, workdir)
                if m is None:
                    return None  # preempted: rerun the same command to resume
                recovered[drop] = study.embedding_scores(m, tok, corpus, reference, **kw)
            row.update({f"{k}_recovered": v for k, v in recovered[drop].items()})

    results: dict[str, Any] = {
        "task": "sentences",
        "model": str(model_dir),
        "num_layers": num_layers,
        "hidden_size": d,
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
            k: study.profile_shape(np.asarray(v), config.scores.cap_min_change)
            for k, v in stats.redundancy_by_pooling.items()
        },
        "unpruned": unpruned,
        "single_layer_ablation": single,
        "pruning": rows,
        "saved_checkpoint": None,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    if single:
        results["criterion_vs_ablation_spearman"] = study.ablation_spearman(stats, single)
    if jax.process_index() == 0:
        if config.prune.save_criterion:
            results["saved_checkpoint"] = study.save_and_reload(
                model, stats, config.prune.save_criterion, max(config.prune.ks),
                workdir=workdir, seed=config.seed, source_dir=model_dir,
                probe=text.tokenize(tok, corpus["heldout"][:8]),
            )  # fmt: skip
        results["seconds"] = {"scores": t_scores, "total": time.time() - t0}
        with metrics_lib.Writer(workdir) as writer:
            layer_values = {f"{name}/layer{i + 1}": float(v) for name in
                            ("redundancy", "block_influence", "knowledge_entropy")
                            for i, v in enumerate(getattr(stats, name))}  # fmt: skip
            writer.write(0, {**layer_values,
                             **{f"monitor/{k}": v for k, v in monitor.flatten(spectra).items()}})  # fmt: skip
        metrics_lib.write_json(workdir / "results.json", results)
        (workdir / "results.md").write_text(
            study.results_markdown(results, config.scores.cap_min_change)
        )
        study.write_figures(workdir, results)
    return results


def run_glue(config, workdir: pathlib.Path, mesh, load_split=text.load_glue) -> dict | None:
    """The paper's Table 1 protocol (configs/layers.py, preset glue)."""
    results = glue.run_protocol(config, workdir, mesh=mesh, load_split=load_split)
    if results is not None and jax.process_index() == 0:
        metrics_lib.write_json(workdir / "results.json", results)
        (workdir / "results.md").write_text(glue.results_markdown(results))
        glue.write_figures(workdir, results)
    return results


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, **kwargs) -> dict | None:
    """The sentence study or the GLUE protocol; a finished run is reported, not rerun."""
    config_schema.check_fields(config, layers_config.get_config())
    workdir = pathlib.Path(workdir)
    done = workdir / "results.json"
    if done.is_file():
        logging.info("%s: this run is complete (%s); nothing to do.", workdir, done.name)
        return metrics_lib.loads_json_file(done)
    workdir.mkdir(parents=True, exist_ok=True)
    mesh = mesh_lib.make_data_mesh()
    if config.data.name == "python_docs":
        return run_sentences(config, workdir, mesh)
    if config.data.name == "glue":
        return run_glue(config, workdir, mesh, **kwargs)
    raise ValueError(f"config.data.name must be 'python_docs' or 'glue'; got {config.data.name!r}.")


if __name__ == "__main__":
    cli.main(run, DEFAULT_CONFIG)
