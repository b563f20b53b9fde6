"""Tokenisation with the `tokenizers` package and an offline English corpus shipped with Python.

Corpus. CPython ships the text of its language reference for `help()` as `pydoc_data.topics.topics`
(about 80 topics, 0.5 MB of English prose). `python_doc_paragraphs` turns it into paragraphs: topics in
sorted order, blocks separated by blank lines, with headings (a line underlined by `*`, `=` or `-`),
indented blocks (code and grammar) and list items removed, lines joined. `split_sentences` splits a
paragraph after `.`, `!` or `?` followed by whitespace and an upper-case letter, quote or parenthesis.
The corpus is deterministic for a given Python version (the text changes between releases); if
`pydoc_data` is missing (some distributions strip it) the docstrings of a fixed list of standard-library
modules are used instead, cleaned the same way.

Splits are by a hash of the text (`hash_split`), so they do not depend on the order in which the corpus
was built. Retrieval pairs (`retrieval_pairs`) take the first sentence of a paragraph as the query and
the rest of the paragraph as its passage.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pathlib
import re
import warnings
import zlib
from collections.abc import Sequence

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_UNDERLINE = re.compile(r"^\s*([*=\-~^])\1{2,}\s*$")
_ABBREVIATIONS = (("e.g.", "e\x00g\x00"), ("i.e.", "i\x00e\x00"), ("etc.", "etc\x00"))
_TERMINAL = re.compile(r"[.!?][\"')]*$")
_LIST_ITEM = re.compile(r"^\s*([*\-+]|\d+\.)\s")
FALLBACK_MODULES = (
    "abc", "argparse", "asyncio", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools",
    "heapq", "http.client", "inspect", "io", "itertools", "json", "logging", "math", "operator",
    "os", "pathlib", "pickle", "queue", "random", "re", "shutil", "socket", "sqlite3", "statistics",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "typing", "unittest",
    "urllib.parse", "uuid", "warnings", "weakref", "zipfile",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Corpus.


def _clean_blocks(text: str) -> list[str]:
    """Prose paragraphs of a reStructuredText-like plain text (module docstring)."""
    lines = text.splitlines()
    out, block = [], []

    def flush():
        if block:
            para = " ".join(s.strip() for s in block)
            para = re.sub(r"\s+", " ", para).strip()
            if para:
                out.append(para)
            block.clear()

    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not line.strip():
            flush()
            continue
        if _UNDERLINE.match(line) or _UNDERLINE.match(nxt):
            flush()  # a heading or its underline
            continue
        if line.startswith(("   ", "\t", ">>>", "...")) or _LIST_ITEM.match(line):
            flush()  # code, grammar, doctest or list item
            continue
        block.append(line)
    flush()
    return out


def _pydoc_texts() -> list[str] | None:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return None
    return [topics[k] for k in sorted(topics)]


def _docstring_texts(modules: Sequence[str] = FALLBACK_MODULES) -> list[str]:
    texts = []
    with warnings.catch_warnings():  # deprecated aliases (typing.io, ...) warn when touched
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in modules:
            texts += _module_docstrings(name)
    return texts


def _module_docstrings(name: str) -> list[str]:
    try:
        mod = importlib.import_module(name)
    except ImportError:
        return []
    texts = [inspect.cleandoc(mod.__doc__)] if mod.__doc__ else []
    for attr in sorted(vars(mod)):
        obj = getattr(mod, attr)
        if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            texts.append(doc)
    return texts


def python_doc_paragraphs(source: str = "auto", min_words: int = 8) -> list[str]:
    """English prose paragraphs from the documentation that ships with Python (module docstring).

    Args:
      source: "pydoc" (language-reference topics), "docstrings" (standard-library docstrings) or
        "auto" (pydoc when available).
      min_words: drop paragraphs shorter than this.

    Returns:
      Paragraphs in a deterministic order, duplicates removed.
    """
    if source not in ("auto", "pydoc", "docstrings"):
        raise ValueError(f"`source` must be 'auto', 'pydoc' or 'docstrings'; got {source!r}.")
    texts = None if source == "docstrings" else _pydoc_texts()
    if texts is None:
        if source == "pydoc":
            raise ValueError(
                "`pydoc_data` is not available in this Python; use source='docstrings' or 'auto'."
            )
        texts = _docstring_texts()
    seen, out = set(), []
    for text in texts:
        for para in _clean_blocks(text):
            if len(para.split()) >= min_words and para not in seen:
                seen.add(para)
                out.append(para)
    return out


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph (split rule in the module docstring; "e.g." and "i.e." do not split)."""
    protected = paragraph
    for abbr, token in _ABBREVIATIONS:
        protected = protected.replace(abbr, token)
    parts = _SENTENCE_END.split(protected)
    out = []
    for part in parts:
        for abbr, token in _ABBREVIATIONS:
            part = part.replace(token, abbr)
        if part.strip():
            out.append(part.strip())
    return out


def python_doc_sentences(
    source: str = "auto", min_words: int = 6, max_words: int = 60
) -> list[str]:
    """Complete sentences of `python_doc_paragraphs`: `min_words` to `max_words` words, ending in
    terminal punctuation (fragments that introduced a removed code block are dropped), deduplicated."""
    seen, out = set(), []
    for para in python_doc_paragraphs(source):
        for s in split_sentences(para):
            n = len(s.split())
            if min_words <= n <= max_words and _TERMINAL.search(s) and s not in seen:
                seen.add(s)
                out.append(s)
    return out


def hash_split(items: Sequence[str], held_out_fraction: float, salt: str = "redundax"):
    """Split strings into (kept, held_out) by the CRC32 of `salt + text` (order independent)."""
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError(f"`held_out_fraction` must be in [0, 1]; got {held_out_fraction}.")
    threshold = int(held_out_fraction * 2**32)
    kept, held = [], []
    for s in items:
        (held if zlib.crc32((salt + s).encode()) < threshold else kept).append(s)
    return kept, held


def retrieval_pairs(paragraphs: Sequence[str], max_passage_words: int = 120):
    """(query, passage) pairs: first sentence of a paragraph and the rest of it (>= 1 sentence)."""
    pairs = []
    for para in paragraphs:
        sents = split_sentences(para)
        if len(sents) < 2 or len(sents[0].split()) < 5:
            continue
        passage = " ".join(" ".join(sents[1:]).split()[:max_passage_words])
        pairs.append((sents[0], passage))
    return pairs


# ---------------------------------------------------------------------------------------------------
# Tokenisation.


def load_tokenizer(path, max_length: int | None = None):
    """A `tokenizers.Tokenizer` from `tokenizer.json` in directory (or file) `path`.

    Truncation is set to `max_length` (default: `max_seq_length` of a sentence-transformers
    `sentence_bert_config.json` beside it, else the tokenizer file's own, else 512) and padding to the
    longest sequence of each batch.
    """
    from tokenizers import Tokenizer

    path = pathlib.Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise ValueError(
            f"no {TOKENIZER_FILE} at `{path}`; pass the checkpoint directory that holds the fast "
            "tokenizer file (transformers' tokenizer.save_pretrained writes it)."
        )
    tok = Tokenizer.from_file(str(file))
    if max_length is None:
        st_cfg = file.parent / "sentence_bert_config.json"
        if st_cfg.is_file():
            max_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", 512))
        elif tok.truncation is not None:
            max_length = int(tok.truncation["max_length"])
        else:
            max_length = 512
    tok.enable_truncation(max_length=max_length)
    pad = tok.padding or {}
    pad_id = pad.get("pad_id", tok.token_to_id("[PAD]") or tok.token_to_id("<pad>") or 0)
    pad_token = pad.get("pad_token", "[PAD]")
    tok.enable_padding(pad_id=pad_id, pad_token=pad_token, length=None)
    return tok


def tokenize(
    tokenizer,
    texts: Sequence[str],
    text_pairs: Sequence[str] | None = None,
    *,
    pad_to_multiple_of: int = 8,
    length: int | None = None,
) -> dict[str, np.ndarray]:
    """Token ids of a batch: `input_ids`, `attention_mask`, `token_type_ids` int32 `(B, T)`.

    Padded to the longest sequence rounded up to `pad_to_multiple_of` (fewer distinct shapes, fewer
    compilations), or to exactly `length` when given (sequences are truncated to the tokenizer's
    `max_length` first). Pass `text_pairs` for sentence-pair tasks.
    """
    if isinstance(texts, str):
        raise ValueError(
            "`texts` must be a sequence of strings, not one string; wrap it in a list."
        )
    if text_pairs is not None and len(text_pairs) != len(texts):
        raise ValueError(
            f"`text_pairs` must have one entry per text: {len(text_pairs)} != {len(texts)}."
        )
    inputs = list(texts) if text_pairs is None else list(zip(texts, text_pairs, strict=True))
    encs = tokenizer.encode_batch(inputs)
    longest = max((len(e.ids) for e in encs), default=1)
    if length is None:
        length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    elif length < longest:
        raise ValueError(f"`length`={length} is shorter than the longest sequence ({longest}).")
    pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    out = {
        "input_ids": np.full((len(encs), length), pad_id, np.int32),
        "attention_mask": np.zeros((len(encs), length), np.int32),
        "token_type_ids": np.zeros((len(encs), length), np.int32),
    }
    for i, e in enumerate(encs):
        n = int(sum(e.attention_mask))
        out["input_ids"][i, :n] = e.ids[:n]
        out["attention_mask"][i, :n] = 1
        out["token_type_ids"][i, :n] = e.type_ids[:n]
    return out


def token_batches(
    tokenizer,
    texts: Sequence[str],
    batch_size: int,
    *,
    pad_to_multiple_of: int = 8,
    drop_remainder: bool = False,
):
    """Tokenised batches of `texts` in order (a list of `tokenize` dicts)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1; got {batch_size}.")
    stop = len(texts) - len(texts) % batch_size if drop_remainder else len(texts)
    return [
        tokenize(
            tokenizer, texts[i : min(i + batch_size, stop)], pad_to_multiple_of=pad_to_multiple_of
        )
        for i in range(0, stop, batch_size)
    ]


# ---------------------------------------------------------------------------------------------------
# GLUE (Wang et al., 2018) through TFDS.


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """A GLUE task as TFDS `glue/<name>` stores it.

    Attributes:
      name: TFDS config name.
      text_keys: one or two text features (a sentence or a sentence pair).
      num_labels: classes (1 = regression, STS-B).
      metric: the task metric of Liang (2025, Table 1): "accuracy", "mcc" (CoLA), "f1" (MRPC, QQP)
        or "pearson" (STS-B).
      eval_split: the labelled evaluation split.
    """

    name: str
    text_keys: tuple[str, ...]
    num_labels: int
    metric: str
    eval_split: str = "validation"


GLUE_TASKS = {
    t.name: t
    for t in (
        GlueTask("mnli", ("premise", "hypothesis"), 3, "accuracy", "validation_matched"),
        GlueTask("mrpc", ("sentence1", "sentence2"), 2, "f1"),
        GlueTask("sst2", ("sentence",), 2, "accuracy"),
        GlueTask("cola", ("sentence",), 2, "mcc"),
        GlueTask("qnli", ("question", "sentence"), 2, "accuracy"),
        GlueTask("qqp", ("question1", "question2"), 2, "f1"),
        GlueTask("rte", ("sentence1", "sentence2"), 2, "accuracy"),
        GlueTask("stsb", ("sentence1", "sentence2"), 1, "pearson"),
    )
}


def glue_task(name: str) -> GlueTask:
    if name not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; choose from {sorted(GLUE_TASKS)}.")
    return GLUE_TASKS[name]


def _glue_source(task: str, split: str, data_dir: str | None):
    """A TFDS data source of glue/<task>: the registered builder, else a prepared directory."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(f"glue/{task}", split=split, data_dir=data_dir, download=False)
    except Exception as err:  # TFDS raises several types for a missing dataset or builder
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
    # Without TensorFlow the GLUE builder class may not register; a prepared directory still reads.
    if data_dir:
        versions = sorted(pathlib.Path(data_dir, "glue", task).glob("*/dataset_info.json"))
        if versions:
            builder = tfds.builder_from_directory(str(versions[-1].parent))
            return builder.as_data_source(split=split)
    raise ValueError(
        f"GLUE task {task!r} (split {split!r}) is not prepared in data_dir={data_dir!r} ({first}). "
        f"Prepare it once with `tfds build glue/{task} --file_format=array_record --data_dir DIR` "
        "on a machine with internet access and pass that DIR as the config's glue.data_dir."
    )


def load_glue(task: str, split: str, data_dir: str | None = None):
    """`(texts_a, texts_b or None, labels)` of a prepared TFDS `glue/<task>` split.

    Reads with `tfds.data_source` (array_record, no TensorFlow). The dataset is not downloaded here:
    prepare it once on a machine with internet access, e.g.
    `tfds build glue/<task> --file_format=array_record --data_dir DIR`.
    """
    spec = glue_task(task)
    source = _glue_source(task, split, data_dir)
    cols: list[list[str]] = [[] for _ in spec.text_keys]
    labels = []
    for i in range(len(source)):
        ex = source[i]
        for c, key in zip(cols, spec.text_keys, strict=True):
            v = ex[key]
            c.append(v.decode("utf-8") if isinstance(v, bytes) else str(v))
        labels.append(ex["label"])
    dtype = np.float32 if spec.num_labels == 1 else np.int32
    return cols[0], (cols[1] if len(cols) > 1 else None), np.asarray(labels, dtype)


def glue_metric(task: str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task metric (and accuracy for classification) from predictions (class ids or scores)."""
    spec = glue_task(task)
    p = np.asarray(predictions)
    y = np.asarray(labels)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} differ in shape.")
    if spec.num_labels == 1:
        p64, y64 = p.astype(np.float64), y.astype(np.float64)
        sp, sy = p64.std(), y64.std()
        pearson = (
            float(np.mean((p64 - p64.mean()) * (y64 - y64.mean())) / (sp * sy))
            if sp * sy > 0
            else 0.0
        )
        return {"pearson": pearson, "score": pearson}
    out = {"accuracy": float(np.mean(p == y))}
    if spec.metric == "mcc":
        tp = float(np.sum((p == 1) & (y == 1)))
        tn = float(np.sum((p == 0) & (y == 0)))
        fp = float(np.sum((p == 1) & (y == 0)))
        fn = float(np.sum((p == 0) & (y == 1)))
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        out["mcc"] = float((tp * tn - fp * fn) / den) if den > 0 else 0.0
    elif spec.metric == "f1":
        tp = float(np.sum((p == 1) & (y == 1)))
        fp = float(np.sum((p == 1) & (y == 0)))
        fn = float(np.sum((p == 0) & (y == 1)))
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
    out["score"] = out[spec.metric]
    return out


__all__ = [
    "FALLBACK_MODULES",
    "GLUE_TASKS",
    "GlueTask",
    "glue_metric",
    "glue_task",
    "hash_split",
    "load_glue",
    "load_tokenizer",
    "python_doc_paragraphs",
    "python_doc_sentences",
    "retrieval_pairs",
    "split_sentences",
    "token_batches",
    "tokenize",
]
