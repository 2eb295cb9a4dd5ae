"""A broad offline English corpus for distillation: WordNet 3.0's sentences mixed with the
standard library's docstrings, split by topic so that fidelity is measured on unseen domains.

Why: a student distilled on docstrings alone matches the exact model on docstrings (mean cosine
0.98) but not on everyday English (0.93, issue 22). WordNet's glosses and example sentences cover
every topic of the language, and each comes filed under one of WordNet's 45 lexicographer files
(noun.food, verb.motion, ...), which serve as domains: training uses some, and the out-of-domain
evaluation set is drawn only from the others, so it measures generalisation, not memorisation.

Data: `pcformer/data/wordnet_sentences.jsonl.gz` (3.3 MB; 139,735 sentences: 28,900 example
sentences and 110,835 glosses made into sentences, in 45 domains), built by
`tools/build_english_corpus.py` from Debian's `wordnet-base` (WordNet 3.0); WordNet's licence
(redistribution permitted with its notice) is `pcformer/data/WORDNET_LICENSE`. Nothing is
downloaded at run time. See docs/distillation.md.

The split (`english_split(SplitConfig())`, fixed by its seed):
- out of domain: `SplitConfig.eval_domains` (everyday topics: cooking = noun.food and
  verb.consumption, travel = noun.location and verb.motion, news = noun.communication and
  verb.communication, work and money = noun.possession and verb.possession); none of their
  sentences is trained on; `n_out_domain` of them, taken in turn from each (domain, kind) pool,
  so every domain and example sentences as much as glosses are represented.
- in domain: `n_in_domain` held-out sentences, half docstrings, half WordNet sentences of the
  training domains.
- train: docstrings and WordNet sentences of the other 37 domains (example sentences and glosses
  in turn), minus both held-out sets.
Every text appears in one split only (compared case-insensitively).

Public: `wordnet_rows()`, `SplitConfig`, `EnglishSplit`, `make_split(docstrings, rows, config)`,
`english_split(config)`, `EVAL_DOMAINS`, `LICENSE_FILE`, `DATA_FILE`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import os

import numpy as np

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
DATA_FILE = os.path.join(DATA_DIR, "wordnet_sentences.jsonl.gz")
LICENSE_FILE = os.path.join(DATA_DIR, "WORDNET_LICENSE")

EVAL_DOMAINS = ("noun.food", "verb.consumption",            # cooking and eating
                "noun.location", "verb.motion",             # travel
                "noun.communication", "verb.communication",  # news, talk, writing
                "noun.possession", "verb.possession")       # work, money, trade


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Which sentences train and which evaluate. Sizes: why 3,000 docstrings + 6,000 WordNet
    sentences for training: the teacher's outputs for 9,000 MiniLM examples at 32 tokens
    (float16) take 2.9 GB, under DistillConfig.teacher_cache_mb, so a run caches them; and the
    default runs (2,000 steps of 16) see each example about 3.5 times, where the 6,2xx docstrings
    alone did not overfit."""

    seed: int = 0
    eval_domains: tuple[str, ...] = EVAL_DOMAINS
    n_out_domain: int = 200         # out-of-domain held-out sentences (>= 100: issue 22)
    n_in_domain: int = 200          # in-domain held-out: half docstrings, half WordNet
    n_docstring_train: int | None = 3000   # None: every docstring not held out
    n_wordnet_train: int | None = 6000     # None: every WordNet sentence of a training domain
    kinds: tuple[str, ...] = ("example", "gloss")  # which WordNet sentences take part
    eval_min_words: int = 6         # held-out sentences have at least this many words

    def __post_init__(self):
        object.__setattr__(self, "eval_domains", tuple(self.eval_domains))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        if self.n_out_domain < 0 or self.n_in_domain < 0:
            raise ValueError("held-out sizes must be >= 0")


@dataclasses.dataclass(frozen=True)
class EnglishSplit:
    """Three disjoint tuples of sentences (and the config that made them)."""

    train: tuple[str, ...]
    in_domain: tuple[str, ...]
    out_of_domain: tuple[str, ...]
    config: SplitConfig

    def eval_sets(self) -> dict[str, tuple[str, ...]]:
        return {"in_domain": self.in_domain, "out_of_domain": self.out_of_domain}


@functools.lru_cache(maxsize=1)
def wordnet_rows() -> tuple[tuple[str, str, str], ...]:
    """Every (domain, kind, text) of the shipped WordNet corpus, in the file's (sorted) order."""
    with gzip.open(DATA_FILE, "rt", encoding="utf-8") as f:
        return tuple((r["domain"], r["kind"], r["text"]) for r in map(json.loads, f))


def _shuffled(texts, seed, *salt) -> list[str]:
    """Sorted unique texts in an order fixed by (seed, salt)."""
    texts = sorted(set(texts))
    order = np.random.default_rng([seed, *salt]).permutation(len(texts))
    return [texts[i] for i in order]


def _take(pool: list[str], n: int | None, used: set[str]) -> list[str]:
    """The first n texts of `pool` whose lower-case form is not in `used` (which grows)."""
    out = []
    for t in pool:
        if n is not None and len(out) >= n:
            break
        if t.lower() not in used:
            used.add(t.lower())
            out.append(t)
    return out


def _round_robin(pools: list[list[str]], n: int | None, used: set[str]) -> list[str]:
    """n texts (None: all), one from each pool in turn (a pool that runs dry drops out), none in
    `used` (which grows)."""
    n = sum(map(len, pools)) if n is None else n
    out, cursors = [], [0] * len(pools)
    while len(out) < n and any(c < len(p) for c, p in zip(cursors, pools)):
        for k, pool in enumerate(pools):
            while cursors[k] < len(pool) and pool[cursors[k]].lower() in used:
                cursors[k] += 1
            if cursors[k] < len(pool) and len(out) < n:
                used.add(pool[cursors[k]].lower())
                out.append(pool[cursors[k]])
                cursors[k] += 1
    return out


def make_split(docstrings, rows, config: SplitConfig = SplitConfig()) -> EnglishSplit:
    """The split of `docstrings` (sentences) and WordNet `rows` ((domain, kind, text)) that
    `config` describes; a pure function of its arguments."""
    held = set(config.eval_domains)
    rows = [r for r in rows if r[1] in config.kinds]
    long_enough = lambda t: len(t.split()) >= config.eval_min_words  # noqa: E731
    used: set[str] = set()
    # one pool per (domain, kind), taken in turn: every held-out domain, and example sentences
    # as much as glosses (there are four times more glosses)
    keys = sorted({(d, k) for d, k, _ in rows if d in held})
    pools = [_shuffled([t for d, k, t in rows if (d, k) == key and long_enough(t)],
                       config.seed, 1, i) for i, key in enumerate(keys)]
    out_domain = _round_robin(pools, config.n_out_domain, used)
    if len(out_domain) < config.n_out_domain:
        raise ValueError(f"only {len(out_domain)} out-of-domain sentences, "
                         f"{config.n_out_domain} asked for")
    used |= {t.lower() for d, _, t in rows if d in held}  # no held-out domain sentence trains
    kinds = sorted({k for d, k, _ in rows if d not in held})
    wn_pools = [_shuffled([t for d, k, t in rows if k == kind and d not in held], config.seed, 2, i)
                for i, kind in enumerate(kinds)]
    doc_pool = _shuffled(docstrings, config.seed, 3)
    n_doc_eval = config.n_in_domain // 2 if doc_pool else 0
    in_domain = (_take([t for t in doc_pool if long_enough(t)], n_doc_eval, used)
                 + _round_robin([[t for t in p if long_enough(t)] for p in wn_pools],
                                config.n_in_domain - n_doc_eval, used))
    train = (_take(doc_pool, config.n_docstring_train, used)
             + _round_robin(wn_pools, config.n_wordnet_train, used))
    train = [train[i] for i in np.random.default_rng([config.seed, 4]).permutation(len(train))]
    return EnglishSplit(train=tuple(train), in_domain=tuple(in_domain),
                        out_of_domain=tuple(out_domain), config=config)


@functools.lru_cache(maxsize=4)
def english_split(config: SplitConfig = SplitConfig()) -> EnglishSplit:
    """The split of the standard library's docstrings and the shipped WordNet sentences (the
    docstrings are read once per process: importing the standard library takes seconds)."""
    from pcformer import corpus
    docs = corpus.stdlib_sentences() if config.n_docstring_train != 0 else []
    return make_split(docs, wordnet_rows(), config)


def read_texts(data) -> list[str]:
    """As `pcformer.corpus.read_texts` (a list, a text file, "stdlib"), and "english": the
    training part of the docstring + WordNet split above."""
    if isinstance(data, (str, os.PathLike)) and str(data) == "english":
        return list(english_split().train)
    from pcformer import corpus
    return corpus.read_texts(data)
