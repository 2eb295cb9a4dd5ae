"""Help, version and the error paths of the command line: fast, and without JAX."""
import subprocess
import sys
import time

import pytest

from pcformer import cli


def pcformer(*args, env=None):
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True, text=True,
                         timeout=120, env=env)
    return res, time.perf_counter() - t0


@pytest.mark.parametrize("args", [["--help"], ["--helpshort"], ["-h"], ["run", "--help"],
                                  ["distill", "--help"], ["--help", "run"]])
def test_help_exits_0_lists_and_is_fast(args):
    res, seconds = pcformer(*args)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    out = res.stdout
    cmd = next((a for a in args if a in cli.COMMANDS), None)
    if cmd is None:                                 # top level: every command and an example each
        for c in cli.COMMANDS.values():
            assert f"  {c.name}" in out and c.example in out
    else:                                           # a command: its flags, defaults, meanings
        c = cli.COMMANDS[cmd]
        for name in c.flags:
            assert f"--{name}" in out or f"--[no]{name}" in out
        assert "--model=minilm" in out and "A named model" in out and c.example in out
        other = set(cli._ALL_OURS) - set(c.flags) - set(cli.COMMON)
        assert not any(f"--{n}=" in out for n in other)
    assert seconds < 10  # generous for a loaded machine; the JAX check below is the real test


def test_help_and_version_do_not_import_jax():
    code = ("import sys; sys.argv = ['pcformer', 'run', '--help']\n"
            "from pcformer import cli\n"
            "assert cli._early(sys.argv) == 0\n"
            "assert cli._early(['pcformer', '--version']) == 0\n"
            "import pcformer; pcformer.__version__\n"
            "print(sorted(m for m in ('jax', 'flax', 'transformers', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_version_matches_package_metadata():
    from importlib import metadata
    import pcformer
    res, _ = pcformer_cli("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"pcformer {metadata.version('pcformer')}"
    assert pcformer.__version__ == metadata.version("pcformer")


def pcformer_cli(*args):
    return pcformer(*args)


def test_flag_of_another_command_is_refused_in_one_line():
    res, _ = pcformer("distill", "--text=hello")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == ("pcformer: error: --text is not a flag of `pcformer distill` "
                                  "(see pcformer distill --help)")


def _fake_command(monkeypatch, exc):
    """A command whose code raises `exc`: main() must classify it."""
    import types
    mod = types.ModuleType("pcformer_fake_command")

    def boom():
        raise exc
    mod.boom = boom
    monkeypatch.setitem(sys.modules, "pcformer_fake_command", mod)
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command("fake", "raises", (), "pcformer fake",
                                                         "pcformer_fake_command:boom"))
    cli.FLAGS(["pcformer"])  # parsed flags, as absl leaves them for main()


def test_an_unexpected_exception_is_an_internal_error(monkeypatch, capsys):
    _fake_command(monkeypatch, ValueError("operand shapes (3,) and (4,) disagree"))
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.main(["pcformer", "fake"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("pcformer: internal error: ValueError: operand shapes")
    assert "PCFORMER_DEBUG=1" in err[0] and "--debug" in err[0]
    monkeypatch.setenv(cli.DEBUG_ENV, "1")               # the traceback on request
    with pytest.raises(ValueError, match="operand shapes"):
        cli.main(["pcformer", "fake"])


def test_a_user_error_is_one_line_with_status_2(monkeypatch, capsys):
    _fake_command(monkeypatch, FileNotFoundError(2, "No such file or directory", "data.txt"))
    assert cli.main(["pcformer", "fake"]) == 2
    assert capsys.readouterr().err.strip() == "pcformer: error: data.txt: No such file or directory"


@pytest.mark.parametrize("args, needle", [
    (["run", "--seq_len=abc"], "flag --seq_len=abc: invalid literal"),
    (["run", "--nosuch=1"], "Unknown command line flag 'nosuch'"),
    (["run", "--seq_len=0"], "--seq_len=0: 0 is not a positive integer"),
])
def test_a_bad_flag_is_one_line_before_any_import(args, needle):
    res, seconds = pcformer(*args)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and needle in res.stderr and "Traceback" not in res.stderr


def test_a_program_the_protocols_cannot_run_is_a_user_error(monkeypatch, capsys):
    """A LoweringError (here: lookups under the Beaver family) names the op, the line and the
    fix; it is bad input, not a bug."""
    from pcformer.compiler.lower_base import LoweringError
    _fake_command(monkeypatch, LoweringError("protocol op 'lut' has no protocol in family "
                                             "'beaver'; it exists in ['fss']"))
    assert cli.main(["pcformer", "fake"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["pcformer: error: protocol op 'lut' has no protocol in family 'beaver'; it "
                   "exists in ['fss']"]
