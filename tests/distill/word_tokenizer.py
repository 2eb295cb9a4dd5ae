"""A hashing word tokenizer for the distillation tests: no tokenizer files, the Hugging Face call
signature that `distill.tokenize` uses."""
from __future__ import annotations

import hashlib

import numpy as np


class WordTokenizer:
    """Hash words to ids 2..vocab_size-1 (1 opens every example, 0 pads)."""

    pad_token = "[PAD]"

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __call__(self, texts, padding, truncation, max_length, return_tensors):
        ids = np.zeros((len(texts), max_length), np.int32)
        mask = np.zeros_like(ids)
        for i, text in enumerate(texts):
            toks = [1] + [2 + int(hashlib.md5(w.encode()).hexdigest(), 16) % (self.vocab_size - 2)
                          for w in text.lower().split()]
            toks = toks[:max_length]
            ids[i, :len(toks)] = toks
            mask[i, :len(toks)] = 1
        return {"input_ids": ids, "attention_mask": mask}
