"""An offline English corpus for distillation, built from the Python standard library's docstrings.

Why: distillation needs real English sentences, and pcformer may not download anything at run
time. The docstrings of the standard library are real, varied English prose that every Python
installation carries; split into sentences, cleaned and deduplicated they give a few thousand
training examples, the same on every machine with the same Python version.

Public functions:
- `stdlib_sentences(config)`: the cleaned, deduplicated, sorted sentences.
- `load_corpus(n_train, n_heldout, seed)`: a fixed train/held-out split of them.
- `read_texts(data)`: user data as a list of strings (a list, or a text file with one example a line).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import re
import warnings

import numpy as np


@dataclasses.dataclass(frozen=True)
class CorpusConfig:
    """How sentences are picked out of docstrings. Every default is the one `load_corpus` uses."""

    modules: tuple[str, ...] = (
        "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar",
        "cmath", "codecs", "collections", "colorsys", "concurrent.futures", "configparser",
        "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
        "email", "enum", "filecmp", "fnmatch", "fractions", "ftplib", "functools", "gettext",
        "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
        "http.cookies", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale",
        "logging", "lzma", "mailbox", "math", "mimetypes", "numbers", "operator", "optparse",
        "os", "pathlib", "pickle", "pkgutil", "plistlib", "poplib", "pprint", "queue", "quopri",
        "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
        "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess",
        "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
        "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings",
        "wave", "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
    )
    min_words: int = 8
    max_words: int = 40
    max_members: int = 400  # per module: bounds the walk over big modules


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
        except Exception:  # a module missing on this platform is simply left out
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
    """Prose paragraphs of a docstring, lines joined; indented (code, tables) paragraphs dropped."""
    out = []
    for para in re.split(r"\n\s*\n", doc):
        lines = para.split("\n")
        if any(line.startswith((" ", "\t")) for line in lines):
            continue
        out.append(" ".join(line.strip() for line in lines))
    return out


def clean_sentence(sentence: str, min_words: int = 8, max_words: int = 40) -> str | None:
    """The sentence, whitespace-normalised, or None if it is not plain English prose."""
    s = " ".join(sentence.split())
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
    """Cleaned, deduplicated, sorted English sentences from standard-library docstrings."""
    found = set()
    for name in config.modules:
        for doc in _docstrings(name, config.max_members):
            for para in _paragraphs(doc):
                for sent in _SENTENCE_END.split(para):
                    cleaned = clean_sentence(sent, config.min_words, config.max_words)
                    if cleaned is not None:
                        found.add(cleaned)
    return sorted(found)


def split(texts: list[str], n_train: int, n_heldout: int, seed: int) -> tuple[list[str], list[str]]:
    """A deterministic train/held-out split: sorted, shuffled with `seed`, held-out taken first."""
    texts = sorted(set(texts))
    if n_train + n_heldout > len(texts):
        raise ValueError(f"asked for {n_train} + {n_heldout} examples but only {len(texts)} exist")
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = [texts[i] for i in order]
    return shuffled[n_heldout:n_heldout + n_train], shuffled[:n_heldout]


def load_corpus(n_train: int = 2000, n_heldout: int = 200, seed: int = 0,
                config: CorpusConfig = CorpusConfig()) -> tuple[list[str], list[str]]:
    """(train, held_out) lists of English sentences from the standard library, fixed by `seed`."""
    return split(stdlib_sentences(config), n_train, n_heldout, seed)


def read_texts(data) -> list[str]:
    """User data as a list of non-empty strings: a list/tuple of strings, or a path to a text file
    with one example a line, or the word "stdlib" for the built-in corpus (its training part)."""
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
