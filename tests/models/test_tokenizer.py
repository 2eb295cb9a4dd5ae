"""Loading without transformers: models/tokenizer.py and registry.config_fields must give what
transformers' AutoTokenizer and AutoConfig give, on the real MiniLM and on GPT-2, LLaMA, BERT and
ViT folders; and `models.load` must not import transformers (or torch) at all."""
import subprocess
import sys

import numpy as np
import pytest

from pcformer import models
from pcformer.models import registry, tiny
from pcformer.models.loaded import minilm_folder
from pcformer.models.tokenizer import FastTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["Hello, world! It isn't raining.", "a", "", "  spaces   between  words ",
         "Ünïcödé façade — naïve café, 東京 and emoji 🙂.", "The quick brown fox " * 30,
         "[CLS] literal [SEP] markers and <|endoftext|> </s> tokens"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    return {"minilm": minilm_folder(),
            "gpt2": tiny.make_tiny_gpt2(root / "gpt2"),
            "llama": tiny.make_tiny_llama(root / "llama"),
            "bert": tiny.make_tiny_bert(root / "bert"),
            "vit": tiny.make_tiny_vit(root / "vit", num_labels=3)}


def reference(folder):
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


@pytest.mark.parametrize("kind", ["minilm", "gpt2", "llama"])
def test_fast_tokenizer_matches_transformers(folders, kind):
    ours, theirs = load_tokenizer(folders[kind]), reference(folders[kind])
    assert isinstance(ours, FastTokenizer)
    assert ours.pad_token == theirs.pad_token and ours.eos_token == theirs.eos_token
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
    for kw in (dict(padding=True), dict(padding="max_length", max_length=40, truncation=True),
               dict(padding=True, truncation=True, max_length=9)):
        a = ours(TEXTS, return_tensors="np", **kw)
        b = theirs(TEXTS, return_tensors="np", **kw)
        for key in ("input_ids", "attention_mask"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{kind} {kw} {key}")
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == \
                theirs.decode(ids, skip_special_tokens=skip), (text, skip)


@pytest.mark.parametrize("kind", ["minilm", "gpt2", "llama", "bert", "vit"])
def test_config_from_json_matches_autoconfig(folders, kind):
    """Our frozen config read from config.json alone equals the one read through AutoConfig."""
    import json
    folder = folders[kind]
    raw = json.loads((folder / "config.json").read_text())
    hf = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    state = models.checkpoint.read_state(folder)
    assert registry.config_from_hf(raw["model_type"], registry.config_fields(raw), state) == \
        registry.config_from_hf(raw["model_type"], hf, state)


def test_save_and_load_again_keeps_config_and_tokenizer(folders, tmp_path):
    m = models.load(folders["gpt2"])
    again = models.load(models.save(m, tmp_path / "copy"))
    assert again.config == m.config and again.hf_config == m.hf_config
    assert again.tokenizer(TEXTS)["input_ids"] == m.tokenizer(TEXTS)["input_ids"]
    assert again.tokenizer.pad_token == m.tokenizer.pad_token


def test_padding_without_a_pad_token_says_what_to_do(folders):
    tok = FastTokenizer(folders["gpt2"])
    tok.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        tok(["a", "a b c"], padding=True)


@pytest.mark.slow
def test_load_imports_neither_transformers_nor_torch():
    code = ("import sys, pcformer.models as m; x = m.load('minilm'); x.encode(['hi']);"
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
