"""Where things are in a BERT parameter tree (and its captured intermediates): the feed-forward
blocks, the self-attention blocks and the embedding tables, found by their Hugging Face names.

Why here: this is knowledge of the models' layouts (pcformer/models/bert.py names them), and the
distillation's calibrated start (pcformer/distill/calibration.py) only asks for it.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

# Embedding tables of the models pcformer loads (BERT's three, GPT-2's two).
EMBEDDING_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings", "wte",
                    "wpe")


def find_blocks(tree, is_block: Callable[[Mapping], bool], path=()) -> list[tuple]:
    """Paths of every sub-dict of a parameter tree for which `is_block` holds, in the order they
    appear (shorter keys first, so layer_2 comes before layer_10)."""
    found = []
    if isinstance(tree, Mapping):
        if is_block(tree):
            found.append(path)
        for k in sorted(tree, key=lambda k: (len(str(k)), str(k))):
            found.extend(find_blocks(tree[k], is_block, path + (k,)))
    return found


def is_mlp(tree) -> bool:
    """A BERT feed-forward block: 'intermediate/dense' and 'output'."""
    return "intermediate" in tree and "output" in tree and "dense" in tree["intermediate"]


def is_attention(tree) -> bool:
    """A BERT self-attention block: 'query' and 'key' Dense layers."""
    return "query" in tree and "key" in tree and "kernel" in tree["query"]


def at(tree, path) -> Any:
    """The sub-tree at `path` (a tuple of keys)."""
    for k in path:
        tree = tree[k]
    return tree


def mlp_denses(block) -> tuple[dict, dict]:
    """The two Dense layers around a feed-forward block's GeLU: (in, out)."""
    return block["intermediate"]["dense"], block["output"]["dense"]


def mlp_pre_activation(intermediates, path):
    """The GeLU's input in a feed-forward block, from `capture_intermediates=True` output."""
    return at(intermediates, path)["intermediate"]["dense"]["__call__"][0]
