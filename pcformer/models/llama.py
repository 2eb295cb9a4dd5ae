"""LLaMA-style decoder in Flax linen, laid out like Hugging Face's `LlamaForCausalLM`.

RMSNorm, rotary position embedding, a SwiGLU MLP (`down(silu(gate(x)) * up(x))`), grouped-query
attention (`num_key_value_heads` <= `num_attention_heads`) with a causal mask, and an LM head
that is its own `lm_head` or tied to `model/embed_tokens`. Module names mirror Hugging Face's
(`model/layers_0/self_attn/q_proj`, ...), so the checkpoint converter maps them by its rules.

Written for the MPC compiler: positions are public, so the rotary cos/sin tables are numpy
constants (sliced at the public `position` when decoding); RMSNorm uses `rsqrt` and SiLU is
`x * sigmoid(x)`. The key/value cache is explicit and functional, as in gpt2.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .layers import RMSNorm, activation, causal_mask, fields_from_hf, masked_softmax

ROPE_TYPES = ("default", "linear", "llama3")

# A cache is a tuple over layers of (key, value), each [batch, kv_heads, max_len, head_dim],
# keys stored after the rotary embedding (as Hugging Face's cache does).
Cache = tuple[tuple[jax.Array, jax.Array], ...]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """A frozen view of the Hugging Face LLaMA config fields the model uses."""

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as attention heads (no GQA)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Rotary scaling (Hugging Face `rope_parameters`): "default", "linear" (positions divided
    # by rope_factor) or "llama3" (Llama 3.1+: low frequencies divided by rope_factor, a smooth
    # blend between rope_low_freq_factor and rope_high_freq_factor).
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | tuple[int, ...] | None = 2

    def __post_init__(self):
        if self.num_attention_heads % self.kv_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.kv_heads}"
            )
        if self.dim % 2:
            raise ValueError(f"head_dim {self.dim} must be even for the rotary embedding")
        activation(self.hidden_act)
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type {self.rope_type!r} is not supported (only {ROPE_TYPES})")

    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def dim(self) -> int:
        """Per-head size."""
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_attention_heads // self.kv_heads

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides) -> "LlamaConfig":
        """Take the fields we use from a `transformers.LlamaConfig`; refuse variants we lack."""
        rope = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ROPE_TYPES:
            raise ValueError(f"LLaMA rope_type {kind!r} is not supported (only {ROPE_TYPES})")
        if rope.get("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", 1.0)) != 1.0:
            raise ValueError("LLaMA partial_rotary_factor != 1 is not supported")
        theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", None))
        extra = {} if theta is None else {"rope_theta": float(theta)}
        extra["rope_type"] = kind
        for ours, theirs in (("rope_factor", "factor"), ("rope_low_freq_factor", "low_freq_factor"),
                             ("rope_high_freq_factor", "high_freq_factor"),
                             ("rope_original_max_position_embeddings", "original_max_position_embeddings")):
            if theirs in rope:
                extra[ours] = type(getattr(cls, ours))(rope[theirs])
        eos = getattr(hf_config, "eos_token_id", None)
        if isinstance(eos, list):  # Llama 3 lists several; a tuple keeps the config hashable
            extra["eos_token_id"] = tuple(eos)
        return fields_from_hf(cls, hf_config, **{**extra, **overrides})


def inverse_frequencies(config: LlamaConfig) -> np.ndarray:
    """The rotary inverse frequencies [head_dim / 2], float32, with the config's scaling."""
    d, c = config.dim, config
    f32 = np.float32
    inv = (1.0 / (c.rope_theta ** (np.arange(0, d, 2, dtype=f32) / d))).astype(f32)
    if c.rope_type == "linear":
        return (inv / f32(c.rope_factor)).astype(f32)
    if c.rope_type == "llama3":
        old = f32(c.rope_original_max_position_embeddings)
        wavelen = (f32(2 * np.pi) / inv).astype(f32)
        low_wavelen, high_wavelen = old / f32(c.rope_low_freq_factor), old / f32(c.rope_high_freq_factor)
        scaled = np.where(wavelen > low_wavelen, inv / f32(c.rope_factor), inv).astype(f32)
        smooth = ((old / wavelen - f32(c.rope_low_freq_factor))
                  / f32(c.rope_high_freq_factor - c.rope_low_freq_factor)).astype(f32)
        blended = ((1 - smooth) * scaled / f32(c.rope_factor) + smooth * scaled).astype(f32)
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, blended, scaled).astype(f32)
    return inv


def rope_tables(config: LlamaConfig, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [length, head_dim] for positions 0..length-1, as numpy constants.

    Computed in float32 the way Hugging Face does (inverse frequencies, then position times
    frequency) so the tables agree with its to the last bits that matter.
    """
    inv_freq = inverse_frequencies(config)
    freqs = np.arange(length, dtype=np.float32)[:, None] * inv_freq[None, :]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def _positions(table: np.ndarray, position, length: int):
    """Rows position..position+length-1 of a public table: static slice for an int position,
    a dynamic slice of the constant for a traced (public) one."""
    if isinstance(position, (int, np.integer)):
        return jnp.asarray(table[position : position + length])
    return jax.lax.dynamic_slice_in_dim(jnp.asarray(table), position, length, axis=0)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [b, heads, s, d] rotated: x * cos + rotate_half(x) * sin (cos/sin [s, d])."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def grouped_attention(q, k, v, mask, groups: int):
    """Attention with `groups` query heads per key/value head, without copying k and v.

    q [b, heads, s, d], k/v [b, kv_heads, t, d], mask [b|1, 1, s, t]. The query heads of one
    group are stacked along the sequence axis ([b, kv_heads, groups*s, d]), so each key/value
    head enters one product: under MPC its masked opening is shared by the whole group.
    Returns (context [b, heads, s, d], probabilities [b, heads, s, t]).
    """
    b, h, s, d = q.shape
    kvh, t = k.shape[1], k.shape[2]
    qg = q.reshape(b, kvh, groups * s, d)
    scale = 1.0 / np.sqrt(np.float32(d))
    batch = ((0, 1), (0, 1))
    scores = jax.lax.dot_general(qg, k, (((3,), (3,)), batch)) * scale
    if mask is not None and groups > 1:
        mask = jnp.tile(mask, (1, 1, groups, 1))
    probs = masked_softmax(scores, mask)
    ctx = jax.lax.dot_general(probs, v, (((3,), (2,)), batch))
    return ctx.reshape(b, h, s, d), probs.reshape(b, h, s, t)


def _heads(x: jax.Array, n: int, d: int) -> jax.Array:
    """[b, s, n*d] -> [b, n, s, d]."""
    b, s, _ = x.shape
    return x.reshape(b, s, n, d).transpose(0, 2, 1, 3)


class LlamaAttention(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x, cos, sin, attention_mask, cache, position):
        c = self.config
        dense = lambda n, name: nn.Dense(n * c.dim, use_bias=c.attention_bias, name=name)  # noqa: E731
        q = apply_rotary(_heads(dense(c.num_attention_heads, "q_proj")(x), c.num_attention_heads, c.dim), cos, sin)
        k = apply_rotary(_heads(dense(c.kv_heads, "k_proj")(x), c.kv_heads, c.dim), cos, sin)
        v = _heads(dense(c.kv_heads, "v_proj")(x), c.kv_heads, c.dim)
        new_cache = None
        if cache is not None:
            ck, cv = cache
            start = (0, 0, position, 0)
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), start)
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), start)
            new_cache = (k, v)
        mask = causal_mask(attention_mask, q.shape[2], k.shape[2], position)
        ctx, probs = grouped_attention(q, k, v, mask, c.groups)
        b, _, s, _ = ctx.shape
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, s, c.num_attention_heads * c.dim)
        out = nn.Dense(c.hidden_size, use_bias=c.attention_bias, name="o_proj")(ctx)
        return out, probs, new_cache


class LlamaMLP(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        gate = nn.Dense(c.intermediate_size, use_bias=c.mlp_bias, name="gate_proj")(x)
        up = nn.Dense(c.intermediate_size, use_bias=c.mlp_bias, name="up_proj")(x)
        return nn.Dense(c.hidden_size, use_bias=c.mlp_bias, name="down_proj")(activation(c.hidden_act)(gate) * up)


class LlamaDecoderLayer(nn.Module):
    config: LlamaConfig

    @nn.compact
    def __call__(self, x, cos, sin, attention_mask, cache, position):
        eps = self.config.rms_norm_eps
        a, probs, new_cache = LlamaAttention(self.config, name="self_attn")(
            RMSNorm(eps, name="input_layernorm")(x), cos, sin, attention_mask, cache, position
        )
        x = x + a
        x = x + LlamaMLP(self.config, name="mlp")(RMSNorm(eps, name="post_attention_layernorm")(x))
        return x, probs, new_cache


class LlamaModel(nn.Module):
    """`LlamaModel`: returns a dict with `last_hidden_state` (after the final norm),
    `hidden_states` (embeddings and every layer's output, the last after the norm, as Hugging
    Face reports them), `attentions` and `cache` (None without a cache)."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, cache=None, position=0):
        c = self.config
        seq = input_ids.shape[-1]
        x = nn.Embed(c.vocab_size, c.hidden_size, name="embed_tokens")(input_ids)
        # Tables as long as the keys can be: the cache's length when decoding, else the input's.
        static = isinstance(position, (int, np.integer))
        if cache is None and not static:
            raise ValueError("a traced position needs a cache (its length bounds the rotary tables)")
        length = seq if cache is None else cache[0][0].shape[2]
        if static:
            length = max(length, position + seq)
        cos_t, sin_t = rope_tables(c, length)
        cos, sin = _positions(cos_t, position, seq), _positions(sin_t, position, seq)
        hidden, attns, new_cache = [x], [], []
        for i in range(c.num_hidden_layers):
            x, probs, layer_cache = LlamaDecoderLayer(c, name=f"layers_{i}")(
                x, cos, sin, attention_mask, None if cache is None else cache[i], position
            )
            hidden.append(x)
            attns.append(probs)
            new_cache.append(layer_cache)
        x = RMSNorm(c.rms_norm_eps, name="norm")(x)
        hidden[-1] = x
        return {
            "last_hidden_state": x,
            "hidden_states": tuple(hidden),
            "attentions": tuple(attns),
            "cache": None if cache is None else tuple(new_cache),
        }


class LlamaForCausalLM(nn.Module):
    """`LlamaForCausalLM`: logits [batch, seq, vocab] by default; with a `cache` (see
    `init_cache`), `(logits, new_cache)`; with `output_hidden_states` / `output_attentions`, a
    dict like gpt2.GPT2LMHeadModel's."""

    config: LlamaConfig

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, cache=None, position=0,
                 output_hidden_states: bool = False, output_attentions: bool = False):
        c = self.config
        out = LlamaModel(c, name="model")(input_ids, attention_mask, cache, position)
        x = out["last_hidden_state"]
        if c.tie_word_embeddings:
            emb = self.variables["params"]["model"]["embed_tokens"]["embedding"]
            with jax.named_scope("lm_head"):
                logits = jax.lax.dot_general(x, emb, (((2,), (1,)), ((), ())))
        else:
            logits = nn.Dense(c.vocab_size, use_bias=False, name="lm_head")(x)
        if output_hidden_states or output_attentions:
            res = {"logits": logits}
            if output_hidden_states:
                res["hidden_states"] = out["hidden_states"]
            if output_attentions:
                res["attentions"] = out["attentions"]
            if cache is not None:
                res["cache"] = out["cache"]
            return res
        if cache is not None:
            return logits, out["cache"]
        return logits


def init_cache(config: LlamaConfig, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
    """An empty (zero) key/value cache for `max_len` positions, `kv_heads` heads per layer."""
    if max_len > config.max_position_embeddings:
        raise ValueError(f"max_len {max_len} exceeds max_position_embeddings {config.max_position_embeddings}")
    shape = (batch, config.kv_heads, max_len, config.dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.num_hidden_layers))


def forward(module, params, input_ids, attention_mask=None) -> jax.Array:
    """Full forward, no cache: logits [b, s, vocab] (LlamaForCausalLM) or the last hidden
    state [b, s, hidden] (LlamaModel)."""
    out = module.apply({"params": params}, input_ids, attention_mask)
    return out["last_hidden_state"] if isinstance(module, LlamaModel) else out


def decode_step(module: LlamaForCausalLM, params, token_ids, cache: Cache, position, attention_mask=None):
    """One incremental step: the logits of `token_ids` placed at `position`, and the new cache."""
    return module.apply({"params": params}, token_ids, attention_mask, cache, position)


def generate_ids(module: LlamaForCausalLM, params, prompt_ids: list[int], max_new_tokens: int,
                 temperature: float = 0.0, top_k: int | None = None, seed: int = 0,
                 eos_token_id: int | None = None) -> list[int]:
    """Greedy or sampled continuation with the KV cache: gpt2.generate_ids' loop, this cache."""
    from . import gpt2

    return gpt2.generate_ids(
        module, params, prompt_ids, max_new_tokens, temperature, top_k, seed, eos_token_id,
        init_cache_fn=init_cache, max_positions=module.config.max_position_embeddings,
    )
