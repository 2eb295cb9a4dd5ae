"""Bad input to `pcformer run` / `distill`, as a user types it: one clear line naming the problem,
a non-zero exit, no traceback, nothing written, before anything expensive runs."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from pcformer import models


def pcformer(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


def one_line_error(res, *needles):
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == ""
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.yaml").write_text("gelu: [relu\n")
    (d / "broken.json").write_text('{"gelu": ')
    bert = models.make_tiny_bert(d / "bert")
    corrupt = d / "corrupt"
    shutil.copytree(bert, corrupt)
    (corrupt / "config.json").write_text('{"model_type": "be')
    # a tokenizer from another model: MiniLM's ids go up to 30521, this model has 128 words
    mismatch = models.make_tiny_bert(d / "mismatch")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(models.minilm_folder() / name, mismatch / name)
    return d


@pytest.mark.parametrize("args, needles", [
    (["run", "--policy={d}/broken.yaml"], ["broken.yaml is not valid YAML"]),
    (["run", "--policy={d}/broken.json"], ["broken.json is not valid JSON"]),
    (["distill", "--policy={d}/broken.yaml"], ["broken.yaml is not valid YAML"]),
    (["run", "--model={d}/corrupt"], ["corrupt/config.json is not valid JSON"]),
    (["run", "--text=caf\udce9"], ["--text is not valid UTF-8"]),           # byte 0xe9 in argv
    (["run", "--model={d}/mismatch", "--text=vocabulary", "--seq_len=8"],
     ["outside the model's vocabulary of 128"]),
    (["run", "--policy=exact,mpcformer", "--report={d}"], ["is a folder"]),
    (["distill", "--policy=exact,mpcformer"], ["distill takes one --policy"]),
])
@pytest.mark.slow
def test_bad_input(files, args, needles):
    one_line_error(pcformer(*[a.format(d=files) for a in args]), *needles)
    assert not list(files.glob("*.json.tmp-*"))


def test_several_policies_write_one_file_each(tmp_path, monkeypatch):
    """The output files are settled (and checked) before the model loads."""
    from pcformer import cli, cli_run
    cli.FLAGS(["pcformer", "--policy=exact,mpcformer", f"--report={tmp_path}/r.json",
               f"--dump_ir={tmp_path}/ir.txt"])
    try:
        plan = cli_run.plan()
    finally:
        cli.FLAGS.unparse_flags()
    assert [n for n, _ in plan.policies] == ["exact", "mpcformer"]
    assert plan.outputs["mpcformer"] == {"report": f"{tmp_path}/r.mpcformer.json",
                                         "dump_ir": f"{tmp_path}/ir.mpcformer.txt"}
    assert plan.outputs["exact"]["report"] == f"{tmp_path}/r.exact.json"


def test_a_policy_file_is_shown_by_its_name(tmp_path):
    from pcformer import cli, cli_run
    (tmp_path / "relu_gelu.yaml").write_text("base: mpcformer\ngelu: relu\n")
    cli.FLAGS(["pcformer", f"--policy=exact,{tmp_path}/relu_gelu.yaml", f"--trace={tmp_path}/t.json"])
    try:
        plan = cli_run.plan()
    finally:
        cli.FLAGS.unparse_flags()
    assert [n for n, _ in plan.policies] == ["exact", "relu_gelu"]
    assert plan.outputs["relu_gelu"]["trace"] == f"{tmp_path}/t.relu_gelu.json"
