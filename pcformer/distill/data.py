"""Distillation data: tokenising, the train / held-out split, and the batches of each step
(seeded epochs within length buckets, so a resumed run sees the batches it would have seen).

The corpora themselves stay in pcformer/corpus.py and pcformer/corpus_english.py.
"""
from __future__ import annotations

import copy
from typing import Sequence

import jax
import numpy as np

from pcformer import corpus, corpus_english

from .config import DistillConfig, DistillError


def tokenize(tokenizer, texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask [N, seq_len] (int32), right-padded and truncated."""
    if getattr(tokenizer, "pad_token", "") is None:  # GPT-2 has no pad token: pad with EOS
        tokenizer = copy.copy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="np")
    return (np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32))


def bucket_bounds(cfg: DistillConfig) -> tuple[int, ...]:
    """The padded lengths training batches may have: cfg.length_buckets below seq_len, then
    seq_len itself, ascending."""
    return tuple(sorted({b for b in cfg.length_buckets if b < cfg.seq_len})) + (cfg.seq_len,)


def _epoch_batches(lengths: np.ndarray, batch_size: int, epoch: int, seed: int,
                   bounds: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """One epoch's batches (examples, padded length), in training order. Each example goes to
    the shortest bucket that holds its tokens; a bucket's leftover examples (less than a batch)
    move up to the next bucket; the last bucket's partial batch is filled from its start."""
    perm = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    bucket = np.searchsorted(np.asarray(bounds), lengths[perm])    # smallest bound >= length
    batches, carry = [], perm[:0]
    for k, bound in enumerate(bounds):
        pool = np.concatenate([carry, perm[bucket == k]])
        full = len(pool) // batch_size
        batches += [(pool[i * batch_size:(i + 1) * batch_size], bound) for i in range(full)]
        carry = pool[full * batch_size:]
        if k == len(bounds) - 1 and len(carry):
            batches.append((np.resize(np.concatenate([carry, pool]), batch_size), bound))
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[i] for i in order]


def batch_plan(lengths: np.ndarray, batch_size: int, step: int, seed: int,
               bounds: Sequence[int]) -> tuple[np.ndarray, int]:
    """The examples of training step `step` and the length to pad them to: epochs of a seeded
    permutation, batched within length buckets (`_epoch_batches`). A pure function of its
    arguments, so a resumed run sees exactly the batches it would have seen. Why buckets: the
    corpus's sentences average 19 tokens of 32, so batches of short ones cut to 16 tokens spend
    half the compute on padding instead of two thirds."""
    lengths = np.asarray(lengths)
    per_epoch = len(_epoch_batches(lengths, batch_size, 0, seed, bounds))  # same every epoch
    epoch, index = divmod(step, per_epoch)
    idx, length = _epoch_batches(lengths, batch_size, epoch, seed, bounds)[index]
    return idx.astype(np.int64), int(length)


def cut_features(features: dict, length: int) -> dict:
    """Features computed at a longer padded length, cut to `length` tokens. Exact for right
    padding: pad keys are masked out of attention, so real tokens never see them."""
    out = features["out"]
    return {"hidden": tuple(h[:, :length] for h in features["hidden"]),
            "attn": tuple(a[..., :length, :length] for a in features["attn"]),
            "out": out[:, :length] if out.ndim == 3 else out}


def fitting_held_out(n_examples: int, wanted: int) -> int:
    """Held-out examples for a data set of `n_examples` distinct ones: `wanted` when at least as
    many remain for training, else a fifth (at least one) - a user's small file just works."""
    if n_examples < 2:
        raise DistillError(f"{n_examples} distinct example(s): distillation needs at least 2 "
                        f"(one to train on, one held out)")
    return wanted if n_examples >= 2 * wanted else max(1, n_examples // 5)


def split_data(data, held_out, cfg: DistillConfig):
    """(training texts, held-out texts): `held_out` when given, else cfg.held_out distinct
    examples split off `data` with the seed (at least one: every run is evaluated)."""
    texts = corpus_english.read_texts(data)
    if held_out is not None:
        return texts, corpus_english.read_texts(held_out)
    if cfg.held_out < 1:
        raise DistillError(f"held_out={cfg.held_out}: at least 1 example must be held out")
    if len(set(texts)) <= cfg.held_out:
        raise DistillError(f"{len(set(texts))} distinct examples cannot give {cfg.held_out} held-out "
                        f"ones (--held_out={fitting_held_out(len(set(texts)), cfg.held_out)} would fit)")
    return corpus.split(texts, len(set(texts)) - cfg.held_out, cfg.held_out, cfg.seed)


def map_batches(fn, n: int, batch_size: int):
    """fn(example indices) over `n` examples in batches of one shape (the last padded by
    wrapping, so a jitted fn compiles once), its outputs (any tree of per-example arrays) cut to
    the real examples and concatenated in example order, as host arrays."""
    parts = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n
        keep = min(batch_size, n - start)
        parts.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:keep], fn(idx)))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
