"""Model kinds: config dataclasses, Flax modules, and shape-only views of them.

`abstract(config, seq_len)` gives a model's pure forward function with the parameter and input
shapes as `jax.ShapeDtypeStruct`s, from a config alone (nothing allocated; `jax.eval_shape` of
`init`), so costing a 7B model needs no weights:

    am = pcformer.models.abstract("path/to/config.json", seq_len=128)   # or a config object
    jax.eval_shape(am.fn, am.params, *am.inputs)                         # logits' shape
    am = pcformer.models.abstract(cfg, seq_len=129, decode=True)         # one cached step
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from . import bert, checkpoint, gpt2, llama, vit

CONFIGS = {"bert": bert.BertConfig, "gpt2": gpt2.GPT2Config, "llama": llama.LlamaConfig, "vit": vit.ViTConfig}
DECODERS = ("gpt2", "llama")


def kind_of(config) -> str:
    """The model_type of one of our config dataclasses."""
    for kind, cls in CONFIGS.items():
        if isinstance(config, cls):
            return kind
    raise TypeError(f"not a pcformer model config: {type(config).__name__}")


def config_fields(raw: dict) -> types.SimpleNamespace:
    """A config.json dict as attributes, read the way our `from_hf` read a transformers config:
    absent fields take our defaults, which are Hugging Face's. Why not transformers' AutoConfig:
    importing transformers (and torch with it) costs 3-10 s, more than tracing a model."""
    fields = dict(raw)
    if "num_labels" not in fields and fields.get("id2label"):  # transformers derives it so
        fields["num_labels"] = len(fields["id2label"])
    return types.SimpleNamespace(**fields)


def config_from_hf(kind: str, hf_config: Any, state: dict | None = None):
    """Our frozen config for a Hugging Face config; `state` (the checkpoint's tensors), if
    given, says whether BERT/ViT have a pooler."""
    checkpoint.layout(kind)  # the unknown-model_type error
    if kind in ("bert", "vit"):
        pooler = state is not None and any(n.endswith("pooler.dense.weight") for n in state)
        return CONFIGS[kind].from_hf(hf_config, add_pooling_layer=pooler)
    return CONFIGS[kind].from_hf(hf_config)


def build_module(kind: str, config, architectures: tuple[str, ...] = ()):
    """The Flax module for a model kind and config dataclass; heads follow `architectures`."""
    if kind == "bert":
        if "BertForSequenceClassification" in architectures:
            return bert.BertForSequenceClassification(config)
        return bert.BertModel(config)
    if kind == "gpt2":
        return gpt2.GPT2LMHeadModel(config)
    if kind == "llama":
        if "LlamaModel" in architectures:
            return llama.LlamaModel(config)
        return llama.LlamaForCausalLM(config)
    if kind == "vit":
        if "ViTForImageClassification" in architectures:
            return vit.ViTForImageClassification(config)
        return vit.ViTModel(config)
    checkpoint.layout(kind)
    raise AssertionError(f"layout without module: {kind}")


def input_struct(config, batch: int = 1, seq_len: int = 2) -> jax.ShapeDtypeStruct:
    """The shape of the input a forward takes: token ids, or NCHW pixels for ViT."""
    if isinstance(config, vit.ViTConfig):
        c = config
        return jax.ShapeDtypeStruct((batch, c.num_channels, c.image_size, c.image_size), jnp.float32)
    return jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)


def init_input(config, batch: int = 1, seq_len: int = 2) -> jax.Array:
    """Zeros of `input_struct`'s shape, for `init`."""
    s = input_struct(config, batch, seq_len)
    return jnp.zeros(s.shape, s.dtype)


def param_shapes(module) -> Any:
    """Parameter shapes and dtypes of `module` (ShapeDtypeStructs), without allocating them."""
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), init_input(module.config)))["params"]


@dataclasses.dataclass(frozen=True, eq=False)
class AbstractModel:
    """A model as shapes: call `fn(params, *inputs)`.

    fn: pure forward. BERT: (params, input_ids, attention_mask) -> last hidden state (class
        logits for BertForSequenceClassification). GPT-2 /
        LLaMA: (params, input_ids) -> logits, or with `decode` (params, token_ids [b, 1], cache,
        position) -> (logits, new cache). ViT: (params, pixel_values) -> last hidden state
        (ViTModel) or class logits (ViTForImageClassification).
    params, inputs: pytrees of `jax.ShapeDtypeStruct`.
    """

    kind: str
    config: Any
    module: Any
    fn: Callable
    params: Any
    inputs: tuple

    @property
    def num_params(self) -> int:
        return sum(int(x.size) for x in jax.tree_util.tree_leaves(self.params))


def _as_config(config, architectures):
    """(kind, our config dataclass, architectures) from any accepted spelling of a config."""
    if isinstance(config, (str, Path)):
        path = Path(config)
        path = path / checkpoint.CONFIG_FILE if path.is_dir() else path
        with open(path) as f:
            config = json.load(f)
    if isinstance(config, dict):
        kind = config.get("model_type")
        if kind is None:
            raise checkpoint.CheckpointError(f"config has no model_type; supported: {sorted(CONFIGS)}")
        archs = tuple(config.get("architectures") or ())
        return kind, config_from_hf(kind, config_fields(config)), architectures or archs
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return kind_of(config), config, architectures or ()
    kind = getattr(config, "model_type", None)  # a transformers config object
    if kind is None:
        raise TypeError(f"cannot read a model config from {type(config).__name__}")
    return kind, config_from_hf(kind, config), architectures or tuple(getattr(config, "architectures", None) or ())


def abstract(config, seq_len: int, batch: int = 1, *, decode: bool = False,
             architectures: tuple[str, ...] | None = None) -> AbstractModel:
    """A model's forward function and its parameter and input shapes, from a config alone.

    config: one of our config dataclasses, a `transformers` config, a config.json dict, or the
        path of a config.json (or of the folder holding it). `architectures` (else the config's)
        picks the head: e.g. ("LlamaModel",) for no LM head, ("ViTForImageClassification",).
    seq_len: tokens of the input; with `decode`, the cache length (the position is an input).
        Ignored by ViT, whose sequence is its patches.
    """
    kind, cfg, archs = _as_config(config, architectures)
    if kind == "bert":
        cfg = dataclasses.replace(cfg, add_pooling_layer=False)  # forward never needs the pooler
    module = build_module(kind, cfg, tuple(archs))
    params = param_shapes(module)
    ids = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    if decode:
        if kind not in DECODERS or isinstance(module, llama.LlamaModel):
            raise ValueError(f"decode needs a decoder with an LM head; this is {type(module).__name__}")
        lib = gpt2 if kind == "gpt2" else llama
        cache = jax.eval_shape(lambda: lib.init_cache(cfg, batch, seq_len))
        one = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
        pos = jax.ShapeDtypeStruct((), jnp.int32)
        return AbstractModel(kind, cfg, module, lambda p, t, c, i: lib.decode_step(module, p, t, c, i),
                             params, (one, cache, pos))
    if kind == "bert":
        fn = lambda p, i, m: module.apply({"params": p}, i, m)  # noqa: E731
        return AbstractModel(kind, cfg, module, fn, params, (ids, ids))
    if kind == "gpt2":
        return AbstractModel(kind, cfg, module, lambda p, i: gpt2.forward(module, p, i), params, (ids,))
    if kind == "llama":
        return AbstractModel(kind, cfg, module, lambda p, i: llama.forward(module, p, i), params, (ids,))
    pixels = input_struct(cfg, batch)
    return AbstractModel(kind, cfg, module, lambda p, x: vit.forward(module, p, x), params, (pixels,))
