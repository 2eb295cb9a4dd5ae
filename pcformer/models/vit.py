"""Vision Transformer in Flax linen, laid out like Hugging Face's `ViTModel` /
`ViTForImageClassification` (transformers 5 names: `layers_0/attention/q_proj`, `mlp/fc1`, ...;
the checkpoint converter also accepts the older `encoder.layer.0.attention.attention.query`).

The patch embedding is a convolution with stride = kernel = patch size, written as a reshape of
the image into patches and one matrix product: the same numbers, in primitives the MPC
compiler lowers (no `conv_general_dilated`). Pixels are NCHW, as Hugging Face takes them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from .layers import LayerNorm, activation, attention, fields_from_hf, merge_heads, split_heads


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """A frozen view of the Hugging Face ViT config fields the model uses."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    pooler_output_size: int | None = None  # None: hidden_size
    pooler_act: str = "tanh"
    num_labels: int = 2
    add_pooling_layer: bool = False

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        activation(self.hidden_act)
        if self.pooler_act != "tanh":
            raise ValueError(f"ViT pooler_act {self.pooler_act!r} is not supported (only 'tanh')")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides) -> "ViTConfig":
        """Take the fields we use from a `transformers.ViTConfig`; refuse variants we lack."""
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(hf_config, name, 0), int):
                raise ValueError(f"ViT {name}={getattr(hf_config, name)!r}: only square sizes are supported")
        return fields_from_hf(cls, hf_config, **overrides)


class PatchProjection(nn.Module):
    """Hugging Face's `patch_embeddings.projection` Conv2d, as patches times a matrix."""

    config: ViTConfig

    @nn.compact
    def __call__(self, pixel_values):
        c = self.config
        p, ch, h = c.patch_size, c.num_channels, c.hidden_size
        b, _, height, width = pixel_values.shape
        if (pixel_values.shape[1], height, width) != (ch, c.image_size, c.image_size):
            raise ValueError(
                f"pixel_values {tuple(pixel_values.shape)}: expected [batch, {ch}, {c.image_size}, {c.image_size}]"
            )
        n = c.image_size // p
        # Hugging Face's Conv2d weight is [out, in, kh, kw]; the converter reverses a kernel's
        # axes, so ours is [kw, kh, in, out] and each patch is laid out (kw, kh, in) to match.
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, ch, h), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (h,), jnp.float32)
        patches = pixel_values.reshape(b, ch, n, p, n, p).transpose(0, 2, 4, 5, 3, 1)
        patches = patches.reshape(b, n * n, p * p * ch)
        return jax.lax.dot_general(patches, kernel.reshape(p * p * ch, h), (((2,), (0,)), ((), ()))) + bias


class ViTPatchEmbeddings(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, pixel_values):
        return PatchProjection(self.config, name="projection")(pixel_values)


class ViTEmbeddings(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, pixel_values):
        c = self.config
        x = ViTPatchEmbeddings(c, name="patch_embeddings")(pixel_values)
        cls = self.param("cls_token", nn.initializers.normal(0.02), (1, 1, c.hidden_size), jnp.float32)
        pos = self.param(
            "position_embeddings", nn.initializers.normal(0.02), (1, c.num_patches + 1, c.hidden_size), jnp.float32
        )
        cls = jnp.broadcast_to(cls, (x.shape[0], 1, c.hidden_size))
        return jnp.concatenate([cls, x], axis=1) + pos


class ViTAttention(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        q, k, v = (
            split_heads(nn.Dense(c.hidden_size, use_bias=c.qkv_bias, name=n)(x), c.num_attention_heads)
            for n in ("q_proj", "k_proj", "v_proj")
        )
        ctx, probs = attention(q, k, v, None)
        return nn.Dense(c.hidden_size, name="o_proj")(merge_heads(ctx)), probs


class ViTMLP(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return nn.Dense(c.hidden_size, name="fc2")(activation(c.hidden_act)(nn.Dense(c.intermediate_size, name="fc1")(x)))


class ViTLayer(nn.Module):
    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        eps = self.config.layer_norm_eps
        a, probs = ViTAttention(self.config, name="attention")(LayerNorm(eps, name="layernorm_before")(x))
        x = x + a
        x = x + ViTMLP(self.config, name="mlp")(LayerNorm(eps, name="layernorm_after")(x))
        return x, probs


class ViTPooler(nn.Module):
    """dense + tanh on the CLS token."""

    config: ViTConfig

    @nn.compact
    def __call__(self, x):
        c = self.config
        return jnp.tanh(nn.Dense(c.pooler_output_size or c.hidden_size, name="dense")(x[:, 0]))


class ViTModel(nn.Module):
    """`ViTModel`: a dict with `last_hidden_state` (after the final LayerNorm),
    `hidden_states` (embeddings and each layer's output, before the final norm, as Hugging Face
    reports them), `attentions`, and `pooler_output` when `add_pooling_layer`."""

    config: ViTConfig

    @nn.compact
    def __call__(self, pixel_values):
        c = self.config
        x = ViTEmbeddings(c, name="embeddings")(pixel_values)
        hidden, attns = [x], []
        for i in range(c.num_hidden_layers):
            x, probs = ViTLayer(c, name=f"layers_{i}")(x)
            hidden.append(x)
            attns.append(probs)
        x = LayerNorm(c.layer_norm_eps, name="layernorm")(x)
        out = {"last_hidden_state": x, "hidden_states": tuple(hidden), "attentions": tuple(attns)}
        if c.add_pooling_layer:
            out["pooler_output"] = ViTPooler(c, name="pooler")(x)
        return out


class ViTForImageClassification(nn.Module):
    """`ViTForImageClassification`: class logits [batch, num_labels] from the CLS token."""

    config: ViTConfig

    @nn.compact
    def __call__(self, pixel_values):
        base = dataclasses.replace(self.config, add_pooling_layer=False)
        x = ViTModel(base, name="vit")(pixel_values)["last_hidden_state"]
        return nn.Dense(self.config.num_labels, name="classifier")(x[:, 0])


def forward(module, params, pixel_values) -> jax.Array:
    """ViTModel: the last hidden state [b, 1 + patches, hidden]; ViTForImageClassification:
    the logits [b, num_labels]."""
    if isinstance(module, ViTModel):
        # The pooler's output is not returned: leave it out of the traced program (its tanh
        # would otherwise reach the compiler as dead code). Flax ignores the unused params.
        no_pool = ViTModel(dataclasses.replace(module.config, add_pooling_layer=False))
        return no_pool.apply({"params": params}, pixel_values)["last_hidden_state"]
    return module.apply({"params": params}, pixel_values)
