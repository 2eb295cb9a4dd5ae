"""A checkpoint's tokenizer, read with the `tokenizers` library alone (no transformers import).

Why. Importing transformers pulls in torch: 3-10 s before a run can start, more than tracing a
MiniLM. A Hugging Face folder's `tokenizer.json` is the fast tokenizer itself (normaliser,
pre-tokeniser, model, post-processor with the special tokens); `tokenizers` runs it directly,
and `tokenizer_config.json` / `special_tokens_map.json` name the pad and end-of-sequence tokens.
`FastTokenizer` answers the calls pcformer makes of a transformers tokenizer, with the same
results (tests/models/test_tokenizer.py compares them on BERT, GPT-2 and LLaMA-style folders):

    tok("text")["input_ids"]                                  -> list of ids
    tok(texts, padding=True | "max_length", truncation=..., max_length=..., return_tensors="np")
    tok.decode(ids, skip_special_tokens=True)
    tok.pad_token / tok.eos_token (settable), tok.save_pretrained(folder)

A folder without tokenizer.json (only vocab.txt, or vocab.json + merges.txt) is read by
transformers' AutoTokenizer instead (`load_tokenizer`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

TOKENIZER_FILE = "tokenizer.json"
_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json")
# transformers' `clean_up_tokenization` (a decoding option of BERT-style tokenizers): the
# spaces WordPiece decoding leaves before punctuation and English contractions.
_CLEANUPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
             (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class FastTokenizer:
    """A `tokenizers.Tokenizer` from a checkpoint folder, called like a transformers tokenizer."""

    def __init__(self, folder):
        import tokenizers
        self.folder = Path(folder)
        self._tok = tokenizers.Tokenizer.from_file(str(self.folder / TOKENIZER_FILE))
        self._tok.no_padding()
        self._tok.no_truncation()
        config = {**_read_json(self.folder / "special_tokens_map.json"),
                  **_read_json(self.folder / "tokenizer_config.json")}
        self.pad_token = _token_text(config.get("pad_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.padding_side = config.get("padding_side", "right")
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.model_max_length = config.get("model_max_length")

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tok.token_to_id(token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    def __call__(self, text, padding=False, truncation=False, max_length=None,
                 return_tensors=None, add_special_tokens=True):
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        limit = max_length if max_length is not None else self.model_max_length
        if truncation and limit is not None:
            # The library's own truncation: it keeps room for the post-processor's special
            # tokens, as transformers' fast tokenizers do.
            self._tok.enable_truncation(int(limit))
        try:
            encs = self._tok.encode_batch(texts, add_special_tokens=add_special_tokens)
        finally:
            self._tok.no_truncation()
        ids = [list(e.ids) for e in encs]
        mask = [[1] * len(i) for i in ids]
        if padding:
            width = max_length if padding == "max_length" and max_length is not None \
                else max((len(i) for i in ids), default=0)
            ids, mask = self._padded(ids, mask, width)
        if return_tensors == "np":
            return {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(mask, np.int64)}
        if return_tensors is not None:
            raise ValueError(f"return_tensors={return_tensors!r}: only 'np' or None")
        if single:
            return {"input_ids": ids[0], "attention_mask": mask[0]}
        return {"input_ids": ids, "attention_mask": mask}

    def _padded(self, ids, mask, width: int):
        pad = self.pad_token_id
        if pad is None:
            raise ValueError("this tokenizer has no pad token: set tokenizer.pad_token "
                             "(e.g. to its eos_token) before padding")
        out_ids, out_mask = [], []
        for i, m in zip(ids, mask):
            fill = max(width - len(i), 0)
            if self.padding_side == "left":
                out_ids.append([pad] * fill + i)
                out_mask.append([0] * fill + m)
            else:
                out_ids.append(i + [pad] * fill)
                out_mask.append(m + [0] * fill)
        return out_ids, out_mask

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        text = self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:
            for before, after in _CLEANUPS:
                text = text.replace(before, after)
        return text

    def save_pretrained(self, folder) -> None:
        """The tokenizer files, copied as they were read (tokenizer_config.json updated with the
        pad and eos tokens set since)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in (TOKENIZER_FILE, "special_tokens_map.json"):
            if (self.folder / name).is_file() and (self.folder / name).resolve() != (folder / name).resolve():
                shutil.copyfile(self.folder / name, folder / name)
        config = _read_json(self.folder / "tokenizer_config.json")
        for key in ("pad_token", "eos_token"):
            if getattr(self, key) is not None:
                config[key] = getattr(self, key)
        with open(folder / "tokenizer_config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, ensure_ascii=False)



def load_tokenizer(folder):
    """The folder's tokenizer: `FastTokenizer` when it has tokenizer.json, else transformers'
    AutoTokenizer (slow-format files); None when it has no tokenizer files at all. A tokenizer
    without a pad token pads with its end-of-sequence token (GPT-2's convention)."""
    folder = Path(folder)
    if (folder / TOKENIZER_FILE).is_file():
        tok = FastTokenizer(folder)
    elif any((folder / n).is_file() for n in ("vocab.txt", "vocab.json")):
        import transformers
        tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    else:
        return None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
