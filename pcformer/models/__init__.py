"""pcformer.models: Flax BERT and GPT-2 that load Hugging Face checkpoint folders.

    m = pcformer.models.load("minilm")       # named default, or any HF folder (BERT or GPT-2)
    m.apply(input_ids, attention_mask)       # BERT: last hidden state; GPT-2: logits
    m.encode(["a sentence"])                 # BERT: L2-normalised sentence embeddings (numpy)
    m.generate("a prompt", max_new_tokens=8) # GPT-2: greedy continuation (text)
    pcformer.models.save(m, folder)          # the same HF layout back
"""

from .checkpoint import CheckpointError
from .loaded import NAMED, LoadedModel, load, minilm_folder, save
from .tiny import make_tiny_bert, make_tiny_gpt2

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "NAMED",
    "load",
    "make_tiny_bert",
    "make_tiny_gpt2",
    "minilm_folder",
    "save",
]
