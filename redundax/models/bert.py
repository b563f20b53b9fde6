"""BERT / RoBERTa-family encoder in Flax NNX that returns every hidden state.

The architecture is the post-norm Transformer encoder of BERT (Devlin et al., 2019) as RoBERTa (Liu
et al., 2019) reuses it: token + position + segment embeddings, LayerNorm and dropout; then L layers of
``x = LN(x + Drop(Attn(x)))`` and ``x = LN(x + Drop(W2 act(W1 x)))`` with exact-erf GELU. RoBERTa
differs only in its position ids, which count the non-padding tokens from ``pad_token_id + 1``.
Parameter names mirror the HuggingFace checkpoints (`redundax.models.hf_loader` maps them one to one).

`BertEncoder.__call__` returns the stacked hidden states ``(L+1, B, T, d)``: index 0 is the embedding
output (the input of layer 1), index l the output of layer l, the layout that
`redundax.functionals.entropy_rate.layer_redundancy_scores` consumes. With ``sow_ffn=True`` each layer
sows, under `nnx.capture`, the per-sequence sum over unmasked tokens of the absolute FFN coefficients
``|act(W1 x)|`` (Geva et al., 2021's memory coefficients; used by knowledge entropy).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}
MODEL_TYPES = ("bert", "roberta")
_INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Hyper-parameters of a BERT-family encoder (the HuggingFace `config.json` fields of the same names).

    `model_type` "roberta" switches on RoBERTa position ids. Defaults are BERT-base.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"`model_type` must be one of {MODEL_TYPES}; got {self.model_type!r}.")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"`hidden_act` must be one of {tuple(ACTIVATIONS)}; got {self.hidden_act!r}."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.num_hidden_layers < 0:
            raise ValueError(f"`num_hidden_layers` must be >= 0; got {self.num_hidden_layers}.")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BertConfig:
        """Build from a HuggingFace `config.json` mapping; unknown fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> BertConfig:
        return dataclasses.replace(self, **changes)


def _linear(d_in: int, d_out: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        kernel_init=nnx.initializers.normal(_INIT_STD),
        dtype=dtype,
        rngs=rngs,
    )


def _layer_norm(d: int, eps: float, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=eps, use_fast_variance=False, dtype=dtype, rngs=rngs)


def position_ids(
    input_ids: jax.Array, model_type: str = "bert", pad_token_id: int = 0
) -> jax.Array:
    """Position ids: 0..T-1 for BERT; for RoBERTa the running count of non-padding tokens plus
    `pad_token_id` (padding positions get `pad_token_id`)."""
    if model_type == "roberta":
        not_pad = (input_ids != pad_token_id).astype(jnp.int32)
        return jnp.cumsum(not_pad, axis=-1) * not_pad + pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[-1], dtype=jnp.int32), input_ids.shape)


class Embeddings(nnx.Module):
    """Token + position + segment embeddings, LayerNorm, dropout."""

    def __init__(self, config: BertConfig, *, dtype=None, rngs: nnx.Rngs):
        init = nnx.initializers.normal(_INIT_STD)
        d = config.hidden_size
        self.model_type = config.model_type
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = nnx.Embed(config.vocab_size, d, embedding_init=init, rngs=rngs)
        self.position_embeddings = nnx.Embed(
            config.max_position_embeddings, d, embedding_init=init, rngs=rngs
        )
        self.token_type_embeddings = nnx.Embed(
            config.type_vocab_size, d, embedding_init=init, rngs=rngs
        )
        self.layer_norm = _layer_norm(d, config.layer_norm_eps, dtype, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, input_ids, token_type_ids, *, deterministic: bool) -> jax.Array:
        pos = position_ids(input_ids, self.model_type, self.pad_token_id)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(pos)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(x), deterministic=deterministic)


class SelfAttention(nnx.Module):
    """Multi-head self-attention with the post-norm residual (HF `attention.self` + `attention.output`)."""

    def __init__(self, config: BertConfig, *, dtype=None, rngs: nnx.Rngs):
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query = _linear(d, d, dtype, rngs)
        self.key = _linear(d, d, dtype, rngs)
        self.value = _linear(d, d, dtype, rngs)
        self.output = _linear(d, d, dtype, rngs)
        self.norm = _layer_norm(d, config.layer_norm_eps, dtype, rngs)
        self.attn_dropout = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x, bias, *, deterministic: bool) -> jax.Array:
        b, t, d = x.shape
        h = self.num_heads
        q = self.query(x).reshape(b, t, h, d // h)
        k = self.key(x).reshape(b, t, h, d // h)
        v = self.value(x).reshape(b, t, h, d // h)
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(d // h) + bias
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        probs = self.attn_dropout(probs, deterministic=deterministic)
        ctx = jnp.einsum("bhqk,bkhc->bqhc", probs, v).reshape(b, t, d)
        out = self.dropout(self.output(ctx), deterministic=deterministic)
        return self.norm(x + out)


class Layer(nnx.Module):
    """One encoder layer: self-attention then the feed-forward block, each with a post-norm residual."""

    def __init__(self, config: BertConfig, *, dtype=None, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        self.act_name = config.hidden_act
        self.attention = SelfAttention(config, dtype=dtype, rngs=rngs)
        self.intermediate = _linear(d, f, dtype, rngs)
        self.output = _linear(f, d, dtype, rngs)
        self.output_norm = _layer_norm(d, config.layer_norm_eps, dtype, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

    def __call__(self, x, bias, mask, *, deterministic: bool, sow_ffn: bool = False) -> jax.Array:
        a = self.attention(x, bias, deterministic=deterministic)
        coef = ACTIVATIONS[self.act_name](self.intermediate(a))
        if sow_ffn:
            abs_sum = jnp.einsum("btf,bt->bf", jnp.abs(coef).astype(jnp.float32), mask)
            self.sow(nnx.Intermediate, "ffn_abs_coef_sum", abs_sum)
        out = self.dropout(self.output(coef), deterministic=deterministic)
        return self.output_norm(a + out)


class BertEncoder(nnx.Module):
    """BERT/RoBERTa encoder; `__call__` returns all hidden states `(L+1, B, T, d)`.

    Args:
      config: `BertConfig`.
      dtype: computation dtype (parameters stay float32); None = float32.
      rngs: parameter initialisation and dropout streams.
    """

    def __init__(self, config: BertConfig, *, dtype=None, rngs: nnx.Rngs):
        self.config = config
        self.embeddings = Embeddings(config, dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [Layer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        *,
        deterministic: bool = True,
        sow_ffn: bool = False,
    ) -> jax.Array:
        """Hidden states `(L+1, B, T, d)` of integer `input_ids` `(B, T)`.

        Args:
          input_ids: token ids `(B, T)`.
          attention_mask: `(B, T)`, 1 for tokens and 0 for padding; None = all tokens.
          token_type_ids: segment ids `(B, T)`; None = zeros.
          deterministic: disable dropout (evaluation).
          sow_ffn: sow FFN coefficient sums (module docstring); use inside `nnx.capture`.
        """
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must have shape (B, T); got {input_ids.shape}.")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                f"{self.config.max_position_embeddings}; truncate the input."
            )
        mask = (
            jnp.ones(input_ids.shape, jnp.float32)
            if attention_mask is None
            else jnp.asarray(attention_mask).astype(jnp.float32)
        )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic)
        bias = ((1.0 - mask) * jnp.finfo(jnp.float32).min)[:, None, None, :].astype(x.dtype)
        hidden = [x]
        for layer in self.layers:
            x = layer(x, bias, mask, deterministic=deterministic, sow_ffn=sow_ffn)
            hidden.append(x)
        return jnp.stack(hidden)


class SequenceClassifier(nnx.Module):
    """Encoder + the RoBERTa classification head (dense-tanh-dropout-linear on token 0).

    `num_labels` = 1 gives a regression output (STS-B).
    """

    def __init__(self, config: BertConfig, num_labels: int, *, dtype=None, rngs: nnx.Rngs):
        if num_labels < 1:
            raise ValueError(f"`num_labels` must be >= 1; got {num_labels}.")
        d = config.hidden_size
        self.num_labels = num_labels
        self.encoder = BertEncoder(config, dtype=dtype, rngs=rngs)
        self.dense = _linear(d, d, dtype, rngs)
        self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
        self.out_proj = _linear(d, num_labels, dtype, rngs)

    def __call__(
        self, input_ids, attention_mask=None, token_type_ids=None, *, deterministic: bool = True
    ) -> jax.Array:
        hidden = self.encoder(
            input_ids, attention_mask, token_type_ids, deterministic=deterministic
        )
        x = self.dropout(hidden[-1][:, 0], deterministic=deterministic)
        x = self.dropout(jnp.tanh(self.dense(x)), deterministic=deterministic)
        return self.out_proj(x).astype(jnp.float32)


def mean_pool(hidden: jax.Array, attention_mask=None) -> jax.Array:
    """Mean over unmasked tokens: `(..., B, T, d)` with mask `(B, T)` -> `(..., B, d)`.

    The sentence-transformers mean pooling (sum of masked token states / max(token count, 1e-9)).
    """
    if attention_mask is None:
        return jnp.mean(hidden, axis=-2)
    m = jnp.asarray(attention_mask).astype(hidden.dtype)
    total = jnp.einsum("...btd,bt->...bd", hidden, m, precision=jax.lax.Precision.HIGHEST)
    return total / jnp.maximum(jnp.sum(m, axis=-1), 1e-9)[:, None]


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / max(|x|, eps) over the last axis (torch.nn.functional.normalize)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def sentence_embeddings(
    model: BertEncoder, input_ids, attention_mask, token_type_ids=None, *, normalize: bool = True
) -> jax.Array:
    """Mean-pooled (optionally L2-normalised) last-layer sentence embeddings `(B, d)`."""
    hidden = model(input_ids, attention_mask, token_type_ids)
    pooled = mean_pool(hidden[-1], attention_mask)
    return l2_normalize(pooled) if normalize else pooled


@functools.partial(jax.jit, static_argnames=("graphdef", "sow_ffn"))
def apply_hidden(state, input_ids, attention_mask, token_type_ids, *, graphdef, sow_ffn=False):
    """Pure, jitted forward of a split encoder (`nnx.split`): hidden states `(L+1, B, T, d)`.

    `graphdef` is static, so encoders of the same structure (e.g. every encoder pruned to the same
    depth) share one compilation per input shape. With `sow_ffn` returns `(hidden, coef)` where
    `coef` `(L, B, intermediate_size)` holds the per-sequence sums of |FFN coefficients| captured with
    `nnx.capture`.
    """
    m = nnx.merge(graphdef, state)
    if not sow_ffn:
        return m(input_ids, attention_mask, token_type_ids)
    forward = nnx.capture(lambda mod, *a: mod(*a, sow_ffn=True), nnx.Intermediate)
    hidden, inter = forward(m, input_ids, attention_mask, token_type_ids)
    sums = [inter["layers"][i]["ffn_abs_coef_sum"].get_value()[0] for i in range(len(m.layers))]
    return hidden, jnp.stack(sums)


def make_hidden_fn(model: BertEncoder, *, sow_ffn: bool = False):
    """`(fn, state)`: `fn(state, input_ids, attention_mask, token_type_ids)` is `apply_hidden` bound to
    the model's graphdef (the module is split once; the function is pure in `state`)."""
    graphdef, state = nnx.split(model)
    return functools.partial(apply_hidden, graphdef=graphdef, sow_ffn=sow_ffn), state


__all__ = [
    "ACTIVATIONS",
    "MODEL_TYPES",
    "BertConfig",
    "BertEncoder",
    "Embeddings",
    "Layer",
    "SelfAttention",
    "SequenceClassifier",
    "apply_hidden",
    "l2_normalize",
    "make_hidden_fn",
    "mean_pool",
    "position_ids",
    "sentence_embeddings",
]
