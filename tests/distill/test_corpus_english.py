"""The shipped WordNet corpus and the fixed docstring + WordNet split (pcformer.corpus_english)."""

from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os

import pytest

from pcformer import corpus_english as E

NO_DOCS = E.SplitConfig(n_docstring_train=0)  # WordNet only: no import of the standard library


def test_data_file_is_shipped_with_its_licence_and_is_clean():
    rows = E.wordnet_rows()
    assert os.path.getsize(E.DATA_FILE) < 5 * 2 ** 20          # "a few MB"
    licence = open(E.LICENSE_FILE, encoding="utf-8").read()
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in licence
    assert len(rows) > 100_000
    kinds = collections.Counter(k for _, k, _ in rows)
    assert set(kinds) == {"example", "gloss"} and kinds["example"] > 20_000
    domains = {d for d, _, _ in rows}
    assert set(E.EVAL_DOMAINS) <= domains and len(domains) == 45
    texts = [t for _, _, t in rows]
    assert len({t.lower() for t in texts}) == len(texts)      # deduplicated
    for t in texts[::97]:
        assert t.isascii() and t[0].isupper() and t[-1] in ".!?" and 5 <= len(t.split()) <= 40


def test_build_script_reproduces_the_shipped_file(tmp_path):
    """Only where WordNet's database is installed (Debian: apt-get install wordnet-base)."""
    if not os.path.exists("/usr/share/wordnet/data.noun"):
        pytest.skip("WordNet's database files are not installed here")
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "build_english_corpus.py")
    spec = importlib.util.spec_from_file_location("build_english_corpus", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    out = tmp_path / "w.jsonl.gz"
    assert build.main(["--out", str(out)]) == 0
    assert out.read_bytes() == open(E.DATA_FILE, "rb").read()


def test_gloss_sentences_read_as_english():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "build_english_corpus.py")
    spec = importlib.util.spec_from_file_location("build_english_corpus", path)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    line = ('01168569 34 v 01 eat 0 001 @ 01157517 v 0000 01 + 08 00 | take in solid food; '
            '"She was eating a banana"; "What did you eat for dinner last night?"  \n')
    domain, pos, lemma, definition, examples = build.parse_line(line)
    assert (domain, pos, lemma) == ("verb.consumption", "v", "eat")
    assert build.gloss_sentence(pos, lemma, definition) == "To eat is to take in solid food."
    assert [build.finish(e) for e in examples] == ["She was eating a banana.",
                                                   "What did you eat for dinner last night?"]


def test_split_is_disjoint_sized_and_deterministic():
    split = E.english_split(NO_DOCS)
    assert len(split.out_of_domain) == 200 and len(split.in_domain) == 200
    assert len(split.train) == 6000
    low = [{t.lower() for t in part} for part in (split.train, split.in_domain,
                                                 split.out_of_domain)]
    assert sum(map(len, low)) == len(set().union(*low))        # no text in two splits
    again = E.make_split([], E.wordnet_rows(), NO_DOCS)
    assert again == split
    other = E.make_split([], E.wordnet_rows(), dataclasses.replace(NO_DOCS, seed=1))
    assert other.out_of_domain != split.out_of_domain


def test_out_of_domain_sentences_come_only_from_held_out_domains():
    split = E.english_split(NO_DOCS)
    domain = {t: d for d, _, t in E.wordnet_rows()}
    kind = {t: k for _, k, t in E.wordnet_rows()}
    ood = [domain[t] for t in split.out_of_domain]
    assert set(ood) == set(E.EVAL_DOMAINS)                     # every held-out domain appears
    assert not {domain[t] for t in split.train + split.in_domain} & set(E.EVAL_DOMAINS)
    counts = collections.Counter(kind[t] for t in split.out_of_domain)
    assert counts["example"] >= 80 and counts["gloss"] >= 80   # taken in turn
    assert all(len(t.split()) >= NO_DOCS.eval_min_words for t in split.out_of_domain)


def test_split_mixes_docstrings_into_train_and_in_domain():
    docs = [f"Return the value number {i} of the sequence given." for i in range(300)]
    rows = E.wordnet_rows()
    cfg = E.SplitConfig(n_docstring_train=250, n_wordnet_train=500, n_in_domain=40,
                        n_out_domain=100)
    split = E.make_split(docs, rows, cfg)
    assert len(split.out_of_domain) == 100
    assert sum(t in docs for t in split.in_domain) == 20 and len(split.in_domain) == 40
    assert sum(t in docs for t in split.train) == 250 and len(split.train) == 750
    with pytest.raises(ValueError, match="out-of-domain"):
        E.make_split(docs, rows[:10], cfg)


def test_read_texts_english_is_the_training_split(monkeypatch):
    split = E.english_split(NO_DOCS)
    monkeypatch.setattr(E, "english_split", lambda config=None: split)  # skip the docstrings
    texts = E.read_texts("english")
    assert texts == list(split.train) and not set(texts) & set(split.out_of_domain)
