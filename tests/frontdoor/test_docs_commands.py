"""The docs cannot drift from the code: every `pcformer ...` command in README and docs/ parses
with the CLI (command and flags exist, values parse), every `python ...` script exists, every
source file the docs name exists, and no development-machine path appears.

Fast: no command runs; the checks use the CLI's own command table and flag parsers.
"""
import re
import shlex
from pathlib import Path

import pytest

from pcformer import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", ROOT / "BUILD.md", *(ROOT / "docs").glob("*.md"),
               *(ROOT / "benchmarks").glob("*.md"), *(ROOT / "examples").glob("*.md")])
DOCS = [d for d in DOCS if d.is_file()]


def code_lines(text: str):
    """Lines of fenced code blocks and of inline `code` spans, continuation lines joined."""
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    lines = []
    for b in blocks:
        b = b.replace("\\\n", " ")
        lines += b.splitlines()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", prose)
    return [l.strip().removeprefix("$ ").strip() for l in lines]


def commands(text: str, head: str):
    """Commands starting with `head` (pcformer | python), without trailing comments."""
    out = []
    for line in code_lines(text):
        if not re.match(rf"{head}\s+\S", line):   # a bare `pcformer` is the package name
            continue
        line = re.split(r"\s+#\s", line)[0].strip()
        for part in re.split(r"\s+(?:&&|\|\||\|)\s+", line):   # pipes and chains
            if re.match(rf"{head}(\s|$)", part):
                out.append(part)
    return out


def all_commands(head):
    return [(d.relative_to(ROOT).as_posix(), c) for d in DOCS for c in commands(d.read_text(), head)]


def check_pcformer(argv: list[str]) -> None:
    """Parse like the CLI: one command (or help/version), then its own flags with valid values."""
    args = argv[1:]
    if any(a in ("--help", "-h", "--helpshort", "--version", "--helpfull") for a in args):
        return
    cmds = [a for a in args if not a.startswith("-")]
    assert len(cmds) == 1 and cmds[0] in cli.COMMANDS, f"not one known command: {cmds}"
    cmd = cli.COMMANDS[cmds[0]]
    for a in args:
        if not a.startswith("-"):
            continue
        name, _, value = a.lstrip("-").partition("=")
        bare = name.removeprefix("no")
        if name not in cmd.flags + cli.COMMON and bare in cmd.flags + cli.COMMON and cli.FLAGS[bare].boolean:
            continue
        assert name in cmd.flags + cli.COMMON, f"--{name} is not a flag of `pcformer {cmd.name}`"
        flag = cli.FLAGS[name]
        if value and "..." not in value and not value.startswith(("path/", "<", "DIR", "$")):
            flag.parser.parse(value)       # raises on a value the flag would refuse


PCFORMER = all_commands("pcformer")
PYTHON = all_commands("python")


def test_the_docs_hold_commands_to_check():
    assert len(PCFORMER) >= 5 and len(PYTHON) >= 3


@pytest.mark.parametrize("doc, command", PCFORMER)
def test_pcformer_commands_parse(doc, command):
    check_pcformer(shlex.split(command))


@pytest.mark.parametrize("doc, command", PYTHON)
def test_python_commands_name_real_scripts(doc, command):
    argv = shlex.split(command)
    if len(argv) < 2 or argv[1] == "-c":
        return
    if argv[1] == "-m":
        if argv[2] == "pcformer":
            check_pcformer(["pcformer", *argv[3:]])
        else:
            import importlib.util
            assert argv[2] in ("pytest", "pip", "venv") or (
                argv[2].startswith("pcformer.") and importlib.util.find_spec(argv[2])), command
        return
    script = argv[1]
    if script.endswith(".py"):
        assert (ROOT / script).is_file(), f"{doc}: {script} does not exist"


SOURCE_REF = re.compile(r"(?<![\w./-])((?:pcformer|compiler|runtime|tests|examples|benchmarks|docs)"
                        r"/[\w/.-]+\.(?:py|md|txt|toml|png))")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_named_files_exist_and_no_machine_paths(doc):
    text = doc.read_text()
    for bad in ("/work/", "/root/", "/home/", "/Users/"):
        assert bad not in text, f"{doc.name} holds a machine path ({bad}...)"
    for ref in SOURCE_REF.findall(text):
        ref = ref.rstrip(".")
        candidates = [ROOT / ref, doc.parent / ref,
                      ROOT / ref.removeprefix("pcformer/")]    # pcformer/compiler/x.py -> compiler/x.py
        assert any(c.exists() for c in candidates), f"{doc.name} names {ref}, which does not exist"


def test_policy_file_examples_in_the_docs_load(tmp_path):
    from pcformer.compiler import policies
    text = (ROOT / "docs" / "compiler.md").read_text()
    blocks = re.findall(r"```(yaml|json)\n(.*?)```", text, flags=re.S)
    assert {kind for kind, _ in blocks} == {"yaml", "json"}
    for i, (kind, body) in enumerate(blocks):
        f = tmp_path / f"example{i}.{kind}"
        f.write_text(body)
        p = policies.load(str(f))
        assert p.name == f"example{i}" and isinstance(p, policies.Policy)


def test_the_checker_catches_drift():
    for bad in ("pcformer run --nosuch=1", "pcformer fly", "pcformer distill --text=x"):
        with pytest.raises(AssertionError):
            check_pcformer(shlex.split(bad))
    with pytest.raises(Exception, match="invalid literal"):
        check_pcformer(shlex.split("pcformer run --seq_len=abc"))
    check_pcformer(shlex.split("pcformer run --nocheck_overflow --seq_len=8"))
    assert commands("```\n$ pcformer run --seq_len=8  # note\n```\n", "pcformer") == ["pcformer run --seq_len=8"]
