"""`pcformer cost` end to end (a subprocess): a tiny GPT-2 config, the JSON report, bad input."""
import json
import subprocess
import sys

import pytest

from pcformer import costing
from pcformer.models import tiny


def pcformer(*args):
    return subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny.make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_layer=1, n_embd=16, n_head=2,
                               vocab_size=64, n_positions=16, tokenizer=False)


@pytest.mark.slow
def test_cost_command_prints_and_writes_the_model_cost(folder, tmp_path):
    out = pcformer("cost", f"--model={folder}", "--seq_len=4", "--new_tokens=3",
                   f"--report={tmp_path / 'cost.json'}")
    assert out.returncode == 0, out.stderr
    for text in ("Cost by module", "prefill", "per token (decode step)", "total (3 tokens)",
                 "lan per run", "wan per run"):
        assert text in out.stdout
    rep = json.loads((tmp_path / "cost.json").read_text())
    mc = costing.model_cost(folder, 4, 3)
    assert rep["total"]["totals"] == mc.total.totals()
    assert rep["prefill"]["totals"] == mc.prefill.totals()
    assert rep["per_token"]["totals"] == mc.step.totals()
    assert rep["decoding_steps"] == 2
    assert rep["total"]["estimate"]["wan"]["online"] > rep["prefill"]["estimate"]["wan"]["online"]


def test_cost_command_bad_model_is_one_line():
    out = pcformer("cost", "--model=no-such-model", "--seq_len=8")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "not a preset" in out.stderr


def test_policy_that_leaves_an_operator_is_a_user_error(tmp_path):
    """LLaMA's RMSNorm under a policy file that sets no rsqrt method: a CostError naming the
    operator and the way out. (A missing logistic/exp/tanh falls back to exact's method.)"""
    from pcformer import cost_command
    from pcformer.presets import CostError
    folder = tiny.make_tiny_llama(tmp_path, num_hidden_layers=1, hidden_size=16,
                                  num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
                                  vocab_size=64, max_position_embeddings=16, tokenizer=False)
    policy = tmp_path / "no_rsqrt.json"
    policy.write_text('{"base": "mpcformer", "rsqrt": null}')
    with pytest.raises(CostError, match="rsqrt.*--policy=exact"):
        cost_command.main(str(folder), 4, policy=str(policy), out=lambda *_: None)
