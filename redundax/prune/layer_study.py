"""The sentence-embedding study of layer pruning (Liang, 2025): corpus, scoring, report.

The offline task of `experiments/layers.py`, as importable pieces:

- `profile_shape(r, min_change)`: R_l against the paper's cap-shape claim.
- `sentence_corpus(data, seed)`: calibration sentences, held-out sentences and held-out
  (query, passage) pairs from Python's documentation (`redundax.text`), split by paragraph hash.
- `embedding_scores(model, tokenizer, corpus, reference, *, batch_size, pad_to_multiple_of)`:
  fidelity to the unpruned held-out embeddings and query -> passage retrieval.
- `distillation_batches(tokenizer, sentences, targets, *, batch_size, seed, pad_to_multiple_of)`:
  resumable shuffled training batches for the recovery fine-tune (`redundax.prune.finetune`)
  towards the teacher's embeddings `targets` (`redundax.prune.layers.distillation_loss`).
- `save_and_reload(model, statistics, criterion, k, *, workdir, ...)`: the pruned checkpoint of
  one criterion (`redundax.prune.layers.save_pruned`), reloaded and compared on a probe batch.
- `ablation_spearman(statistics, single)`: Spearman correlation between each criterion's
  prune-first order and the fidelity lost by removing each single layer.
- `results_markdown(results, cap_min_change)`, `write_figures(workdir, results)`: the report.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats as sstats

from redundax import text
from redundax.plots import layers as plots
from redundax.prune import layers as pl
from redundax.prune.finetune import ShuffledBatches


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


def sentence_corpus(data: Any, seed: int) -> dict[str, list]:
    """`calibration`, `heldout` sentences and retrieval `pairs` of the `data` config section
    (`source`, `heldout_fraction`, `num_calibration`, `num_heldout`, `num_retrieval`)."""
    paragraphs = text.python_doc_paragraphs(data.source)
    calib_paras, held_paras = text.hash_split(paragraphs, data.heldout_fraction, salt="layers")
    rng = np.random.default_rng(seed)

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
        "num_calibration": (len(calib), data.num_calibration),
        "num_heldout": (len(held), data.num_heldout),
        "num_retrieval": (len(pairs), data.num_retrieval),
    }
    for name, (have, want) in need.items():
        if have < want:
            raise ValueError(
                f"config.data.{name}={want} but the corpus ({data.source!r}) has only {have}; "
                f"lower config.data.{name} or change config.data.heldout_fraction."
            )
    return {
        "calibration": calib[: data.num_calibration],
        "heldout": held[: data.num_heldout],
        "pairs": pairs[: data.num_retrieval],
    }


def embedding_scores(
    model,
    tokenizer,
    corpus: Mapping[str, list],
    reference: np.ndarray | None,
    *,
    batch_size: int,
    pad_to_multiple_of: int,
) -> dict[str, float]:
    """`fidelity` (mean cosine to `reference`, the unpruned held-out embeddings; 1 when None),
    `recall@1`, `recall@5` and `mrr` of held-out query -> passage retrieval."""
    kw = {"batch_size": batch_size, "pad_to_multiple_of": pad_to_multiple_of}
    q = pl.embed_texts(model, tokenizer, [p[0] for p in corpus["pairs"]], **kw)
    p = pl.embed_texts(model, tokenizer, [p[1] for p in corpus["pairs"]], **kw)
    if reference is None:
        out = {"fidelity": 1.0}
    else:
        emb = pl.embed_texts(model, tokenizer, corpus["heldout"], **kw)
        out = {"fidelity": pl.embedding_fidelity(emb, reference)}
    out.update(pl.retrieval_scores(q, p))
    return out


def distillation_batches(
    tokenizer,
    sentences: Sequence[str],
    targets: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    pad_to_multiple_of: int,
) -> ShuffledBatches:
    """Shuffled batches of `sentences` (tokenised per global batch) with `target` embeddings."""
    if len(sentences) != len(targets):
        raise ValueError(f"{len(sentences)} sentences but {len(targets)} target embeddings.")

    def fetch(idx: np.ndarray) -> dict[str, np.ndarray]:
        batch = text.tokenize(
            tokenizer, [sentences[j] for j in idx], pad_to_multiple_of=pad_to_multiple_of
        )
        batch["target"] = np.asarray(targets)[idx]
        return batch

    return ShuffledBatches(len(sentences), batch_size, seed, fetch)


def save_and_reload(
    model,
    statistics: pl.LayerStatistics,
    criterion: str,
    k: int,
    *,
    workdir: pathlib.Path,
    seed: int,
    source_dir,
    probe: Mapping[str, np.ndarray],
) -> dict[str, Any]:
    """Save `model` without the `k` layers `criterion` removes as `workdir/pruned_<criterion>_k<k>`,
    reload it and report the largest embedding difference on the `probe` batch (0 expected)."""
    num_layers = model.num_layers
    drop = pl.select_layers(criterion, k, num_layers, statistics, seed=seed)
    pruned = pl.remove_layers(model, drop)
    out_dir = pathlib.Path(workdir) / f"pruned_{criterion}_k{k}"
    pl.save_pruned(
        pruned, out_dir, dropped=drop, original_num_layers=num_layers, criterion=criterion,
        statistics=statistics, source_dir=source_dir,
    )  # fmt: skip
    reloaded, record = pl.load_pruned(out_dir)
    diff = np.abs(pl.embed_batches(pruned, [probe]) - pl.embed_batches(reloaded, [probe]))
    return {
        "path": str(out_dir),
        "dropped": [i + 1 for i in drop],
        "num_layers": reloaded.num_layers,
        "recorded_dropped": [i + 1 for i in record["dropped_layers"]],
        "reload_max_abs_diff": float(np.max(diff)),
    }


def _spearman(a, b) -> float:
    res = sstats.spearmanr(a, b)
    return float(res.statistic if hasattr(res, "statistic") else res[0])


def ablation_spearman(statistics: pl.LayerStatistics, single: Sequence[Mapping]) -> dict:
    """Spearman correlation of each criterion's prune-first order with single-layer damage."""
    damage = [1.0 - s["fidelity"] for s in single]
    return {
        "redundancy_vs_fidelity_loss": _spearman(-statistics.redundancy, damage),
        "block_influence_vs_fidelity_loss": _spearman(statistics.block_influence, damage),
        "knowledge_entropy_vs_fidelity_loss": _spearman(-statistics.knowledge_entropy, damage),
    }


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats with 4 decimals."""

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def model_name(path: str) -> str:
    """A checkpoint directory's display name."""
    p = pathlib.Path(path)
    return p.parent.name if p.name == "model" else p.name


def layers_label(drop: Sequence[int]) -> str:
    """0-based layer indices as a 1-based label: (0, 2) -> "1,3"."""
    return ",".join(str(i + 1) for i in drop) or "-"


def _profile_section(results: Mapping[str, Any], cap_min_change: float) -> list[str]:
    st = results["statistics"]
    single = {s["layer"]: s for s in results["single_layer_ablation"]}
    rows = []
    for i in range(results["num_layers"]):
        s = single.get(i + 1, {})
        rows.append(
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
        f"{100 * cap_min_change:.0f}%): {shape['cap_shaped']}; monotone "
        f"decreasing: {shape['monotone_decreasing']}"
    )
    header = ["layer", "R_l (eq. 25)", "H_l (Thm 2, nats)", "block influence"]
    header += ["knowledge entropy", "fidelity w/o layer", "recall@1 w/o layer"]
    cal = results["calibration"]
    return [
        "# Layer redundancy (Liang, 2025): " + model_name(results["model"]),
        "",
        f"Calibration: {cal['num_batches']} batches of B = {cal['batch_size']} sentences "
        f"({cal['pooling']}-pooled), {cal['num_pairs']} pairs. Entropy rate H_l = d/2 "
        f"ln(2 pi e sigma^2) - R_l with sigma^2 = {results['sigma2']}.",
        "",
        "## Per-layer profile",
        "",
        md_table(header, rows),
        "",
        f"Shape: {verdict}.",
        "",
    ]


def _pooling_section(results: Mapping[str, Any]) -> list[str]:
    parts = []
    spectra = results.get("layer_spectra", {})
    if spectra:
        names = list(next(iter(spectra.values())))
        parts += [
            "Covariance spectra of the mean-pooled hidden states on the same calibration batches "
            "(`redundax.monitor`; `embeddings` is the input of layer 1):",
            "",
            md_table(["hidden state", *names], [[k, *v.values()] for k, v in spectra.items()]),
            "",
        ]
    by_pool = results["statistics"].get("redundancy_by_pooling", {})
    if len(by_pool) > 1:
        shapes = results["profile_shape_by_pooling"]
        parts += [
            "R_l under other poolings of the token states (same calibration passes): "
            "mean = mean over tokens, first = token 0, tokens = every token a sample.",
            "",
            md_table(
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
    return parts


def _pruning_section(results: Mapping[str, Any]) -> list[str]:
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
            layers_label([i - 1 for i in r["dropped"]]),
            *[r[m] for m in metric_cols],
        ]
        if has_rec:
            row += [r.get("fidelity_recovered", "-"), r.get("recall@1_recovered", "-")]
        rows.append(row)
    parts = ["## Pruning (held-out sentences and query -> passage retrieval)", ""]
    parts += [md_table(header, rows), ""]
    if results["saved_checkpoint"]:
        s = results["saved_checkpoint"]
        parts += [
            f"Saved `{s['path']}` (layers {s['dropped']} removed, {s['num_layers']} kept); "
            f"reloaded max |diff| = {s['reload_max_abs_diff']:.2e}.",
            "",
        ]
    return parts


def results_markdown(results: Mapping[str, Any], cap_min_change: float) -> str:
    """`results.md` of the sentence task's `results.json` content."""
    parts = _profile_section(results, cap_min_change)
    parts += _pooling_section(results) + _pruning_section(results)
    return "\n".join(parts)


def write_figures(workdir: pathlib.Path, results: Mapping[str, Any]) -> None:
    """The R_l profile and the pruning curves (fidelity, recall@1) as PNG files."""
    st = results["statistics"]
    profiles = {f"R_l ({k}-pooled)": v for k, v in st.get("redundancy_by_pooling", {}).items()}
    plots.redundancy_profile(
        profiles or {"R_l": st["redundancy"]},
        workdir / "redundancy_profile.png",
        secondary={"BI": st["block_influence"]},
        title=f"{model_name(results['model'])}: R_l per layer",
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


__all__ = [
    "ablation_spearman",
    "distillation_batches",
    "embedding_scores",
    "layers_label",
    "md_table",
    "model_name",
    "profile_shape",
    "results_markdown",
    "save_and_reload",
    "sentence_corpus",
    "write_figures",
]
