"""An offline English corpus for distillation, built from the Python standard library's docstrings.

Why: distillation needs real English sentences, and pcformer may not download anything at run
time. The docstrings of the standard library (every top-level module and the direct submodules of
its packages) and the language reference's topics that pydoc shows are real, varied English prose
that every Python installation carries; split into sentences, cleaned and deduplicated they give
about six thousand examples (6,2xx on CPython 3.11), the same on every machine with the same
Python version. Why so many: with a couple of thousand, distillation overfits its training
sentences within a few epochs (held-out loss five times the training loss).

Public functions:
- `stdlib_sentences(config)`: the cleaned, deduplicated, sorted sentences.
- `load_corpus(n_train, n_heldout, seed)`: a fixed train/held-out split of them.
- `read_texts(data)`: user data as a list of strings (a list, or a text file with one example a line,
  or "stdlib"; `pcformer.corpus_english.read_texts` also takes "english").
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import sys
import textwrap
import warnings

import numpy as np


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """How sentences are picked out of docstrings. Every default is the one `load_corpus` uses."""

    modules: tuple[str, ...] = ()   # empty: every top-level module of sys.stdlib_module_names
                                    # that imports here, except those in `skip`
    skip: tuple[str, ...] = (       # side effects on import (a browser, a poem, a window) or tests
        "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "ensurepip",
        "venv", "lib2to3", "pydoc_data", "readline", "rlcompleter",
    )
    reference_manual: bool = True   # also the language reference's prose (pydoc_data.topics)
    min_words: int = 6
    max_words: int = 40
    max_members: int = 400  # per module: bounds the walk over big modules


def stdlib_module_names(config: CorpusConfig) -> tuple[str, ...]:
    """The modules whose docstrings are read, sorted: `config.modules`, or the standard library's
    top-level modules and, for packages, their direct submodules (email.message, http.client...)."""
    if config.modules:
        return tuple(config.modules)
    names = []
    for name in sorted(sys.stdlib_module_names):
        if name.startswith("_") or name in config.skip:
            continue
        names.append(name)
        spec = importlib.util.find_spec(name) if _importable(name) else None
        if spec is not None and spec.submodule_search_locations:
            names += sorted(f"{name}.{info.name}"
                            for info in pkgutil.iter_modules(spec.submodule_search_locations)
                            if not info.name.startswith("_") and info.name not in ("test", "tests"))
    return tuple(names)


def _importable(name: str) -> bool:
    """Whether a top-level module exists on this platform (find_spec raises for some)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _reference_manual() -> list[str]:
    """The language reference's topics as pydoc shows them, or nothing where a distribution left
    pydoc_data out."""
    try:
        from pydoc_data import topics
    except ImportError:
        return []
    return [topics.topics[k] for k in sorted(topics.topics)]


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_CODE_HINTS = re.compile(
    r"(>>>|\.\.\.|::|\w\(|[{}\[\]<>=`|\\_@#$%^~*]|\(\)|\w\.\w+\(|\w_\w|--|https?:|\bdef\b|\bNone\b|\bTrue\b"
    r"|\bFalse\b|\bself\b|\bcls\b|\breturn\b|\bargs\b|\bkwargs\b|[a-z][A-Z])")


def _docstrings(module_name: str, max_members: int) -> list[str]:
    """The docstrings of a module and of its public members (classes, functions, methods)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases (typing.io) warn on access
        try:
            module = importlib.import_module(module_name)
        except (Exception, SystemExit):  # missing on this platform: left out
            return []
        return _member_docs(module, max_members)


def _member_docs(module, max_members: int) -> list[str]:
    docs = [inspect.getdoc(module) or ""]
    members = sorted(
        (name, obj) for name, obj in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj)
                                        or inspect.isbuiltin(obj)))
    for _, obj in members[:max_members]:
        docs.append(inspect.getdoc(obj) or "")
        if inspect.isclass(obj):
            for attr, meth in sorted(vars(obj).items()):
                if not attr.startswith("_") and callable(meth):
                    docs.append(inspect.getdoc(meth) or "")
    return docs


def _paragraphs(doc: str) -> list[str]:
    """Paragraphs of a docstring, lines joined. A paragraph indented as a whole (a method's
    description under its signature in the language reference) is dedented; a bullet ("* text",
    continuation lines aligned under the text) counts as prose; a paragraph with any other
    indented line (a table, a signature list, nested code) is dropped. Code blocks that survive as
    paragraphs are rejected sentence by sentence (`clean_sentence`)."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = textwrap.dedent(para).split("\n")
        first = lines[0].lstrip()
        if first.startswith(("* ", "- ")):
            pad = " " * (len(lines[0]) - len(first) + 2)
            lines = [first[2:]] + [line[len(pad):] if line.startswith(pad) else line
                                   for line in lines[1:]]
        if any(line.startswith((" ", "\t")) for line in lines):
            continue
        out.append(" ".join(line.strip() for line in lines))
    return out


_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2013": "-", "\u2014": "-", "\u00a0": " "})
_EMPHASIS = re.compile(r"\*{1,2}([A-Za-z][A-Za-z0-9 '-]*?)\*{1,2}")  # *word*, **PEP 8**


def clean_sentence(sentence: str, min_words: int = 6, max_words: int = 40) -> str | None:
    """The sentence, whitespace-normalised, or None if it is not plain English prose."""
    s = " ".join(_EMPHASIS.sub(r"\1", sentence.translate(_TYPOGRAPHY)).split())
    if not s or not s[0].isupper() or s[-1] not in ".!?":
        return None
    if not s.isascii() or _CODE_HINTS.search(s):
        return None
    words = s.split()
    if not min_words <= len(words) <= max_words:
        return None
    letters = sum(ch.isalpha() or ch == " " for ch in s)
    if letters < 0.9 * len(s):
        return None
    return s


def stdlib_sentences(config: CorpusConfig = CorpusConfig()) -> list[str]:
    """Cleaned, deduplicated, sorted English sentences from standard-library docstrings (and the
    language reference, when `config.reference_manual`)."""
    docs = [doc for name in stdlib_module_names(config)
            for doc in _docstrings(name, config.max_members)]
    if config.reference_manual:
        docs += _reference_manual()
    found = set()
    for doc in docs:
        for para in _paragraphs(doc):
            for sent in _SENTENCE_END.split(para):
                cleaned = clean_sentence(sent, config.min_words, config.max_words)
                if cleaned is not None:
                    found.add(cleaned)
    return sorted(found)


def split(texts: list[str], n_train: int | None, n_heldout: int,
          seed: int) -> tuple[list[str], list[str]]:
    """A deterministic train/held-out split: sorted, shuffled with `seed`, held-out taken first;
    n_train None: every example that is not held out."""
    texts = sorted(set(texts))
    if n_train is None:
        n_train = len(texts) - n_heldout
    if n_train + n_heldout > len(texts):
        raise ValueError(f"asked for {n_train} + {n_heldout} examples but only {len(texts)} exist")
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    return shuffled[n_heldout:n_heldout + n_train], shuffled[:n_heldout]


def load_corpus(n_train: int | None = 2000, n_heldout: int = 200, seed: int = 0,
                config: CorpusConfig = CorpusConfig()) -> tuple[list[str], list[str]]:
    """(train, held_out) lists of English sentences from the standard library, fixed by `seed`."""
    return split(stdlib_sentences(config), n_train, n_heldout, seed)


def read_texts(data) -> list[str]:
    """User data as a list of non-empty strings: a list/tuple of strings, or a path to a text file
    with one example a line, or the word "stdlib" for the built-in docstring corpus
    (`pcformer.corpus_english.read_texts` also takes "english")."""
    if isinstance(data, (list, tuple)):
        texts = [str(t).strip() for t in data]
    elif isinstance(data, (str, os.PathLike)) and str(data) == "stdlib":
        texts = stdlib_sentences()
    elif isinstance(data, (str, os.PathLike)):
        with open(data, encoding="utf-8") as f:
            texts = [line.strip() for line in f]
    else:
        raise TypeError(f"data must be a list of strings or a path, got {type(data).__name__}")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("no non-empty examples in the data")
    return texts
