"""Whole-layer pruning of BERT-family encoders: criteria, removal, checkpoints, recovery, evaluation.

Layers are numbered 0..L-1 as in `BertEncoder.layers` (HuggingFace `encoder.layer.{i}`); layer i reads
hidden state i and writes hidden state i+1, so its redundancy score is R_{i+1} of eq. 25 (Liang, 2025).
Criteria (`CRITERIA`), each giving the layers to drop:

- "redundancy": drop the k layers with the highest R_l (Liang 2025, Sec. 4.2, eq. 25), computed on
  mean-pooled sequence states of calibration batches with `RedundancyAccumulator`.
- "block_influence": ShortGPT (Men et al., 2024, eq. 1): BI_i = 1 - E_t cos(x_{i,t}, x_{i+1,t}) over
  the unmasked tokens of the calibration set; drop the k layers with the lowest BI.
- "random": LayerDrop-style structured removal (Fan et al., 2020) of k layers drawn uniformly without
  replacement from a seeded generator.
- "knowledge_entropy": Kim et al. (2025): with FFN memory coefficients C_t = act(W1 x_t), the
  dataset-averaged coefficient magnitudes c_bar_j = mean_t |C_{t,j}| are normalised to a distribution
  p_j = c_bar_j / sum_j c_bar_j over memory slots and KE = -sum_j p_j ln p_j per layer; following
  Liang (2025, Table 1) the k layers with the highest KE are dropped.
- "last": the last k layers.

Ties are broken towards the lower layer index. Embeddings and heads are always kept. Pruned models
are saved as HuggingFace-format checkpoints (`save_pruned`) with a `pruning.json` record and reload
with `load_pruned`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import shutil
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax import text as text_lib
from redundax.functionals.entropy_rate import RedundancyAccumulator
from redundax.models import hf_loader
from redundax.models.bert import BertEncoder, SequenceClassifier, apply_hidden, mean_pool

CRITERIA = ("redundancy", "block_influence", "random", "knowledge_entropy", "last")
PRUNING_FILE = "pruning.json"
# Files besides config.json / model.safetensors that make a checkpoint directory usable as a
# tokenizer and sentence-transformers model; copied into pruned checkpoints when present.
COMPANION_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "1_Pooling/config.json",
)


# ---------------------------------------------------------------------------------------------------
# Calibration statistics.


@dataclasses.dataclass(frozen=True)
class LayerStatistics:
    """Per-layer calibration statistics, entry i for layer i (0-based).

    Attributes:
      redundancy: R_{i+1} (eq. 25).
      block_influence: ShortGPT BI_i.
      knowledge_entropy: KE_i in nats (at most ln(intermediate_size)).
      num_batches: M, calibration batches seen.
      num_pairs: sequence pairs in eq. 25 (M (B - 1) for equal batches).
      num_tokens: unmasked tokens seen.
      redundancy_by_pooling: R_l under each pooling computed (`collect_statistics`).
    """

    redundancy: np.ndarray
    block_influence: np.ndarray
    knowledge_entropy: np.ndarray
    num_batches: int
    num_pairs: int
    num_tokens: int
    redundancy_by_pooling: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.redundancy.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "redundancy": [float(v) for v in self.redundancy],
            "block_influence": [float(v) for v in self.block_influence],
            "knowledge_entropy": [float(v) for v in self.knowledge_entropy],
            "num_batches": self.num_batches,
            "num_pairs": self.num_pairs,
            "num_tokens": self.num_tokens,
            "redundancy_by_pooling": {
                k: [float(v) for v in r] for k, r in self.redundancy_by_pooling.items()
            },
        }


def block_influence_sums(hidden: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Sum over unmasked tokens of cos(x_i, x_{i+1}) per layer, and the token count.

    Args:
      hidden: `(L+1, B, T, d)`; mask: `(B, T)`.

    Returns:
      `((L,) cosine sums, () count)`; BI = 1 - sums / count.
    """
    m = mask.astype(jnp.float32)
    h = hidden.astype(jnp.float32)
    norm = jnp.linalg.norm(h, axis=-1)
    dot = jnp.sum(h[1:] * h[:-1], axis=-1)
    cos = dot / jnp.maximum(norm[1:] * norm[:-1], 1e-12)
    return jnp.einsum("lbt,bt->l", cos, m), jnp.sum(m)


def knowledge_entropy_from_sums(coef_abs_sum: np.ndarray) -> np.ndarray:
    """KE per layer from summed |FFN coefficients| `(L, F)` (module docstring)."""
    c = np.asarray(coef_abs_sum, np.float64)
    total = c.sum(axis=-1, keepdims=True)
    p = c / np.where(total > 0, total, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


@functools.partial(jax.jit, static_argnames=("graphdef", "poolings"))
def _batch_statistics(state, input_ids, attention_mask, token_type_ids, *, graphdef, poolings):
    hidden, coef = apply_hidden(
        state, input_ids, attention_mask, token_type_ids, graphdef=graphdef, sow_ffn=True
    )
    h32 = hidden.astype(jnp.float32)
    accs = tuple(
        RedundancyAccumulator.from_hidden(h32, attention_mask, pooling=p) for p in poolings
    )
    bi_sum, count = block_influence_sums(hidden, attention_mask)
    return accs, bi_sum, count, jnp.sum(coef, axis=1)


def make_statistics_fn(model: BertEncoder, *, poolings: Sequence[str] = ("mean",)):
    """`(fn, state)`: `fn(state, input_ids, attention_mask, token_type_ids)` returns per-batch sums.

    The sums (one eq. 25 `RedundancyAccumulator` per pooling, block-influence cosine sums and token
    count, |FFN coefficient| sums) are small, so hidden states never leave the device.
    """
    graphdef, state = nnx.split(model)
    fn = functools.partial(_batch_statistics, graphdef=graphdef, poolings=tuple(poolings))
    return fn, state


def collect_statistics(
    model: BertEncoder,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    pooling: str = "mean",
    extra_poolings: Sequence[str] = (),
) -> LayerStatistics:
    """Stream calibration batches (dicts of `input_ids`, `attention_mask`, `token_type_ids`).

    `redundancy` uses `pooling`; R_l under each of `extra_poolings` is computed in the same passes
    and stored in `redundancy_by_pooling` (with `pooling` itself).
    """
    poolings = tuple(dict.fromkeys((pooling, *extra_poolings)))
    stats_fn, state = make_statistics_fn(model, poolings=poolings)
    accs = [RedundancyAccumulator.zeros(model.num_layers) for _ in poolings]
    bi = np.zeros(model.num_layers)
    coef = None
    tokens = 0.0
    m = 0
    for batch in batches:
        a, bi_sum, count, c = stats_fn(
            state,
            batch["input_ids"],
            batch["attention_mask"],
            batch.get("token_type_ids", np.zeros_like(batch["input_ids"])),
        )
        accs = [x.merge(y) for x, y in zip(accs, a, strict=True)]
        bi += np.asarray(bi_sum, np.float64)
        tokens += float(count)
        coef = np.asarray(c, np.float64) if coef is None else coef + np.asarray(c, np.float64)
        m += 1
    if m == 0:
        raise ValueError("`batches` is empty; pass at least one calibration batch.")
    return LayerStatistics(
        redundancy=np.asarray(accs[0].scores(), np.float64),
        block_influence=1.0 - bi / max(tokens, 1.0),
        knowledge_entropy=knowledge_entropy_from_sums(coef),
        num_batches=m,
        num_pairs=int(accs[0].num_pairs),
        num_tokens=int(tokens),
        redundancy_by_pooling={
            p: np.asarray(x.scores(), np.float64) for p, x in zip(poolings, accs, strict=True)
        },
    )


# ---------------------------------------------------------------------------------------------------
# Selection and removal.


def _top_k(values: np.ndarray, k: int, *, highest: bool) -> tuple[int, ...]:
    v = np.asarray(values, np.float64)
    order = np.lexsort((np.arange(v.size), -v if highest else v))
    return tuple(sorted(int(i) for i in order[:k]))


def select_layers(
    criterion: str,
    k: int,
    num_layers: int,
    statistics: LayerStatistics | None = None,
    *,
    seed: int = 0,
) -> tuple[int, ...]:
    """The k layers (0-based, sorted) that `criterion` removes (module docstring)."""
    if criterion not in CRITERIA:
        raise ValueError(f"`criterion` must be one of {CRITERIA}; got {criterion!r}.")
    if not 0 <= k < num_layers:
        raise ValueError(
            f"`k` (layers to remove) must be in [0, {num_layers - 1}] for a {num_layers}-layer "
            f"encoder; got {k}."
        )
    if criterion == "last":
        return tuple(range(num_layers - k, num_layers))
    if criterion == "random":
        rng = np.random.default_rng(seed)
        return tuple(sorted(int(i) for i in rng.choice(num_layers, size=k, replace=False)))
    if statistics is None:
        raise ValueError(
            f"criterion {criterion!r} needs calibration `statistics` (collect_statistics)."
        )
    if statistics.num_layers != num_layers:
        raise ValueError(
            f"`statistics` cover {statistics.num_layers} layers; the model has {num_layers}."
        )
    if criterion == "redundancy":
        return _top_k(statistics.redundancy, k, highest=True)
    if criterion == "knowledge_entropy":
        return _top_k(statistics.knowledge_entropy, k, highest=True)
    return _top_k(statistics.block_influence, k, highest=False)


def remove_layers(model: BertEncoder | SequenceClassifier, drop: Sequence[int]):
    """A copy of `model` without the layers `drop` (0-based); embeddings and head are kept.

    The copy shares nothing with `model` (`nnx.clone`); its config has the reduced layer count.
    """
    encoder = model.encoder if isinstance(model, SequenceClassifier) else model
    num = encoder.num_layers
    drop = sorted({int(i) for i in drop})
    bad = [i for i in drop if not 0 <= i < num]
    if bad:
        raise ValueError(f"`drop` has layer indices {bad} outside 0..{num - 1}.")
    if len(drop) == num:
        raise ValueError("`drop` removes every layer; keep at least one.")
    out = nnx.clone(model)
    enc = out.encoder if isinstance(out, SequenceClassifier) else out
    keep = [i for i in range(num) if i not in drop]
    enc.layers = nnx.List([enc.layers[i] for i in keep])
    enc.config = enc.config.replace(num_hidden_layers=len(keep))
    return out


def save_pruned(
    model: BertEncoder | SequenceClassifier,
    path,
    *,
    dropped: Sequence[int],
    original_num_layers: int,
    criterion: str | None = None,
    statistics: LayerStatistics | None = None,
    source_dir=None,
) -> pathlib.Path:
    """Write a loadable HF-format checkpoint of a pruned model plus `pruning.json`.

    Tokenizer and sentence-transformers files are copied from `source_dir` when given, so the
    directory loads with `load_pruned`, `redundax.text.load_tokenizer` and HF / sentence-transformers.
    """
    path = hf_loader.save_pretrained(model, path)
    record = {
        "dropped_layers": [int(i) for i in sorted(dropped)],
        "kept_layers": [i for i in range(original_num_layers) if i not in set(dropped)],
        "original_num_layers": int(original_num_layers),
        "criterion": criterion,
        "statistics": None if statistics is None else statistics.to_dict(),
    }
    (path / PRUNING_FILE).write_text(json.dumps(record, indent=2))
    if source_dir is not None:
        src = pathlib.Path(source_dir)
        for name in COMPANION_FILES:
            if (src / name).is_file():
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, path / name)
    return path


def load_pruned(path, *, classifier: bool = False, dtype=None):
    """Reload a `save_pruned` checkpoint: `(model, record)` with the `pruning.json` record."""
    path = pathlib.Path(path)
    if classifier:
        model, _ = hf_loader.load_classifier(path, dtype=dtype)
    else:
        model, _ = hf_loader.load_pretrained(path, dtype=dtype)
    record_file = path / PRUNING_FILE
    record = json.loads(record_file.read_text()) if record_file.is_file() else None
    return model, record


# ---------------------------------------------------------------------------------------------------
# Recovery fine-tuning (the loss; `redundax.prune.finetune` runs it on the engine).


def distillation_loss(
    model: BertEncoder, batch: dict[str, jax.Array], rng
) -> tuple[jax.Array, dict]:
    """1 - cos(mean-pooled embedding of the pruned model, the unpruned teacher's `batch["target"]`)."""
    del rng
    hidden = model(
        batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], deterministic=False
    )
    emb = mean_pool(hidden[-1], batch["attention_mask"])
    target = batch["target"]
    cos = jnp.sum(emb * target, -1) / (
        jnp.linalg.norm(emb, axis=-1) * jnp.linalg.norm(target, axis=-1) + 1e-12
    )
    loss = jnp.mean(1.0 - cos)
    return loss, {"cosine": jnp.mean(cos)}


# ---------------------------------------------------------------------------------------------------
# Evaluation of sentence embeddings.


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _pooled_last(state, input_ids, attention_mask, token_type_ids, *, graphdef):
    hidden = apply_hidden(state, input_ids, attention_mask, token_type_ids, graphdef=graphdef)
    return mean_pool(hidden[-1], attention_mask)


def embed_batches(model: BertEncoder, batches: Iterable[dict[str, np.ndarray]]) -> np.ndarray:
    """Mean-pooled last-layer embeddings (not normalised) of token batches, concatenated `(N, d)`."""
    graphdef, state = nnx.split(model)
    pooled = functools.partial(_pooled_last, graphdef=graphdef)
    out = [
        np.asarray(
            pooled(
                state,
                b["input_ids"],
                b["attention_mask"],
                b.get("token_type_ids", np.zeros_like(b["input_ids"])),
            )
        )
        for b in batches
    ]
    return np.concatenate(out, axis=0)


def embed_texts(
    model: BertEncoder,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 64,
    pad_to_multiple_of: int = 32,
) -> np.ndarray:
    """Mean-pooled embeddings `(N, d)` of `texts` (in their order), batched by similar length.

    Texts are sorted by token count before batching (less padding, few distinct shapes to
    compile) and the rows are put back in the input order.
    """
    if len(texts) == 0:
        raise ValueError("`texts` is empty.")
    lengths = [len(e.ids) for e in tokenizer.encode_batch(list(texts))]
    order = np.argsort(lengths, kind="stable")
    batches = text_lib.token_batches(
        tokenizer, [texts[i] for i in order], batch_size, pad_to_multiple_of=pad_to_multiple_of
    )
    emb = embed_batches(model, batches)
    out = np.empty_like(emb)
    out[order] = emb
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def embedding_fidelity(pruned: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine similarity between pruned and unpruned embeddings of the same sentences."""
    if pruned.shape != reference.shape:
        raise ValueError(f"shapes differ: {pruned.shape} vs {reference.shape}.")
    return float(np.mean(np.sum(_unit(pruned) * _unit(reference), axis=-1)))


def retrieval_scores(queries: np.ndarray, passages: np.ndarray) -> dict[str, float]:
    """Query i should retrieve passage i among all passages by cosine similarity.

    Returns:
      `recall@1`, `recall@5` and `mrr` (mean reciprocal rank); ties count against the query.
    """
    if queries.shape != passages.shape:
        raise ValueError(f"queries {queries.shape} and passages {passages.shape} must match.")
    sim = _unit(queries) @ _unit(passages).T
    own = np.diag(sim)
    rank = np.sum(sim >= own[:, None], axis=1)  # passages at least as similar, own included
    return {
        "recall@1": float(np.mean(rank <= 1)),
        "recall@5": float(np.mean(rank <= 5)),
        "mrr": float(np.mean(1.0 / rank)),
    }


__all__ = [
    "COMPANION_FILES",
    "CRITERIA",
    "PRUNING_FILE",
    "LayerStatistics",
    "block_influence_sums",
    "collect_statistics",
    "distillation_loss",
    "embed_batches",
    "embed_texts",
    "embedding_fidelity",
    "knowledge_entropy_from_sums",
    "load_pruned",
    "make_statistics_fn",
    "remove_layers",
    "retrieval_scores",
    "save_pruned",
    "select_layers",
]
