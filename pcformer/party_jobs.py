"""What each process of a two-process party run holds: the jobs `pcformer party` can run.

A job is one function both processes trace and compile identically, and the inputs of each
role: the server (party 0) loads the weights, the client (party 1) its own input. A process never
receives the other role's inputs; it passes zeros of the same shapes in their place (they are
never read: compiler/party_process.py). Shapes of the other role's inputs are public: the
client learns the weights' shapes from the server's manifest (names, shapes, dtypes; no values)
and the server knows the client's input shape from the agreed settings (seq_len).

Jobs:
- "mlp": a tiny two-layer MLP, weights and input drawn from fixed seeds (tests);
- "model": the --model's private inference, by its kind: the server loads the checkpoint's
  weights, the client reads only the folder's config.json and tokenizer and brings its input:
  BERT / MiniLM: the sentence embedding of its text; GPT-2 / LLaMA-style decoders: the logits of
  the next token after its prompt, and with `new_tokens` > 1 greedy generation: one run of the
  same program per token, the client writing each revealed token into its own padded ids
  (`advance`; no KV cache across the processes: every step runs the whole padded prompt);
  ViT: the class logits (or last hidden state) of its image (a .npy file of pixels).

The dealer builds the same job from public facts alone (config, settings; zeros for every
input) to prepare each party's material before the run (compiler/dealer_pass.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import MPCConfig

SERVER, CLIENT = 0, 1
DEALER = 2            # not a party process: it prepares each party's material before the run
ROLES = {"server": SERVER, "client": CLIENT}


@dataclasses.dataclass(frozen=True)
class PartySettings:
    """What both processes must agree on (the same flags on both sides)."""

    job: str = "model"                # "model" | "mlp"
    model: str = "minilm"
    text: str = ""                    # the client's text (BERT)
    prompt: str = ""                  # the client's prompt (decoders)
    image: str = ""                   # the client's pixels, a .npy file (ViT)
    seq_len: int = 32
    policy: str = "mpcformer"
    seed: int | None = None
    ring_bits: int = 64
    frac_bits: int = 16
    trunc_mode: str = "dealer"
    protocols: str = "beaver"         # the protocol family ("fss": the dealer's keys on tapes)
    compare_bits: int | None = None   # fss: the declared comparison width (MPCConfig's)
    new_tokens: int = 1               # decoders: greedy tokens, one run (and material) each
    model_parallel: int = 1           # devices per party process: the server's weights split

    def config(self) -> MPCConfig:
        return MPCConfig(ring_bits=self.ring_bits, frac_bits=self.frac_bits,
                         trunc_mode=self.trunc_mode, seed=self.seed, protocols=self.protocols,
                         compare_bits=self.compare_bits)


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """One role's view of a job: fn(*args), each argument's owner, this role's arguments (the
    other role's as zeros), and the manifest the server publishes (None for the client)."""

    fn: object
    owners: tuple
    args: tuple
    manifest: dict | None = None
    tokenizer: object = None          # the client's, for a decoder: decodes what it generated


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
    real = mlp_inputs()   # the dealer (role 2) owns none of them: zeros for all
    owners = (SERVER, SERVER, SERVER, CLIENT)
    args = tuple(x if o == role else np.zeros_like(x) for x, o in zip(real, owners))
    return Job(mlp, owners, args, {} if role == SERVER else None)


# -- BERT / MiniLM sentence embeddings -------------------------------------------------------

def weights_manifest(params) -> dict:
    """The public description of the server's weights: path -> [shape, dtype] (no values).
    `params` may hold arrays or only their shapes (jax.ShapeDtypeStruct: the dealer's view)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(k.key for k in path): [list(x.shape), str(np.dtype(x.dtype))]
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


def _public_model(folder, tensor_names: bool = False):
    """The model as the client sees it: config and tokenizer, no weights (`tensor_names`: and
    the names in the weights file's header, which say whether there is a pooler: the dealer)."""
    from .models import checkpoint, loaded, registry, tokenizer
    raw = checkpoint.read_config_dict(folder)
    kind = raw["model_type"]
    names = checkpoint.tensor_names(folder) if tensor_names else None
    config = registry.config_from_hf(kind, registry.config_fields(raw), names)
    module = registry.build_module(kind, config, tuple(raw.get("architectures") or ()))
    tok = None if kind == "vit" else tokenizer.load_tokenizer(folder)
    return loaded.LoadedModel(module, None, config, raw, tok, kind, folder)


def _folder(name: str) -> Path:
    """A named model's folder ("minilm") or the folder given."""
    from .models import NAMED
    return NAMED[name.lower()]() if name.lower() in NAMED and not Path(name).exists() else Path(name)


def next_token_logits(model):
    """fn(params, ids, mask) -> the logits [b, vocab] at each prompt's last token. The position
    comes from the client's own mask (right padding): a one-hot selection the client computes
    in plaintext, so only `vocab` values per prompt are revealed, not the whole [s, vocab]."""
    def fn(params, ids, mask):
        logits = model.forward(params, ids, mask)
        m = mask.astype(logits.dtype)
        last = m - jnp.concatenate([m[:, 1:], jnp.zeros_like(m[:, :1])], axis=1)
        return jnp.einsum("bs,bsv->bv", last, logits)
    return fn


def _client_input(settings: PartySettings, model) -> tuple:
    """The client's own arguments: token ids and mask of its text, or its image's pixels."""
    from .inference import tokenize_padded
    if model.kind == "vit":
        if not settings.image:
            raise ValueError("a ViT model takes the client's image: give --image=FILE.npy")
        pixels = np.load(settings.image).astype(np.float32)
        pixels = pixels[None] if pixels.ndim == 3 else pixels
        if pixels.shape != _image_shape(model):
            raise ValueError(f"--image={settings.image} has shape {list(pixels.shape)}; the model "
                             f"takes {list(_image_shape(model))}")
        return (pixels,)
    text = settings.text if model.kind == "bert" else settings.prompt
    return tokenize_padded(model, [text], settings.seq_len)


def _image_shape(model) -> tuple:
    c = model.config
    return (1, c.num_channels, c.image_size, c.image_size)


def _model_fn(model):
    """What the pair computes for this kind of model (see the module's docstring)."""
    if model.kind == "bert":
        return model.embed_fn
    if model.kind == "vit":
        from .models import vit
        classifier = isinstance(model.module, vit.ViTForImageClassification)
        return model.logits_fn if classifier else model.forward
    return next_token_logits(model)


def _client_zeros(settings: PartySettings, model) -> tuple:
    """Zeros in place of the client's inputs (their shapes are public: the agreed settings)."""
    if model.kind == "vit":
        return (np.zeros(_image_shape(model), np.float32),)
    return tuple(np.zeros((1, settings.seq_len), np.int32) for _ in range(2))


def _model_job(settings: PartySettings, role: int, manifest: dict | None) -> Job:
    from . import models
    if role == SERVER:
        model = models.load(settings.model)
        zeros = _client_zeros(settings, model)
        return Job(_model_fn(model), (SERVER,) + (CLIENT,) * len(zeros),
                   (model.params, *zeros), weights_manifest(model.params))
    if role == DEALER:   # the weights' shapes from the config and the file's header alone
        from .models import registry
        model = _public_model(_folder(settings.model), tensor_names=True)
        zeros = _client_zeros(settings, model)
        manifest = weights_manifest(registry.param_shapes(model.module))
        return Job(_model_fn(model), (SERVER,) + (CLIENT,) * len(zeros),
                   (zeros_from_manifest(manifest), *zeros))
    model = _public_model(_folder(settings.model))
    own = _client_input(settings, model)
    check_generation(settings, model.kind, own)
    return Job(_model_fn(model), (SERVER,) + (CLIENT,) * len(own),
               (zeros_from_manifest(manifest), *own), tokenizer=model.tokenizer)


def check_generation(settings: PartySettings, kind: str, client_args) -> None:
    """new_tokens > 1 needs a decoder and room in the padded ids for every token but the last
    (the client's check, before anything is compiled)."""
    if settings.new_tokens <= 1:
        return
    if kind not in ("gpt2", "llama"):
        raise ValueError(f"--max_new_tokens generates with a decoder; {settings.model} is a "
                         f"{kind} model")
    used = int(np.asarray(client_args[1]).sum())
    if used + settings.new_tokens - 1 > settings.seq_len:
        raise ValueError(f"the prompt has {used} tokens and {settings.new_tokens} new tokens "
                         f"need {used + settings.new_tokens - 1} positions, more than "
                         f"--seq_len={settings.seq_len}: raise --seq_len")


def advance(ids, mask, logits) -> tuple:
    """The client's next step of greedy generation: (ids, mask, token) with the greedy token of
    its revealed logits [1, vocab] written at the first padding position (right padding) and the
    mask extended over it."""
    token = int(np.argmax(np.asarray(logits)[0]))
    ids, mask = np.array(ids), np.array(mask)
    pos = int(mask[0].sum())
    ids[0, pos], mask[0, pos] = token, 1
    return ids, mask, token


def material_path(path, step: int) -> str:
    """Where step `step`'s material of a generation is (one run, one material each): the file
    the dealer names for the first step, FILE.stepK beside it for the others."""
    return str(path) if step == 0 else f"{path}.step{step}"


def build(settings: PartySettings, role: int, manifest: dict | None = None) -> Job:
    """This role's job. The client needs the server's `manifest` (weights' shapes); the dealer
    (role DEALER) builds it from public facts only: the model's config and the settings."""
    if settings.job == "mlp":
        return _mlp_job(role)
    if settings.job == "model":
        return _model_job(settings, role, manifest)
    raise ValueError(f"unknown party job {settings.job!r}: use model or mlp")


def lower(settings: PartySettings, job: Job) -> tuple:
    """(the job's protocol IR, its flat inputs): what every role traces, identically."""
    from . import costing
    return (costing.lower_only(job.fn, *job.args, owners=job.owners, policy=settings.policy,
                               config=settings.config()), jax.tree_util.tree_leaves(job.args))


def prepare_material(settings: PartySettings, out_dir) -> dict:
    """The dealer's step before a run: each party's material in its own file under `out_dir`
    (created private); a generation's later steps beside it (`material_path`). Returns {role:
    path}; give each party process only its own files."""
    import os

    from .compiler import dealer_pass
    prog, flat = lower(settings, build(settings, DEALER))
    config = settings.config()
    os.makedirs(out_dir, mode=0o700, exist_ok=True)
    paths = {role: os.path.join(out_dir, f"{role}.npz") for role in ROLES}
    setup = dealer_pass.keys(config, prog)[1]       # the deployment's: one for every step
    dealer = dealer_pass.dealer_for(prog, config)   # its pass compiled once for every step
    for step in range(settings.new_tokens):       # one run each: fresh material per step
        words = dealer_pass.keys(config, prog, run_index=step)[0]
        materials = dealer.deal(flat, words, setup)
        for role, party in ROLES.items():
            path = material_path(paths[role], step)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                materials[party].save(f)
    return paths
