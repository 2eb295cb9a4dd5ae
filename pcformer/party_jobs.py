"""What each process of a two-process party run holds: the jobs `pcformer party` can run.

A job is one function both processes trace and compile identically, and the inputs of each
role: the server (party 0) loads the weights, the client (party 1) its own input. A process never
receives the other role's inputs; it passes zeros of the same shapes in their place (they are
never read: compiler/party_process.py). Shapes of the other role's inputs are public: the
client learns the weights' shapes from the server's manifest (names, shapes, dtypes; no values)
and the server knows the client's input shape from the agreed settings (seq_len).

Jobs:
- "mlp": a tiny two-layer MLP, weights and input drawn from fixed seeds (tests);
- "bert": a BERT / MiniLM sentence embedding: the server loads the checkpoint's weights, the
  client reads only the folder's config.json and tokenizer and tokenizes its text.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import MPCConfig

SERVER, CLIENT = 0, 1
ROLES = {"server": SERVER, "client": CLIENT}


@dataclasses.dataclass(frozen=True)
class PartySettings:
    """What both processes must agree on (the same flags on both sides)."""

    job: str = "bert"                 # "bert" | "mlp"
    model: str = "minilm"
    text: str = ""
    seq_len: int = 32
    policy: str = "mpcformer"
    seed: int | None = None
    ring_bits: int = 64
    frac_bits: int = 16
    trunc_mode: str = "dealer"

    def config(self) -> MPCConfig:
        return MPCConfig(ring_bits=self.ring_bits, frac_bits=self.frac_bits,
                         trunc_mode=self.trunc_mode, seed=self.seed)


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """One role's view of a job: fn(*args), each argument's owner, this role's arguments (the
    other role's as zeros), and the manifest the server publishes (None for the client)."""

    fn: object
    owners: tuple
    args: tuple
    manifest: dict | None = None


# -- the tiny MLP (tests) --------------------------------------------------------------------

MLP_SHAPES = {"w1": (8, 16), "b1": (16,), "w2": (16, 4), "x": (2, 8)}


def mlp(w1, b1, w2, x):
    return jax.nn.relu(x @ w1 + b1) @ w2


def mlp_inputs() -> tuple:
    """(w1, b1, w2, x): the server's weights and the client's input, from fixed seeds."""
    rng = np.random.default_rng(7)
    return tuple(rng.normal(size=MLP_SHAPES[n]).astype(np.float32) * 0.5
                 for n in ("w1", "b1", "w2", "x"))


def _mlp_job(role: int) -> Job:
    real = mlp_inputs()
    owners = (SERVER, SERVER, SERVER, CLIENT)
    args = tuple(x if o == role else np.zeros_like(x) for x, o in zip(real, owners))
    return Job(mlp, owners, args, {} if role == SERVER else None)


# -- BERT / MiniLM sentence embeddings -------------------------------------------------------

def weights_manifest(params) -> dict:
    """The public description of the server's weights: path -> [shape, dtype] (no values)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): [list(np.shape(x)), str(np.asarray(x).dtype)]
            for path, x in flat}


def zeros_from_manifest(manifest: dict) -> dict:
    """Zeros in place of the server's weights, in the tree the manifest describes."""
    tree: dict = {}
    for name, (shape, dtype) in manifest.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.zeros(tuple(shape), dtype)
    return tree


def _public_bert(folder):
    """The model as the client sees it: config and tokenizer, no weights."""
    from .models import checkpoint, loaded, registry, tokenizer
    raw = checkpoint.read_config_dict(folder)
    kind = raw["model_type"]
    if kind != "bert":
        raise ValueError(f"two-process runs take a BERT model; {folder} is {kind}")
    config = registry.config_from_hf(kind, registry.config_fields(raw))
    module = registry.build_module(kind, config, tuple(raw.get("architectures") or ()))
    return loaded.LoadedModel(module, None, config, raw, tokenizer.load_tokenizer(folder), kind,
                              folder)


def _folder(name: str) -> Path:
    """A named model's folder ("minilm") or the folder given."""
    from .models import NAMED
    return NAMED[name.lower()]() if name.lower() in NAMED and not Path(name).exists() else Path(name)


def _bert_job(settings: PartySettings, role: int, manifest: dict | None) -> Job:
    from . import models
    from .inference import tokenize_padded
    owners = (SERVER, CLIENT, CLIENT)
    if role == SERVER:
        model = models.load(settings.model)
        zeros = np.zeros((1, settings.seq_len), np.int32)
        return Job(model.embed_fn, owners, (model.params, zeros, zeros),
                   weights_manifest(model.params))
    model = _public_bert(_folder(settings.model))
    ids, mask = tokenize_padded(model, [settings.text], settings.seq_len)
    return Job(model.embed_fn, owners, (zeros_from_manifest(manifest), ids, mask))


def build(settings: PartySettings, role: int, manifest: dict | None = None) -> Job:
    """This role's job. The client needs the server's `manifest` (weights' shapes)."""
    if settings.job == "mlp":
        return _mlp_job(role)
    if settings.job == "bert":
        return _bert_job(settings, role, manifest)
    raise ValueError(f"unknown party job {settings.job!r}: use bert or mlp")
