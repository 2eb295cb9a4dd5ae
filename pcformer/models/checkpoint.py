"""Hugging Face checkpoint folders <-> Flax parameter trees.

A folder holds `config.json` (read with `transformers.AutoConfig`), tokenizer files (read with
`transformers.AutoTokenizer`) and `model.safetensors` (read with `safetensors.numpy`, no torch).
Since our module names mirror Hugging Face's, the name mapping is a handful of rules
(`NAME_RULES` plus one `Layout` per model kind) instead of a per-tensor table.
Everything is local: nothing here ever touches the network.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np
from safetensors.numpy import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be turned into our parameters (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one model kind stores its tensors in Hugging Face files.

    kernel_transposed: `nn.Linear` stores [out, in] (BERT); GPT-2's `Conv1D` stores [in, out].
    prefix: the leading name some heads add (`bert.` in BertFor*, `transformer.` in
        GPT2LMHeadModel) and bare base models omit; lookups accept either spelling.
    """

    kernel_transposed: bool = True
    prefix: str = ""
    # Leaves Hugging Face stores as bare `nn.Parameter`s, without a `.weight` (ViT's
    # `cls_token`, `position_embeddings`).
    bare: tuple[str, ...] = ()
    # Older spellings of the same tensors, as (regex, replacement) on our names: a lookup
    # falls back to them (ViT checkpoints saved before transformers 5 renamed the layers).
    aliases: tuple[tuple[str, Any], ...] = ()  # replacement: a string or a function of the match


LAYOUTS: dict[str, Layout] = {
    "bert": Layout(kernel_transposed=True, prefix="bert"),
    "gpt2": Layout(kernel_transposed=False, prefix="transformer"),
    "llama": Layout(kernel_transposed=True, prefix="model"),
    "vit": Layout(
        kernel_transposed=True, prefix="vit", bare=("cls_token", "position_embeddings"),
        aliases=(
            (r"(^|\.)layers\.", r"\1encoder.layer."),
            (r"attention\.([qkv])_proj", lambda m: "attention.attention." + {"q": "query", "k": "key", "v": "value"}[m.group(1)]),
            (r"attention\.o_proj", "attention.output.dense"),
            (r"mlp\.fc1", "intermediate.dense"),
            (r"mlp\.fc2", "output.dense"),
        ),
    ),
}

# Flax leaf name -> Hugging Face leaf name. Any other leaf (a raw table such as
# `position_embeddings` or `wpe`) is a module of its own in Hugging Face, with a `.weight`.
NAME_RULES: dict[str, str] = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}
_INDEXED = re.compile(r"^(layer|layers|h)_(\d+)$")  # Flax `layer_3` <-> Hugging Face `layer.3`

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"


def layout(kind: str) -> Layout:
    try:
        return LAYOUTS[kind]
    except KeyError:
        raise CheckpointError(f"unknown model_type {kind!r}; supported: {sorted(LAYOUTS)}") from None


def hf_name(path: tuple[str, ...], lay: Layout = Layout()) -> str:
    """Flax parameter path -> Hugging Face tensor name."""
    parts = []
    for p in path[:-1]:
        m = _INDEXED.match(p)
        parts.extend([m.group(1), m.group(2)] if m else [p])
    leaf = path[-1]
    if leaf in NAME_RULES:
        parts.append(NAME_RULES[leaf])
    elif leaf in lay.bare:
        parts.append(leaf)
    else:
        parts.extend([leaf, "weight"])
    return ".".join(parts)


def _flatten(tree: Mapping) -> dict[tuple[str, ...], Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat[tuple(k.key for k in path)] = leaf
    return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return tree


def _to_hf(path: tuple[str, ...], value: np.ndarray, lay: Layout) -> np.ndarray:
    if path[-1] == "kernel" and lay.kernel_transposed:
        return value.T
    return value


def _hf_shape(path: tuple[str, ...], shape: tuple[int, ...], lay: Layout) -> tuple[int, ...]:
    return shape[::-1] if path[-1] == "kernel" and lay.kernel_transposed else shape


def _candidates(name: str, prefix: str, aliases=()) -> list[str]:
    if not prefix:
        names = [name]
    elif name.startswith(prefix + "."):
        names = [name, name[len(prefix) + 1 :]]
    else:
        names = [name, f"{prefix}.{name}"]
    if aliases:
        old = names
        for pattern, repl in aliases:
            old = [re.sub(pattern, repl, n) for n in old]
        names += [n for n in old if n not in names]
    return names


def params_from_state(state: Mapping[str, np.ndarray], expected: Mapping, kind: str, source: str = "checkpoint") -> dict:
    """Build a Flax params tree of the `expected` structure (arrays or ShapeDtypeStructs)
    from a Hugging Face state dict. Extra tensors (buffers such as `position_ids`, heads we do
    not model) are ignored; missing or mis-shaped ones raise `CheckpointError` naming them."""
    lay = layout(kind)
    out = {}
    for path, want in _flatten(expected).items():
        name = hf_name(path, lay)
        want_hf = _hf_shape(path, tuple(want.shape), lay)
        found = next((n for n in _candidates(name, lay.prefix, lay.aliases) if n in state), None)
        if found is None:
            raise CheckpointError(f"{source}: missing tensor {name!r} (expected shape {tuple(want_hf)})")
        value = np.asarray(state[found])
        if tuple(value.shape) != tuple(want_hf):
            raise CheckpointError(
                f"{source}: tensor {found!r} has shape {tuple(value.shape)}, expected {tuple(want_hf)}"
            )
        out[path] = np.ascontiguousarray(_to_hf(path, value, lay)).astype(want.dtype)
    return _unflatten(out)


def state_from_params(params: Mapping, kind: str) -> dict[str, np.ndarray]:
    """Flax params tree -> Hugging Face state dict (names and layouts as Hugging Face saves)."""
    lay = layout(kind)
    return {
        hf_name(path, lay): np.ascontiguousarray(_to_hf(path, np.asarray(v), lay))
        for path, v in _flatten(params).items()
    }


def read_config_dict(folder: Path) -> dict:
    """config.json as a dict, with a clear error if the folder or file is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} does not exist")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint folder {str(folder)!r} has no {CONFIG_FILE}")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # name the file, not just the offset
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise CheckpointError(f"{path}: no model_type; supported: {sorted(LAYOUTS)}")
    layout(cfg["model_type"])
    return cfg


def read_state(folder: Path) -> dict[str, np.ndarray]:
    """All tensors of `model.safetensors` (or of the shards its index lists), as numpy."""
    folder = Path(folder)
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if single.is_file():
        return dict(load_file(str(single)))
    if index.is_file():
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state: dict[str, np.ndarray] = {}
        for shard in shards:
            if not (folder / shard).is_file():
                raise FileNotFoundError(f"{index} lists shard {shard!r}, which is missing")
            state.update(load_file(str(folder / shard)))
        return state
    other = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".h5", ".msgpack")]
    hint = f" (found {other}: convert them to safetensors)" if other else ""
    raise FileNotFoundError(f"checkpoint folder {str(folder)!r} has no {WEIGHTS_FILE}{hint}")


def tensor_names(folder: Path) -> list[str]:
    """The names of the checkpoint's tensors, from the safetensors headers only (no values read):
    public facts, for whoever builds the program without the weights (the dealer)."""
    from safetensors import safe_open
    folder = Path(folder)
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if index.is_file() and not single.is_file():
        with open(index) as f:
            return sorted(json.load(f)["weight_map"])
    with safe_open(str(single), framework="np") as f:
        return list(f.keys())


def write_state(folder: Path, state: Mapping[str, np.ndarray]) -> Path:
    """Write `model.safetensors` with the metadata transformers expects."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILE
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(path), metadata={"format": "pt"})
    return path
