"""Building blocks shared by the BERT and GPT-2 modules.

Everything here is plain `jax.numpy` / `jax.nn`: the exact operators (erf GeLU, softmax,
LayerNorm with `rsqrt`) are what the compiler's rewrite pass looks for and replaces, so the
models must spell them the ordinary way and never approximate on their own.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

# One registry for the activation names found in Hugging Face configs (`hidden_act`,
# `activation_function`). "gelu" is the exact erf form BERT uses; "gelu_new" is GPT-2's tanh form.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    # SiLU spelled out (x * sigmoid(x)): the compiler sees a `logistic` and a `mul`, no `silu`.
    "silu": lambda x: x * jax.nn.sigmoid(x),
}


def fields_from_hf(cls, hf_config, **overrides):
    """An instance of the config dataclass `cls` from the same-named fields of a Hugging Face
    config (anything with those attributes), `overrides` last."""
    import dataclasses
    kwargs = {f.name: getattr(hf_config, f.name) for f in dataclasses.fields(cls)
              if hasattr(hf_config, f.name)}
    kwargs.update(overrides)
    return cls(**kwargs)


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation function a Hugging Face config names, or a clear error."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unsupported activation {name!r}; supported: {sorted(ACTIVATIONS)}"
        ) from None


class LayerNorm(nn.Module):
    """LayerNorm written out (mean, variance, rsqrt) so a rewrite pass sees its equations.

    Parameters are `scale` and `bias` (Flax names); the checkpoint converter maps `scale` to the
    Hugging Face `weight`.
    """

    epsilon: float = 1e-12

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        var = jnp.mean(jnp.square(centered), axis=-1, keepdims=True)
        return centered * jax.lax.rsqrt(var + self.epsilon) * scale + bias


class RMSNorm(nn.Module):
    """LLaMA's RMSNorm: `x * rsqrt(mean(x^2) + eps) * scale`, no centring and no bias.

    Spelled with `rsqrt` like LayerNorm so the same rewrite rules apply; `scale` maps to the
    Hugging Face `weight`.
    """

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        ms = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        return x * jax.lax.rsqrt(ms + self.epsilon) * scale


def causal_mask(attention_mask, q_len: int, k_len: int, position) -> jax.Array:
    """Boolean [batch|1, 1, q_len, k_len]: causal (query at position+t sees keys <= it) and
    padding (attention_mask [batch, k_len], 1 = real token). A query always sees its own key,
    so a padded query (left padding) still has one key and no row of the softmax is empty;
    real queries are unaffected (their own key is real)."""
    q_pos = position + jnp.arange(q_len)
    k_pos = jnp.arange(k_len)
    causal = (k_pos[None, :] <= q_pos[:, None])[None, None]
    if attention_mask is None:
        return causal
    own = (k_pos[None, :] == q_pos[:, None])[None, None]
    return causal & ((attention_mask != 0)[:, None, None, :] | own)


def masked_softmax(scores: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax over the last axis, restricted to `mask` (True = may attend).

    Masking uses `where=` instead of adding a large negative number: a huge constant does not
    survive fixed-point arithmetic in MPC. Callers make sure every row allows at least one key
    (a row with none divides 0 by 0); no extra operations on the mask happen here, so a
    compiler sees only the softmax and the mask it was given.
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    return jax.nn.softmax(scores, axis=-1, where=mask)


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[batch, seq, hidden] -> [batch, heads, seq, head_dim]."""
    b, s, h = x.shape
    return x.reshape(b, s, num_heads, h // num_heads).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
    """[batch, heads, seq, head_dim] -> [batch, seq, hidden]."""
    b, n, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, n * d)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None):
    """Scaled dot-product attention on split heads; returns (context, probabilities)."""
    scale = 1.0 / jnp.sqrt(jnp.float32(q.shape[-1]))
    # lax.dot_general with (batch, head) batch dimensions: one equation per product, no einsum
    # spec strings in the name stack, no reshapes or squeezes around it.
    batch = ((0, 1), (0, 1))
    scores = jax.lax.dot_general(q, k, (((3,), (3,)), batch)) * scale
    probs = masked_softmax(scores, mask)
    return jax.lax.dot_general(probs, v, (((3,), (2,)), batch)), probs
