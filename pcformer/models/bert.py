"""BERT encoder in Flax linen, laid out like Hugging Face's `BertModel`.

Module names mirror the Hugging Face parameter names (`embeddings/word_embeddings`,
`encoder/layer_3/attention/self/query`, ...) so that a jaxpr's name stack, the compiler's
per-scope cost report and the checkpoint converter all speak the same paths.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import LayerNorm, activation, attention, fields_from_hf, merge_heads, split_heads


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """A frozen view of the Hugging Face BERT config fields the model uses."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    num_labels: int = 2
    add_pooling_layer: bool = True

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        activation(self.hidden_act)  # refuse an unknown activation now, not at trace time

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides) -> "BertConfig":
        """Take the fields we use from a `transformers.BertConfig` (or anything with them)."""
        return fields_from_hf(cls, hf_config, **overrides)


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids=None):
        c = self.config
        seq = input_ids.shape[-1]
        words = nn.Embed(c.vocab_size, c.hidden_size, name="word_embeddings")(input_ids)
        pos_table = self.param(
            "position_embeddings",
            nn.initializers.normal(0.02),
            (c.max_position_embeddings, c.hidden_size),
            jnp.float32,
        )
        type_table = self.param(
            "token_type_embeddings",
            nn.initializers.normal(0.02),
            (c.type_vocab_size, c.hidden_size),
            jnp.float32,
        )
        # Position ids are public (jnp.arange): a static slice of the table, no gather.
        x = words + pos_table[:seq]
        if token_type_ids is None:
            x = x + type_table[0]
        else:
            x = x + jnp.take(type_table, token_type_ids, axis=0)
        return LayerNorm(c.layer_norm_eps, name="LayerNorm")(x)


class BertSelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        c = self.config
        n = c.num_attention_heads
        q = split_heads(nn.Dense(c.hidden_size, name="query")(x), n)
        k = split_heads(nn.Dense(c.hidden_size, name="key")(x), n)
        v = split_heads(nn.Dense(c.hidden_size, name="value")(x), n)
        ctx, probs = attention(q, k, v, mask)
        return merge_heads(ctx), probs


class BertSelfOutput(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, h, residual):
        c = self.config
        h = nn.Dense(c.hidden_size, name="dense")(h)
        return LayerNorm(c.layer_norm_eps, name="LayerNorm")(h + residual)


class BertAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        h, probs = BertSelfAttention(self.config, name="self")(x, mask)
        return BertSelfOutput(self.config, name="output")(h, x), probs


class BertIntermediate(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return activation(c.hidden_act)(nn.Dense(c.intermediate_size, name="dense")(x))


class BertLayer(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        a, probs = BertAttention(self.config, name="attention")(x, mask)
        h = BertIntermediate(self.config, name="intermediate")(a)
        # BertOutput has the same shape as BertSelfOutput: dense + residual + LayerNorm.
        return BertSelfOutput(self.config, name="output")(h, a), probs


class BertEncoder(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, mask):
        hidden, attns = [x], []
        for i in range(self.config.num_hidden_layers):
            x, probs = BertLayer(self.config, name=f"layer_{i}")(x, mask)
            hidden.append(x)
            attns.append(probs)
        return x, tuple(hidden), tuple(attns)


class BertPooler(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x):
        return jnp.tanh(nn.Dense(self.config.hidden_size, name="dense")(x[:, 0]))


def key_mask(attention_mask: jax.Array | None) -> jax.Array | None:
    """[batch, seq] 0/1 padding mask -> boolean [batch, 1, 1, seq] mask over keys."""
    if attention_mask is None:
        return None
    return (attention_mask != 0)[:, None, None, :]


class BertModel(nn.Module):
    """`BertModel`: returns the last hidden state [batch, seq, hidden] by default.

    With `output_hidden_states` / `output_attentions` it returns a dict with
    `last_hidden_state`, `pooler_output` (if the pooler exists), `hidden_states`
    (embeddings + every layer) and `attentions` (probabilities per layer), for distillation.
    """

    config: BertConfig

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        c = self.config
        x = BertEmbeddings(c, name="embeddings")(input_ids, token_type_ids)
        x, hidden, attns = BertEncoder(c, name="encoder")(x, key_mask(attention_mask))
        pooled = BertPooler(c, name="pooler")(x) if c.add_pooling_layer else None
        if not (output_hidden_states or output_attentions):
            return x
        out = {"last_hidden_state": x, "pooler_output": pooled}
        if output_hidden_states:
            out["hidden_states"] = hidden
        if output_attentions:
            out["attentions"] = attns
        return out


class BertForSequenceClassification(nn.Module):
    """`BertForSequenceClassification`: pooled [CLS] -> `classifier` -> logits [batch, labels]."""

    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None):
        c = dataclasses.replace(self.config, add_pooling_layer=True)
        res = BertModel(c, name="bert")(
            input_ids, attention_mask, token_type_ids, output_hidden_states=True
        )
        return nn.Dense(c.num_labels, name="classifier")(res["pooler_output"])


def mean_pool(hidden: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
    """Mean over valid tokens, as sentence-transformers' Pooling(mean) does."""
    if attention_mask is None:
        return jnp.mean(hidden, axis=1)
    m = attention_mask.astype(hidden.dtype)[..., None]
    return jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)


def l2_normalize(x: jax.Array) -> jax.Array:
    """x / max(||x||, 1e-12) along the last axis (torch.nn.functional.normalize)."""
    norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


def sentence_embedding(hidden: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
    """all-MiniLM-L6-v2's sentence embedding: mean pooling then L2 normalisation."""
    return l2_normalize(mean_pool(hidden, attention_mask))
