"""The `pcformer` command line end to end, as a user runs it (a subprocess per command).

Small settings: MiniLM at a short sequence length, a one-layer tiny GPT-2 checkpoint folder.
"""

import json
import re
import subprocess
import sys

import pytest

from pcformer import models
from pcformer.report import Report
from pcformer.runtime.ledger import Entry


def pcformer(*args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True,
                          text=True, timeout=timeout)


def rows_sum(rows, phase):
    return ([sum(r[phase]["bytes"][p] for r in rows) for p in (0, 1)],
            sum(r[phase]["steps"] for r in rows))


def check_report(rep):
    """Totals are the sums of the per-module and per-op rows; static cost == measured ledger."""
    assert rep["static_equals_measured"] is True
    assert rep["static_totals"] == rep["totals"]
    for phase in ("setup", "offline", "online"):
        for rows in (rep["by_scope"], rep["by_op"]):
            b, steps = rows_sum(rows, phase)
            assert b == rep["totals"][phase]["bytes"]
            assert steps == rep["totals"][phase]["steps"]
    assert rep["totals"]["online"]["rounds"] > 0
    for net in ("lan", "wan"):
        est = rep["estimate"][net]
        assert est["per_run"] == pytest.approx(est["offline"] + est["online"])
    assert set(rep["time"]) >= {"compile_s", "run_s"}


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    res = pcformer("run", "--model=minilm", "--text=Secret sharing hides the prompt.",
                   "--policy=mpcformer", "--seq_len=12", f"--report={d}/r.json",
                   f"--trace={d}/t.json", "--trace_network=wan", f"--dump_ir={d}/ir.txt")
    return res, d


@pytest.mark.slow
def test_minilm_run_prints_the_tables_and_writes_a_consistent_report(minilm_run):
    res, d = minilm_run
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for heading in ("Cost by module", "Cost by protocol op", "Totals", "Latency estimate",
                    "Fidelity of the private output", "Wall time"):
        assert heading in out
    assert "static cost == measured ledger: yes" in out
    # MiniLM is not distilled for mpcformer: the output says why its cosine to the exact model is low
    assert "not distilled for mpcformer" in out and "pcformer distill" in out
    rep = json.loads((d / "r.json").read_text())
    check_report(rep)
    assert rep["policy"] == "mpcformer" and rep["config"]["ring_bits"] == 64
    # fidelity: the private embedding is the rewritten program's, up to fixed-point error
    assert rep["fidelity"]["vs_plaintext"]["cosine_mean"] > 0.999
    assert rep["fidelity"]["vs_plaintext"]["max_abs"] < 0.05
    assert -1.0 <= rep["fidelity"]["vs_exact"]["cosine_mean"] <= 1.0
    ir_text = (d / "ir.txt").read_text()   # weights by name, each op's cost, totals = the report's
    assert re.search(r"dot_general_private\{party=0\} %\d+, %encoder/layer_0/attention/self/query/kernel",
                     ir_text)
    on = rep["totals"]["online"]["bytes"]
    assert f"# total: online {on[0]} B (p0) + {on[1]} B (p1)" in ir_text
    assert_documented(rep)


def assert_documented(rep):
    """Every key the CLI writes is in docs/compiler.md's schema (so the docs cannot fall behind)."""
    from pathlib import Path
    schema = (Path(__file__).resolve().parents[2] / "docs" / "compiler.md").read_text()
    keys = set(rep) | set(rep["wall_time"]) | set(rep.get("generated", {})) \
        | set(rep.get("generated", {}).get("per_token", {}))
    missing = sorted(k for k in keys if f'"{k}"' not in schema)
    assert not missing, f"docs/compiler.md does not list {missing}"


@pytest.mark.slow  # its fixture runs MiniLM privately (about 30 s)
def test_minilm_trace_matches_the_report(minilm_run):
    res, d = minilm_run
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads((d / "r.json").read_text())
    trace = json.loads((d / "t.json").read_text())
    slices = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    end = max(e["ts"] + e["dur"] for e in slices)
    est = rep["estimate"]["wan"]
    assert end == pytest.approx((est["setup"] + est["offline"] + est["online"]) * 1e6, abs=1.0)
    steps = [e for e in slices if e["cat"] == "step" and e["pid"] == 0 and e["args"]["phase"] == "online"]
    for p in (0, 1):
        assert sum(s["args"]["bytes_sent"][f"party{p}"] for s in steps) == rep["totals"]["online"]["bytes"][p]
    # per-layer nesting: some step sits inside encoder -> layer_0 on the server's track
    assert any(e["cat"] == "scope" and e["args"]["scope"] == "encoder/layer_0" and e["pid"] == 0
               for e in slices)


@pytest.mark.slow
def test_gpt2_private_generation(tmp_path):
    ckpt = tmp_path / "gpt2"
    models.make_tiny_gpt2(ckpt, n_layer=1, n_embd=32, n_head=2, vocab_size=300, n_positions=32)
    res = pcformer("run", f"--model={ckpt}", "--prompt=Once upon a time", "--max_new_tokens=2",
                   "--seq_len=16", f"--report={tmp_path}/g.json")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Generated privately" in res.stdout
    rep = json.loads((tmp_path / "g.json").read_text())
    check_report(rep)
    gen = rep["generated"]
    assert len(gen["token_ids"]) == 2
    # the private tokens are the rewritten program's greedy tokens
    assert gen["token_ids"] == gen["plaintext_token_ids"]
    assert gen["per_token"]["online_rounds"] > 0 and min(gen["per_token"]["online_bytes"]) > 0
    # sequential programs add: the whole generation's rounds are the prefill's plus each token's
    assert rep["totals"]["online"]["rounds"] == gen["prefill"]["online_rounds"] + gen["per_token"]["online_rounds"]
    assert "prefill (prompt)" in res.stdout and "per generated token" in res.stdout
    assert_documented(rep)


@pytest.mark.slow
def test_llama_private_generation(tmp_path):
    """A LLaMA-style decoder (GQA, rotary, SwiGLU) generates privately through the same command."""
    ckpt = tmp_path / "llama"
    models.make_tiny_llama(ckpt, num_hidden_layers=1, hidden_size=32, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=64, vocab_size=300,
                           max_position_embeddings=32)
    res = pcformer("run", f"--model={ckpt}", "--prompt=Once upon a time", "--max_new_tokens=2",
                   "--seq_len=16", "--policy=exact", f"--report={tmp_path}/l.json")
    assert res.returncode == 0, res.stderr[-3000:]
    rep = json.loads((tmp_path / "l.json").read_text())
    gen = rep["generated"]
    assert len(gen["token_ids"]) == 2
    assert gen["token_ids"] == gen["plaintext_token_ids"]   # under exact: the plaintext is the model
    assert rep["totals"]["online"]["rounds"] == gen["prefill"]["online_rounds"] + gen["per_token"]["online_rounds"]


def test_run_refuses_a_vision_model(tmp_path):
    ckpt = tmp_path / "vit"
    models.make_tiny_vit(ckpt)
    res = pcformer("run", f"--model={ckpt}")
    assert res.returncode == 2 and "pcformer cost" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--policy=nosuch"], "unknown policy"),
    (["run", "--model=/no/such/folder"], "does not exist"),
    (["run", "--text=" + "word " * 40, "--seq_len=8"], "more than --seq_len=8"),
    (["run", "--ring_bits=32", "--frac_bits=16"], "frac"),
    (["fly"], "expected one command"),
    (["run", "--model=minilm", "--prompt=hi"], "--prompt is for GPT-2 models"),
    (["run", "--model=minilm", "--seq_len=1000"], "more than the 512 positions"),
    (["run", "--report=/no/such/folder/r.json"], "does not exist"),
    (["run", "--trace=."], "is a folder"),
    (["run", "--trace=t.json", "--trace_network=moon"], "--trace_network=moon"),
    (["run", "--data=x.txt"], "not a flag of `pcformer run`"),
])
@pytest.mark.slow
def test_bad_input_gives_one_clear_line(args, message):
    res = pcformer(*args, timeout=300)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    assert message.lower() in lines[0].lower()
    assert res.stdout == ""                     # refused before anything ran


def test_policy_files_json_and_yaml(tmp_path):
    from pcformer.compiler.policies import PolicyError
    from pcformer.compiler.policies import load as load_policy
    (tmp_path / "p.yaml").write_text("base: mpcformer\ngelu: relu\n")
    (tmp_path / "q.json").write_text(json.dumps({"base": "puma", "softmax": "2quad", "name": "q"}))
    p = load_policy(str(tmp_path / "p.yaml"))
    assert (p.name, p.gelu, p.softmax) == ("p", "relu", "2quad")
    q = load_policy(str(tmp_path / "q.json"))
    assert (q.name, q.gelu, q.softmax) == ("q", "puma", "2quad")
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    with pytest.raises(PolicyError, match="mapping"):
        load_policy(str(tmp_path / "bad.yaml"))
    with pytest.raises(PolicyError, match="missing.yaml does not exist"):
        load_policy(str(tmp_path / "missing.yaml"))
    (tmp_path / "broken.json").write_text('{"gelu": ')
    with pytest.raises(PolicyError, match="broken.json is not valid JSON"):
        load_policy(str(tmp_path / "broken.json"))
    (tmp_path / "broken.yaml").write_text("gelu: [relu\n")
    with pytest.raises(PolicyError, match="broken.yaml is not valid YAML"):
        load_policy(str(tmp_path / "broken.yaml"))
    # one loader for the API too: a YAML file reaches pcformer.compile's policy argument
    from pcformer.compiler import policies
    assert policies.get(str(tmp_path / "p.yaml")) == p
    assert [x.name for x in policies.load_many(f"exact, {tmp_path / 'q.json'}")] == ["exact", "q"]


def test_distilled_folder_is_compared_with_its_teacher(tmp_path):
    from pcformer.inference import exact_reference
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    models.make_tiny_bert(teacher)
    models.make_tiny_bert(student, seed=1)
    plain = models.load(student)
    assert exact_reference(plain)[0] is plain          # no pcformer_policy.json: itself
    (student / "pcformer_policy.json").write_text(json.dumps({"policy": "mpcformer",
                                                              "teacher": str(teacher)}))
    ref, name = exact_reference(models.load(student))
    assert ref.folder == teacher and name == "teacher teacher"


@pytest.mark.slow
def test_distill_command_trains_saves_resumes_and_runs(tmp_path):
    """`pcformer distill` as a user types it: flags reach DistillConfig, the folder runs privately."""
    import shutil
    from pcformer import corpus
    teacher, out = tmp_path / "teacher", tmp_path / "distilled"
    models.make_tiny_bert(teacher)
    no_tokenizer = pcformer("distill", f"--model={teacher}", "--steps=1")
    assert no_tokenizer.returncode == 2 and "has no tokenizer" in no_tokenizer.stderr
    minilm = models.loaded.minilm_folder()                 # a real tokenizer for the tiny model
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, teacher / name)
    models.make_tiny_bert(teacher, vocab_size=30522)
    data = tmp_path / "data.txt"
    train, held = corpus.load_corpus(30, 10, seed=1)
    data.write_text("\n".join(train + held))   # 40 lines: fewer than the default 64 held out
    common = ["distill", f"--model={teacher}", "--policy=mpcformer", f"--data={data}", "--seq_len=8",
              "--batch_size=4", "--lr=1e-3", "--warmup=1", "--length_buckets=6", f"--out={out}"]
    first = pcformer(*common, "--steps=2")
    assert first.returncode == 0, first.stderr   # the held-out share adapted to the small file
    assert json.loads(first.stdout)["steps"] == 2
    fidelity = json.loads(first.stdout)["fidelity"]          # in/out-of-domain, before and after
    assert {s: set(v) for s, v in fidelity.items()} == {"in_domain": {"before", "after"},
                                                         "out_of_domain": {"before", "after"}}
    assert "out_of_domain" in first.stderr and "cos min" in first.stderr
    meta = json.loads((out / "pcformer_policy.json").read_text())
    assert meta["policy"] == "mpcformer"
    assert (meta["distill"]["lr"], meta["distill"]["length_buckets"]) == (1e-3, [6])
    again = pcformer(*common, "--steps=4", f"--resume={out}")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["steps"] == 4
    run = pcformer("run", f"--model={out}", "--text=Return the number.", "--seq_len=8")
    assert run.returncode == 0, run.stderr
    assert "not distilled" not in run.stdout          # it was distilled for this policy
    bad = pcformer("distill", f"--model={teacher}", "--length_buckets=six")
    assert bad.returncode == 2 and "error" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
