"""Model presets: Hugging Face config files of real architectures, as shapes only.

A preset is a Hugging Face `config.json` shipped in pcformer/models/presets/<name>.json with the
published hyper-parameters of the architecture (no weights). `abstract_model(spec)` turns a preset
name, a config.json path or a checkpoint folder (only its config.json is read) into the Flax
module and its parameter shapes, from `jax.eval_shape` of the module's `init`: nothing is
allocated, so a 7B-parameter model costs no memory. `programs(model, seq_len, new_tokens)` gives
the functions and argument shapes `pcformer run` compiles for it (the cost of exactly those).
"""
from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

PRESET_DIR = Path(__file__).parent / "models" / "presets"
SERVER, CLIENT, PUBLIC = 0, 1, None


class CostError(ValueError):
    """Bad input to a model's cost (unknown preset, lengths the model cannot take, a policy that
    leaves an operator unapproximated): the CLI prints it as one line."""


def names() -> list[str]:
    """The preset names shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def read_config(spec) -> tuple[str, dict]:
    """(display name, config dict) of a preset name, a named model ("minilm"), a config.json
    file or a checkpoint folder."""
    from .models import NAMED, resolve
    path = resolve(spec)   # "minilm": the checkpoint folder of the installed package
    named = path != Path(str(spec))
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint folder {spec!r} has no config.json")
        name = str(spec) if named else path.parent.name
    elif path.is_file():
        name = path.stem if path.name != "config.json" else path.parent.name
    elif (PRESET_DIR / f"{spec}.json").is_file():
        path, name = PRESET_DIR / f"{spec}.json", str(spec)
    else:
        raise CostError(f"--model={spec}: not a preset ({', '.join(names())}), a named "
                         f"model ({', '.join(sorted(NAMED))}), a config.json or a checkpoint "
                         f"folder")
    raw = json.loads(path.read_text())
    if "model_type" not in raw:
        raise CostError(f"{path.name} of {name}: no model_type")
    return name, raw


@dataclasses.dataclass(frozen=True, eq=False)
class AbstractModel:
    """A model known by shapes: its Flax module, config dataclass and parameter shapes."""

    name: str
    kind: str
    module: Any
    config: Any
    params: Any  # a pytree of jax.ShapeDtypeStruct


def _hf(raw: dict):
    """The config dict as attributes, the way the models' `from_hf` read a transformers config.
    A saved transformers config spells its class count as `id2label` only."""
    raw = dict(raw)
    if "num_labels" not in raw and isinstance(raw.get("id2label"), dict):
        raw["num_labels"] = len(raw["id2label"])
    return types.SimpleNamespace(**raw)


def _build(kind: str, raw: dict):
    """(module, config, params shapes) for a model type, from pcformer.models' registry."""
    from .models import registry
    if kind not in registry.CONFIGS:
        raise CostError(f"model_type {kind!r} has no model in pcformer.models yet; supported: "
                         f"{sorted(registry.CONFIGS)}")
    config = registry.CONFIGS[kind].from_hf(_hf(raw))
    archs: tuple = ()
    if kind == "bert":  # the sentence embedding `pcformer run` computes never uses the pooler
        config = dataclasses.replace(config, add_pooling_layer=False)
    elif kind == "vit":  # private classification when the config has a head, else the encoder
        archs = tuple(raw.get("architectures") or ())
    module = registry.build_module(kind, config, archs)
    return module, config, registry.param_shapes(module)


def abstract_model(spec) -> AbstractModel:
    """The model a preset / config.json / checkpoint folder describes, parameters as shapes."""
    name, raw = read_config(spec)
    kind = raw["model_type"]
    module, config, params = _build(kind, raw)
    return AbstractModel(name, kind, module, config, params)


@dataclasses.dataclass(frozen=True)
class Call:
    """One program to cost: fn(*args) with its owners and reveal prefix."""

    fn: Callable
    args: tuple
    owners: tuple
    reveal: Any = True


@dataclasses.dataclass(frozen=True)
class Programs:
    prefill: Call
    step: Call | None = None


def _spec(shape, dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _bert_programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    from .models import bert
    if seq_len > model.config.max_position_embeddings:
        raise CostError(f"seq_len {seq_len} exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    module = model.module

    def embed(params, ids, mask):
        return bert.sentence_embedding(module.apply({"params": params}, ids, mask), mask)

    ids = _spec((1, seq_len), jnp.int32)
    return Programs(Call(embed, (model.params, ids, ids), (SERVER, CLIENT, CLIENT)))


def _decoder_programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    from .models import gpt2, llama
    lib = gpt2 if model.kind == "gpt2" else llama
    total = seq_len + new_tokens
    limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    if total > limit:
        raise CostError(f"seq_len + new_tokens = {total} exceeds the model's {limit} positions")
    module = model.module

    def greedy(params, token_ids, cache, position):  # inference._greedy_step, on the module
        logits, new_cache = lib.decode_step(module, params, token_ids, cache, position)
        return jnp.argmax(logits[0, -1]).astype(jnp.int32), new_cache

    cache = jax.eval_shape(lambda: lib.init_cache(model.config, 1, total))
    pos = _spec((), jnp.int32)
    prefill = Call(greedy, (model.params, _spec((1, seq_len), jnp.int32), cache, pos),
                   (SERVER, CLIENT, PUBLIC, PUBLIC), (True, False))
    step = Call(greedy, (model.params, _spec((1, 1), jnp.int32), cache, pos),
                (SERVER, CLIENT, "secret", PUBLIC), (True, False))
    return Programs(prefill, step)


def _vit_programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    """The client's image, the server's weights: the class logits (or the last hidden state of
    a ViTModel). The sequence is the image's patches plus CLS: seq_len does not apply."""
    from .models import registry, vit
    module = model.module
    pixels = registry.input_struct(model.config)
    return Programs(Call(lambda p, x: vit.forward(module, p, x), (model.params, pixels),
                         (SERVER, CLIENT)))


_PROGRAMS: dict[str, Callable] = {"bert": _bert_programs, "gpt2": _decoder_programs,
                                  "llama": _decoder_programs, "vit": _vit_programs}
DECODERS = ("gpt2", "llama")


def programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    """The programs `pcformer run` compiles for this model at these lengths."""
    return _PROGRAMS[model.kind](model, seq_len, new_tokens, config)


def parameter_count(model: AbstractModel) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(model.params))
