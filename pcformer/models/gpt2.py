"""GPT-2 language model in Flax linen, laid out like Hugging Face's `GPT2LMHeadModel`.

Pre-LN blocks (`h_0/ln_1`, `h_0/attn/c_attn`, ...), a causal mask applied with
`softmax(where=...)`, `gelu_new`, and an LM head tied to `transformer/wte`. The key/value cache
is explicit and functional: `decode_step(params, token_ids, cache, position)` takes the cache
arrays in and gives them back, so the compiler can trace exactly one decoding step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .layers import (
    LayerNorm, activation, attention, causal_mask, fields_from_hf, merge_heads, split_heads,
)

# A cache is a tuple over layers of (key, value), each [batch, heads, max_len, head_dim].
Cache = tuple[tuple[jax.Array, jax.Array], ...]


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """A frozen view of the Hugging Face GPT-2 config fields the model uses."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd, as Hugging Face
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    bos_token_id: int = 50256
    eos_token_id: int = 50256

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        activation(self.activation_function)

    @property
    def inner_size(self) -> int:
        return self.n_inner if self.n_inner is not None else 4 * self.n_embd

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides) -> "GPT2Config":
        """Take the fields we use from a `transformers.GPT2Config`; refuse variants we lack."""
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if getattr(hf_config, flag, False):
                raise ValueError(f"GPT-2 config option {flag}=True is not supported")
        if not getattr(hf_config, "scale_attn_weights", True):
            raise ValueError("GPT-2 config option scale_attn_weights=False is not supported")
        return fields_from_hf(cls, hf_config, **overrides)


_mask = causal_mask  # shared with the LLaMA decoder


class GPT2Attention(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x, attention_mask, cache, position):
        c = self.config
        qkv = nn.Dense(3 * c.n_embd, name="c_attn")(x)
        q, k, v = (split_heads(t, c.n_head) for t in jnp.split(qkv, 3, axis=-1))
        new_cache = None
        if cache is not None:
            ck, cv = cache
            start = (0, 0, position, 0)
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), start)
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), start)
            new_cache = (k, v)
        mask = _mask(attention_mask, q.shape[2], k.shape[2], position)
        ctx, probs = attention(q, k, v, mask)
        return nn.Dense(c.n_embd, name="c_proj")(merge_heads(ctx)), probs, new_cache


class GPT2MLP(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x):
        c = self.config
        h = activation(c.activation_function)(nn.Dense(c.inner_size, name="c_fc")(x))
        return nn.Dense(c.n_embd, name="c_proj")(h)


class GPT2Block(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, x, attention_mask, cache, position):
        eps = self.config.layer_norm_epsilon
        a, probs, new_cache = GPT2Attention(self.config, name="attn")(
            LayerNorm(eps, name="ln_1")(x), attention_mask, cache, position
        )
        x = x + a
        x = x + GPT2MLP(self.config, name="mlp")(LayerNorm(eps, name="ln_2")(x))
        return x, probs, new_cache


class GPT2Model(nn.Module):
    config: GPT2Config

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, cache=None, position=0):
        c = self.config
        seq = input_ids.shape[-1]
        x = nn.Embed(c.vocab_size, c.n_embd, name="wte")(input_ids)
        wpe = self.param("wpe", nn.initializers.normal(0.01), (c.n_positions, c.n_embd), jnp.float32)
        # Positions are public: a static slice for a full forward, a dynamic one when decoding.
        if isinstance(position, (int, np.integer)):
            x = x + wpe[position : position + seq]
        else:
            x = x + jax.lax.dynamic_slice_in_dim(wpe, position, seq, axis=0)
        hidden, attns, new_cache = [x], [], []
        for i in range(c.n_layer):
            x, probs, layer_cache = GPT2Block(c, name=f"h_{i}")(
                x, attention_mask, None if cache is None else cache[i], position
            )
            hidden.append(x)
            attns.append(probs)
            new_cache.append(layer_cache)
        x = LayerNorm(c.layer_norm_epsilon, name="ln_f")(x)
        hidden[-1] = x  # Hugging Face reports the final hidden state after ln_f
        return x, tuple(hidden), tuple(attns), (None if cache is None else tuple(new_cache))


class GPT2LMHeadModel(nn.Module):
    """`GPT2LMHeadModel`: logits [batch, seq, vocab] by default.

    `cache` (see `init_cache`) switches to incremental decoding: the call then returns
    `(logits, new_cache)`, with the new tokens written at `position`. `output_hidden_states` /
    `output_attentions` return a dict (`logits`, `hidden_states`, `attentions`) for distillation.
    """

    config: GPT2Config

    @nn.compact
    def __call__(
        self,
        input_ids,
        attention_mask=None,
        cache=None,
        position=0,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ):
        x, hidden, attns, new_cache = GPT2Model(self.config, name="transformer")(
            input_ids, attention_mask, cache, position
        )
        wte = self.variables["params"]["transformer"]["wte"]["embedding"]
        with jax.named_scope("lm_head"):
            # tied to the input embedding: x [b, s, h] . wte [v, h] -> [b, s, v]
            logits = jax.lax.dot_general(x, wte, (((2,), (1,)), ((), ())))
        if output_hidden_states or output_attentions:
            out = {"logits": logits}
            if output_hidden_states:
                out["hidden_states"] = hidden
            if output_attentions:
                out["attentions"] = attns
            if cache is not None:
                out["cache"] = new_cache
            return out
        if cache is not None:
            return logits, new_cache
        return logits


def init_cache(config: GPT2Config, batch: int, max_len: int, dtype=jnp.float32) -> Cache:
    """An empty (zero) key/value cache for `max_len` positions."""
    if max_len > config.n_positions:
        raise ValueError(f"max_len {max_len} exceeds n_positions {config.n_positions}")
    shape = (batch, config.n_head, max_len, config.head_dim)
    return tuple((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(config.n_layer))


def forward(module: GPT2LMHeadModel, params, input_ids, attention_mask=None) -> jax.Array:
    """Full forward, no cache: logits [batch, seq, vocab]."""
    return module.apply({"params": params}, input_ids, attention_mask)


def decode_step(module: GPT2LMHeadModel, params, token_ids, cache: Cache, position, attention_mask=None):
    """One incremental step: the logits of `token_ids` placed at `position`, and the new cache.

    `attention_mask`, if given, is [batch, max_len] over cache slots (1 = real token).
    """
    return module.apply({"params": params}, token_ids, attention_mask, cache, position)


@functools.lru_cache(maxsize=8)
def _jitted_step(module: GPT2LMHeadModel):
    """One compiled decode step per (hashable, frozen) module, reused across generate calls."""
    return jax.jit(lambda p, t, c, pos: decode_step(module, p, t, c, pos))


def generate_ids(
    module: GPT2LMHeadModel,
    params,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    eos_token_id: int | None = None,
    init_cache_fn=None,
    max_positions: int | None = None,
) -> list[int]:
    """Greedy (temperature 0) or sampled continuation of one prompt, with the KV cache.

    Returns only the new token ids; stops early at `eos_token_id` if given. Any module with
    this file's call convention works (the LLaMA decoder passes its own `init_cache_fn` and
    `max_positions`).
    """
    config = module.config
    init_cache_fn = init_cache_fn or init_cache
    n_positions = max_positions or config.n_positions
    prompt = jnp.asarray([list(prompt_ids)], dtype=jnp.int32)
    if prompt.shape[1] == 0:
        raise ValueError("generate needs a non-empty prompt")
    max_len = min(prompt.shape[1] + max_new_tokens, n_positions)
    if prompt.shape[1] >= max_len and max_new_tokens > 0:
        raise ValueError(f"prompt of {prompt.shape[1]} tokens leaves no room (n_positions {n_positions})")
    step = _jitted_step(module)

    def pick(logits, key):
        logits = logits[0, -1]
        if temperature <= 0.0:
            return int(jnp.argmax(logits))
        logits = logits / temperature
        if top_k is not None:
            kth = jnp.sort(logits)[-top_k]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        return int(jax.random.categorical(key, logits))

    key = jax.random.PRNGKey(seed)
    cache = init_cache_fn(config, 1, max_len)
    logits, cache = step(params, prompt, cache, jnp.int32(0))
    out: list[int] = []
    pos = prompt.shape[1]
    while len(out) < max_new_tokens:
        key, sub = jax.random.split(key)
        token = pick(logits, sub)
        out.append(token)
        if len(out) == max_new_tokens or token == eos_token_id or pos >= max_len:
            break
        logits, cache = step(params, jnp.asarray([[token]], jnp.int32), cache, jnp.int32(pos))
        pos += 1
    return out
