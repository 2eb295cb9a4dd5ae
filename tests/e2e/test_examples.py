"""The BERT and GPT-2 examples, run in-process with small settings."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_bert_private_semantic_search():
    ex = load("bert_private_inference")
    res = ex.run(["exact"], seq_len=16, query=ex.QUERY)["exact"]
    assert res["static_equals_measured"]
    assert res["cosine_vs_plaintext"] > 0.999
    # `exact` approximates the original operators closely: the private ranking is the plaintext one
    assert res["cosine_vs_exact"] > 0.99
    assert res["top1"] == 1.0 and res["topk_overlap"] == 1.0
    assert sorted(res["ranking"]) == list(range(len(ex.CORPUS)))
    assert res["online_rounds"] > 0 and min(res["online_bytes"]) > 0
    assert 0 < res["lan_s"] < res["wan_s"]


def test_ranking_agreement_measures():
    ex = load("bert_private_inference")
    import numpy as np
    same = ex.agreement(np.array([2, 0, 1, 3]), np.array([2, 0, 1, 3]), 2)
    assert same == {"top1": 1.0, "topk_overlap": 1.0, "spearman": 1.0}
    rev = ex.agreement(np.array([3, 2, 1, 0]), np.array([0, 1, 2, 3]), 2)
    assert rev["top1"] == 0.0 and rev["topk_overlap"] == 0.0 and rev["spearman"] == pytest.approx(-1.0)


@pytest.mark.slow
def test_gpt2_private_generation(tmp_path, monkeypatch, capsys):
    import functools
    from pcformer.progress import Progress
    ex = load("gpt2_private_generation")
    # every stage reported, however short (the CLI's Progress; by default only those over 1 s)
    monkeypatch.setattr(ex, "Progress", functools.partial(Progress, delay=0.0))
    res = ex.run(None, "Once upon a time", 2, ["mpcformer"], seq_len=16,
                 tiny={"n_layer": 1, "n_embd": 32, "n_head": 2, "vocab_size": 300,
                       "n_positions": 32})["mpcformer"]
    assert res["static_equals_measured"]
    assert len(res["token_ids"]) == 2
    assert res["token_ids"] == res["plaintext_ids"]      # private == rewritten plaintext greedy
    assert res["agreement_plaintext"] == 1.0
    assert res["per_token"]["online_rounds"] > 0
    err = capsys.readouterr().err
    for line in ("gpt2: load the model", "mpcformer: trace, rewrite and lower",
                 "mpcformer: simulate both parties", "mpcformer: fidelity"):
        assert line in err, err
    assert err.endswith("\n")   # the progress line is ended before the results


@pytest.mark.slow
def test_distill_minilm_example_small(capsys):
    """The distillation example end to end with tiny settings: table rows, private check."""
    import re
    ex = load("distill_minilm")
    assert ex.main(["--policies=mpcformer", "--steps=2", "--n_train=48", "--n_heldout=8",
                    "--batch_size=4", "--seq_len=16", "--warmup=1", "--private_seq_len=8",
                    "--no_progress"]) == 0
    out = capsys.readouterr().out
    for held in ("in_domain", "out_of_domain"):
        assert re.search(rf"mpcformer\s+{held}\s+before\s+8\s", out)
        after = re.search(rf"mpcformer\s+{held}\s+after 2 steps \(\d+ s\)\s+8\s+(-?[\d.]+)\s+"
                          r"(-?[\d.]+)\s+([\d.]+)\s+([\d.]+)", out)
        assert after and -1.0 <= float(after.group(2)) <= float(after.group(1)) <= 1.0
        assert 0.0 <= float(after.group(3)) <= float(after.group(4)) <= 1.0  # top-1 <= top-5
    priv = re.search(r"vs its plaintext max\|err\| ([\d.e+-]+), cosine ([\d.]+)", out)
    assert priv and float(priv.group(1)) < 1e-2 and float(priv.group(2)) > 0.999


@pytest.mark.slow
def test_distill_minilm_example_refuses_mismatched_steps():
    ex = load("distill_minilm")
    with pytest.raises(SystemExit):          # argparse's error, before any model is loaded
        ex.main(["--policies=mpcformer,paper", "--steps=10,20,30"])
