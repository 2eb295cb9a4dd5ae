"""pcformer.models: Flax BERT, GPT-2, LLaMA and ViT that load Hugging Face checkpoint folders.

    m = pcformer.models.load("minilm")       # named default, or any HF folder (bert/gpt2/llama/vit)
    m.apply(input_ids, attention_mask)       # BERT: last hidden state; GPT-2/LLaMA: logits
    m.apply(pixel_values)                    # ViT: last hidden state (or class logits)
    m.encode(["a sentence"])                 # BERT: L2-normalised sentence embeddings (numpy)
    m.generate("a prompt", max_new_tokens=8) # GPT-2/LLaMA: greedy continuation (text)
    pcformer.models.save(m, folder)          # the same HF layout back
    pcformer.models.abstract(config, seq_len)  # fn + parameter/input shapes, no weights
"""

from .checkpoint import CheckpointError
from .loaded import NAMED, LoadedModel, load, minilm_folder, resolve, save
from .registry import AbstractModel, abstract
from .tiny import make_tiny_bert, make_tiny_gpt2, make_tiny_llama, make_tiny_vit

__all__ = [
    "AbstractModel",
    "CheckpointError",
    "LoadedModel",
    "NAMED",
    "abstract",
    "load",
    "make_tiny_bert",
    "make_tiny_gpt2",
    "make_tiny_llama",
    "make_tiny_vit",
    "minilm_folder",
    "resolve",
    "save",
]
