"""Small random checkpoints in the Hugging Face layout, built offline.

No GPT-2 weights or tokenizer files can be downloaded here, so tests, the CLI and the examples
write a tiny random GPT-2 folder (config.json from `transformers.GPT2Config`, model.safetensors
with `GPT2LMHeadModel`'s tensor names, a byte-level BPE tokenizer trained with `tokenizers` on
the built-in text below) and load it through the same `pcformer.models.load` a real `gpt2`
folder takes.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from . import bert, checkpoint, gpt2, registry

EOS = "<|endoftext|>"

# A small, fixed English corpus: the tokenizer (and so every test) is the same on every machine.
CORPUS = """\
Two parties who do not trust each other can still compute a function of their private inputs.
Each secret is split into two random shares that add up to the value modulo a power of two;
either share alone looks like uniform noise and reveals nothing about the secret.
Additions are free: each party adds its own shares locally and no message is sent.
Multiplications need help: a dealer hands out correlated randomness before the inputs are known,
and the parties open masked differences in one round of communication.
A transformer reads a sentence as a sequence of tokens. Each token becomes a vector, and
attention lets every position look at the others, weighting them by a softmax of dot products.
Layer normalization subtracts the mean, divides by the standard deviation, and rescales.
The feed forward block applies a linear map, a smooth nonlinearity such as the GeLU, and another
linear map. Residual connections add the input of each block back to its output.
In fixed point arithmetic a real number is stored as an integer scaled by a power of two, and
after every product the result must be truncated to keep the scale constant.
Exponentials, divisions and square roots are expensive under secret sharing, so friendly models
replace them with polynomials and lookups that cost fewer rounds and fewer bytes.
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single
step. The weather today is clear and bright, with a light wind from the west.
Language models predict the next word from the words before it; a cache of keys and values lets
them extend a text one token at a time without recomputing the whole sequence.
Good tests compare against a trusted reference, use small shapes, and fail loudly when wrong.
Simple is better than complex. Complex is better than complicated. Readability counts.
Errors should never pass silently, unless explicitly silenced.
"""


def train_tokenizer(vocab_size: int = 512, text: str = CORPUS, llama: bool = False):
    """A byte-level BPE tokenizer (GPT-2 style) wrapped for transformers, trained offline.

    llama: LLaMA's special tokens instead (`<unk>` 0, `<s>` 1, `</s>` 2, as LlamaConfig's
    defaults say) and `<s>` put before every text, as LLaMA tokenizers do.
    """
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    if llama:
        return _llama_tokenizer(vocab_size, text)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=EOS
    )


def _llama_tokenizer(vocab_size: int, text: str):
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(text.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


def random_params(module, seed: int = 0, init_std: float = 0.02) -> dict:
    """Random parameters for `module` (numpy, float32): N(0, std) weights and biases,
    1 + N(0, std) LayerNorm scales; deterministic in `seed`, independent of JAX's PRNG."""
    shapes = {"params": registry.param_shapes(module)}
    flat = jax.tree_util.tree_flatten_with_path(shapes["params"])[0]
    rng = np.random.default_rng(seed)
    leaves = []
    for path, s in flat:
        x = rng.normal(0.0, init_std, s.shape).astype(np.float32)
        if path[-1].key == "scale":
            x = x + np.float32(1.0)
        leaves.append(x)
    treedef = jax.tree_util.tree_structure(shapes["params"])
    return jax.tree_util.tree_unflatten(treedef, leaves)


def make_tiny_gpt2(
    folder,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    vocab_size: int = 512,
    n_positions: int = 128,
    seed: int = 0,
    init_std: float = 0.02,
    tokenizer: bool = True,
) -> Path:
    """Write a random GPT-2 checkpoint folder loadable by `pcformer.models.load` and by
    `transformers.GPT2LMHeadModel.from_pretrained` / `AutoTokenizer.from_pretrained`."""
    import transformers

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eos_id = 0  # the one special token is trained first
    hf_config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, bos_token_id=eos_id, eos_token_id=eos_id,
        architectures=["GPT2LMHeadModel"],
    )
    hf_config.save_pretrained(str(folder))
    if tokenizer:
        tok = train_tokenizer(vocab_size)
        assert tok.convert_tokens_to_ids(EOS) == eos_id
        tok.model_max_length = n_positions
        tok.save_pretrained(str(folder))
    module = gpt2.GPT2LMHeadModel(gpt2.GPT2Config.from_hf(hf_config))
    params = random_params(module, seed, init_std)
    checkpoint.write_state(folder, checkpoint.state_from_params(params, "gpt2"))
    return folder


def make_tiny_bert(
    folder,
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    vocab_size: int = 128,
    max_position_embeddings: int = 64,
    seed: int = 0,
    init_std: float = 0.02,
) -> Path:
    """Write a random `BertModel` checkpoint folder (no tokenizer) for fast tests."""
    import transformers

    folder = Path(folder)
    hf_config = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings, architectures=["BertModel"],
    )
    folder.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(folder))
    module = bert.BertModel(bert.BertConfig.from_hf(hf_config))
    params = random_params(module, seed, init_std)
    checkpoint.write_state(folder, checkpoint.state_from_params(params, "bert"))
    return folder


def make_tiny_llama(
    folder,
    num_hidden_layers: int = 2,
    hidden_size: int = 64,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    max_position_embeddings: int = 128,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    init_std: float = 0.02,
    tokenizer: bool = True,
    architecture: str = "LlamaForCausalLM",
) -> Path:
    """Write a random LLaMA checkpoint folder (grouped-query attention by default) loadable by
    `pcformer.models.load` and by `transformers.LlamaForCausalLM.from_pretrained`."""
    import transformers

    from . import llama

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings, bos_token_id=1, eos_token_id=2,
        architectures=[architecture],
    )
    hf_config.save_pretrained(str(folder))
    if tokenizer:
        tok = train_tokenizer(vocab_size, llama=True)
        assert tok.convert_tokens_to_ids("</s>") == 2
        tok.model_max_length = max_position_embeddings
        tok.save_pretrained(str(folder))
    module = registry.build_module("llama", llama.LlamaConfig.from_hf(hf_config), (architecture,))
    params = random_params(module, seed, init_std)
    checkpoint.write_state(folder, checkpoint.state_from_params(params, "llama"))
    return folder


def make_tiny_vit(
    folder,
    num_hidden_layers: int = 2,
    hidden_size: int = 32,
    num_attention_heads: int = 4,
    intermediate_size: int = 64,
    image_size: int = 16,
    patch_size: int = 4,
    num_channels: int = 3,
    num_labels: int = 0,
    seed: int = 0,
    init_std: float = 0.02,
) -> Path:
    """Write a random ViT checkpoint folder: `ViTForImageClassification` if `num_labels`,
    else `ViTModel` with its pooler (as transformers builds it by default)."""
    import transformers

    from . import vit

    folder = Path(folder)
    arch = "ViTForImageClassification" if num_labels else "ViTModel"
    hf_config = transformers.ViTConfig(
        hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        image_size=image_size, patch_size=patch_size, num_channels=num_channels,
        num_labels=max(num_labels, 2), architectures=[arch],
    )
    folder.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(str(folder))
    config = vit.ViTConfig.from_hf(hf_config, add_pooling_layer=not num_labels)
    module = registry.build_module("vit", config, (arch,))
    params = random_params(module, seed, init_std)
    checkpoint.write_state(folder, checkpoint.state_from_params(params, "vit"))
    return folder
