"""Build pcformer/data/wordnet_sentences.jsonl.gz: English sentences from WordNet 3.0.

WordNet (Princeton University; licence: pcformer/data/WORDNET_LICENSE, which permits use, copying
and redistribution with its notice) gives every synset a gloss -- a definition, often followed by
example sentences in double quotes -- and files each synset under one of 45 lexicographer files
(noun.food, verb.motion, ...), which serve here as topic domains. This script reads WordNet's
database files (data.noun, data.verb, data.adj, data.adv; on Debian: `apt-get install
wordnet-base`, files under /usr/share/wordnet) and writes one JSON object a line,

    {"domain": "noun.food", "kind": "example", "text": "She baked a loaf of bread."}

kind "example": a quoted example sentence, capitalised and given a full stop if it had none;
kind "gloss": the definition made into a sentence ("To eat is to take in solid food.",
"A sandwich is two (or more) slices of bread with a filling between them.").
Only ASCII sentences of `--min_words`..`--max_words` words that are mostly letters are kept, each
text once (the first in the order of the files and their offsets); lines are sorted by (domain,
kind, text), so the output is the same byte for byte on every machine (gzip mtime 0).

    python tools/build_english_corpus.py --wordnet=/usr/share/wordnet
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import sys

# WordNet 3.0's lexicographer files, by number (lexnames(5WN)).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
PARTS = ("noun", "verb", "adj", "adv")
_QUOTED = re.compile(r'"([^"]*)"')
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")
_ARTICLES = ("a ", "an ", "the ", "any ", "one ", "some ")


def parse_line(line: str):
    """(domain, pos, first lemma, definition, [examples]) of one data.* line, or None for the
    licence header (lines starting with two spaces)."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    domain = LEXNAMES[int(fields[1])]
    lemma = _ADJ_MARKER.sub("", fields[4]).replace("_", " ")
    gloss = gloss.strip()
    examples = _QUOTED.findall(gloss)
    definition = gloss.split('"', 1)[0].strip().rstrip(";").strip()
    definition = definition.split(";", 1)[0].strip()  # the first of alternative definitions
    return domain, fields[2], lemma, definition, examples


def gloss_sentence(pos: str, lemma: str, definition: str) -> str | None:
    """The definition as an English sentence, or None when there is none."""
    if not definition:
        return None
    if pos == "n":
        verb = "is" if definition.lower().startswith(_ARTICLES) else "means"
        text = f"{lemma} {verb} {definition}"
    elif pos == "v":
        text = f"to {lemma} is to {definition}"
    else:  # a, s (satellite adjective), r
        text = f"{lemma} means {definition}"
    return finish(text)


def finish(text: str) -> str:
    """Whitespace-normalised, capitalised, ending in . ! or ?"""
    text = " ".join(text.split()).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def keep(text: str, min_words: int, max_words: int) -> bool:
    """Plain English prose of a sensible length: ASCII, no markup, mostly letters."""
    if not text or not text.isascii() or not text[0].isupper():
        return False
    if any(ch in text for ch in "`_<>[]{}|\\@#$%^~*="):
        return False
    if not min_words <= len(text.split()) <= max_words:
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in text)
    return letters >= 0.9 * len(text)


def sentences(wordnet_dir: str, min_words: int, max_words: int) -> list[dict]:
    """Every kept (domain, kind, text), each text once, sorted."""
    seen, rows = set(), []
    for part in PARTS:
        with open(os.path.join(wordnet_dir, f"data.{part}"), encoding="utf-8") as f:
            for line in f:
                parsed = parse_line(line)
                if parsed is None:
                    continue
                domain, pos, lemma, definition, examples = parsed
                found = [("gloss", gloss_sentence(pos, lemma, definition))]
                found += [("example", finish(e)) for e in examples]
                for kind, text in found:
                    if text and keep(text, min_words, max_words) and text.lower() not in seen:
                        seen.add(text.lower())
                        rows.append({"domain": domain, "kind": kind, "text": text})
    return sorted(rows, key=lambda r: (r["domain"], r["kind"], r["text"]))


def write(rows: list[dict], path: str) -> None:
    """gzip'd JSON lines, mtime 0 and no file name in the header: reproducible bytes."""
    data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                 mtime=0, compresslevel=9) as f:
        f.write(data)


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wordnet", default="/usr/share/wordnet", help="folder with data.noun etc.")
    p.add_argument("--out", default=os.path.join(here, "..", "pcformer", "data",
                                                 "wordnet_sentences.jsonl.gz"))
    p.add_argument("--min_words", type=int, default=5)
    p.add_argument("--max_words", type=int, default=40)
    args = p.parse_args(argv)
    rows = sentences(args.wordnet, args.min_words, args.max_words)
    write(rows, args.out)
    kinds = collections.Counter(r["kind"] for r in rows)
    domains = collections.Counter(r["domain"] for r in rows)
    print(f"{len(rows)} sentences ({dict(kinds)}) in {len(domains)} domains, "
          f"{os.path.getsize(args.out)} bytes -> {args.out}", file=sys.stderr)
    for d, n in sorted(domains.items()):
        print(f"  {d:<20} {n}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
