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


def names() -> list[str]:
    """The preset names shipped with the package."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def read_config(spec) -> tuple[str, dict]:
    """(display name, config dict) of a preset name, a config.json file or a checkpoint folder."""
    path = Path(str(spec))
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint folder {spec!r} has no config.json")
        name = path.parent.name
    elif path.is_file():
        name = path.stem if path.name != "config.json" else path.parent.name
    elif (PRESET_DIR / f"{spec}.json").is_file():
        path, name = PRESET_DIR / f"{spec}.json", str(spec)
    else:
        raise ValueError(f"--model={spec}: not a preset ({', '.join(names())}), "
                         f"a config.json or a checkpoint folder")
    raw = json.loads(path.read_text())
    if "model_type" not in raw:
        raise ValueError(f"{path.name} of {name}: no model_type")
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
    """The config dict as attributes, the way the models' `from_hf` read a transformers config."""
    return types.SimpleNamespace(**raw)


def _abstract_params(module, dummy) -> Any:
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), dummy))["params"]


def _build(kind: str, raw: dict):
    """(module, config, params shapes) for a model type; new kinds register in _BUILDERS."""
    try:
        builder = _BUILDERS[kind]
    except KeyError:
        raise ValueError(f"model_type {kind!r} has no model in pcformer.models yet; supported: "
                         f"{sorted(_BUILDERS)}") from None
    return builder(raw)


def _bert(raw):
    from .models import bert
    # the sentence embedding `pcformer run` computes never uses the pooler
    config = bert.BertConfig.from_hf(_hf(raw), add_pooling_layer=False)
    module = bert.BertModel(config)
    return module, config, _abstract_params(module, jnp.zeros((1, 2), jnp.int32))


def _gpt2(raw):
    from .models import gpt2
    config = gpt2.GPT2Config.from_hf(_hf(raw))
    module = gpt2.GPT2LMHeadModel(config)
    return module, config, _abstract_params(module, jnp.zeros((1, 2), jnp.int32))


_BUILDERS: dict[str, Callable] = {"bert": _bert, "gpt2": _gpt2}


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
        raise ValueError(f"seq_len {seq_len} exceeds the model's "
                         f"{model.config.max_position_embeddings} positions")
    module = model.module

    def embed(params, ids, mask):
        return bert.sentence_embedding(module.apply({"params": params}, ids, mask), mask)

    ids = _spec((1, seq_len), jnp.int32)
    return Programs(Call(embed, (model.params, ids, ids), (SERVER, CLIENT, CLIENT)))


def _gpt2_programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    from .models import gpt2
    total = seq_len + new_tokens
    if total > model.config.n_positions:
        raise ValueError(f"seq_len + new_tokens = {total} exceeds the model's "
                         f"{model.config.n_positions} positions")
    module = model.module

    def greedy(params, token_ids, cache, position):  # inference._greedy_step, on the module
        logits, new_cache = gpt2.decode_step(module, params, token_ids, cache, position)
        return jnp.argmax(logits[0, -1]).astype(jnp.int32), new_cache

    cache = jax.eval_shape(lambda: gpt2.init_cache(model.config, 1, total))
    pos = _spec((), jnp.int32)
    prefill = Call(greedy, (model.params, _spec((1, seq_len), jnp.int32), cache, pos),
                   (SERVER, CLIENT, PUBLIC, PUBLIC), (True, False))
    step = Call(greedy, (model.params, _spec((1, 1), jnp.int32), cache, pos),
                (SERVER, CLIENT, "secret", PUBLIC), (True, False))
    return Programs(prefill, step)


_PROGRAMS: dict[str, Callable] = {"bert": _bert_programs, "gpt2": _gpt2_programs}


def programs(model: AbstractModel, seq_len: int, new_tokens: int, config) -> Programs:
    """The programs `pcformer run` compiles for this model at these lengths."""
    return _PROGRAMS[model.kind](model, seq_len, new_tokens, config)


def parameter_count(model: AbstractModel) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(model.params))
