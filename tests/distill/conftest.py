"""Fixtures of the distillation floor."""
import dataclasses

import pytest

from pcformer import corpus
from word_tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def texts():
    """The docstring corpus: 96 training and 16 held-out sentences."""
    return corpus.load_corpus(n_train=96, n_heldout=16, seed=0)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, request):
    """A 2-layer tiny BERT (hidden 32, vocabulary 128) with the hashing word tokenizer; a test
    module's TOKENIZER_VOCAB (default 128) bounds the ids the tokenizer gives."""
    models = pytest.importorskip("pcformer.models")
    folder = models.make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), num_hidden_layers=2,
                                   hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                   vocab_size=128, init_std=0.2)
    vocab = getattr(request.module, "TOKENIZER_VOCAB", 128)
    return dataclasses.replace(models.load(folder), tokenizer=WordTokenizer(vocab_size=vocab))
