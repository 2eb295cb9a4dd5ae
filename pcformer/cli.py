"""The `pcformer` command line: a small command table, its flags (absl) and its help.

    pcformer run --model=minilm --text="A private sentence." --policy=mpcformer --seq_len=32
    pcformer distill --model=minilm --policy=mpcformer --steps=2000 --out=distilled/
    pcformer --help | pcformer run --help | pcformer --version

Also `python -m pcformer ...`. This module is LIGHT on purpose: it imports absl's flags and
nothing of JAX, so help, version and flag errors answer at once; a command's module (heavy) is
imported only when the command runs.

Adding a command is one `Command` entry in COMMANDS (its flags defined below with
`flags.DEFINE_*`, listed by name in the entry, and a `target` "module:function" that takes no
arguments, reads FLAGS and returns the exit status).

Exit status: 0 done; 2 bad flags or input (one line on stderr, nothing half-written);
3 an internal error (one line; PCFORMER_DEBUG=1 or --debug shows the traceback).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys

from absl import app, flags

from pcformer.distill import cli as distill_cli  # light: absl and DistillConfig, no JAX

FLAGS = flags.FLAGS

# -- flags ----------------------------------------------------------------------------------
# Model and input
flags.DEFINE_string("model", "minilm", "A named model ('minilm') or a Hugging Face checkpoint folder (BERT, GPT-2, "
                    "LLaMA, ViT); cost: also a preset (bert-base, gpt2-xl, llama-7b, ...) or a config.json.")
flags.DEFINE_string("text", "Private inference keeps the prompt secret.", "BERT: the client's sentence.")
flags.DEFINE_string("prompt", "Once upon a time", "Decoders (GPT-2, LLaMA): the client's prompt.")
flags.DEFINE_string("image", None, "ViT classifiers: the client's pixel values as a .npy file [C, H, W] "
                    "(after the checkpoint's image processor).")
flags.DEFINE_integer("max_new_tokens", 4, "Decoders: tokens to generate privately (greedy).", lower_bound=1)
flags.DEFINE_string("policy", "mpcformer", "A named policy (exact, mpcformer, puma, paper) or a JSON/YAML policy "
                    "file; run: several comma-separated to compare them.")
flags.DEFINE_integer("seq_len", 32, "Sequence length the client pads its tokens to.", lower_bound=1)
# MPC settings
flags.DEFINE_enum("ring_bits", "64", ["32", "64"], "Ring Z_2^l of the shares.")
flags.DEFINE_integer("frac_bits", 16, "Fixed-point fraction bits.", lower_bound=1)
flags.DEFINE_enum("trunc_mode", "dealer", ["dealer", "local"], "Truncation protocol.")
flags.DEFINE_enum("mode", "protocol", ["protocol", "ideal"], "Run every message, or each op's functionality (same ledger).")
flags.DEFINE_integer("seed", None, "Dealer / PRG seed. Unset (default): fresh OS entropy every "
                     "run. Set: reproducible and NOT secure (masks repeat across runs). distill: "
                     "data order and initialisation (default 0).")
flags.DEFINE_integer("compare_bits", None, "fss: SIGMA's reduced-width comparisons on this many "
                     "bits (every compared value |x| < 2^(n-2) in ring units; --check_overflow "
                     "checks it). Unset: the whole ring.")
flags.DEFINE_boolean("check_overflow", False, "Detect fixed-point overflow and report its location (slower).")
# Outputs of `run`
flags.DEFINE_float("bandwidth", None, "A custom network's bandwidth in bits per second (with --rtt).")
flags.DEFINE_float("rtt", None, "A custom network's round-trip time in seconds (with --bandwidth).")
flags.DEFINE_string("report", None, "Write the full JSON report here (several policies: one file each, "
                    "NAME.POLICY.json).")
flags.DEFINE_string("dump_ir", None, "Write the protocol IR here (several policies: one file each).")
flags.DEFINE_string("trace", None, "Write a Chrome/Perfetto trace-event timeline here (several policies: one file each).")
flags.DEFINE_string("trace_network", "lan", "Network the --trace timeline is drawn for: lan, wan or custom.")
flags.DEFINE_string("plot", None, "Write a PNG plot of bytes and rounds by layer and operator class (needs matplotlib).")
flags.DEFINE_integer("scope_depth", 3, "Module-path components per row of the by-module table.", lower_bound=1)
flags.DEFINE_integer("max_rows", 40, "Rows printed per table (the JSON report has all).", lower_bound=1)
# cost
flags.DEFINE_integer("new_tokens", 1, "Decoders: tokens generated after a --seq_len prompt.", lower_bound=1)
# a string checked when the command runs (MPCConfig): the families live in the runtime's protocol
# registry, and this module stays light (no JAX import for help and flag errors)
flags.DEFINE_string("protocols", "beaver", "Protocol family, one registered in runtime/protocols/registry.py "
                    "('beaver': dealer-assisted Beaver triples; 'fss': function secret sharing for "
                    "comparisons and truncation, docs/fss.md).")
# Two processes (`party`, `run --processes=2`; pcformer/party_cli.py)
flags.DEFINE_enum("role", None, ["server", "client", "dealer"], "party: which role this process is "
                  "(the server holds the weights, the client the text; the dealer prepares each "
                  "party's correlated randomness before the run).")
flags.DEFINE_string("dealer_material", None, "party: --role=server|client: this party's material "
                    "file from the dealer; --role=dealer: the folder it writes server.npz and "
                    "client.npz to (give each party only its own).")
flags.DEFINE_string("coordinator", None, "party: HOST:PORT of the coordinator, which the server's "
                    "process hosts (the client connects to it).")
flags.DEFINE_integer("processes", 1, "run: 1 simulates both parties in this process; 2 starts a "
                     "server and a client process on this host (BERT).", lower_bound=1, upper_bound=2)
flags.DEFINE_integer("peer_timeout", 60, "Two processes: seconds a step may wait for a silent peer "
                     "before this process gives up with an error.", lower_bound=1)
flags.DEFINE_integer("connect_timeout", 120, "Two processes: seconds to reach the peer and agree "
                     "on the run.", lower_bound=1)
flags.DEFINE_integer("model_parallel", 1, "Two processes: devices per party process, the "
                     "server's weight matrices split over them (tensor parallel; docs/"
                     "distributed.md).", lower_bound=1)
flags.DEFINE_enum("job", "model", ["model", "mlp"], "Two processes: the --model (BERT: sentence "
                  "embedding of --text; GPT-2/LLaMA: next-token logits of --prompt; ViT: class "
                  "logits of --image) or a built-in tiny MLP (a quick check of the pair).")
# every command
flags.DEFINE_boolean("compile_cache", True, "Keep compiled XLA programs in a per-user cache folder "
                     "(also PCFORMER_COMPILE_CACHE=0 to turn off, or =<folder>).")
flags.DEFINE_boolean("debug", False, "Show the traceback of an internal error (or set PCFORMER_DEBUG=1).")

# distill: data, out, resume and one flag per DistillConfig field (seq_len and seed shared)
_DISTILL = distill_cli.define_flags(FLAGS)

DEBUG_ENV = "PCFORMER_DEBUG"
_MPC = ("ring_bits", "frac_bits", "trunc_mode", "mode", "seed", "check_overflow", "protocols",
        "compare_bits")
COMMON = ("compile_cache", "debug")
_TWO = ("processes", "peer_timeout", "connect_timeout", "job", "model_parallel")


@dataclasses.dataclass(frozen=True)
class Command:
    """One command: its one-line summary, the flags it reads, an example, and where its code is
    ("module:function", imported only when it runs)."""

    name: str
    summary: str
    flags: tuple[str, ...]
    example: str
    target: str


COMMANDS: dict[str, Command] = {c.name: c for c in (
    Command("run", "Private inference of one input under one or more policies: cost by module and "
            "op, totals, latency on LAN/WAN, fidelity.",
            ("model", "text", "prompt", "image", "max_new_tokens", "policy", "seq_len", *_MPC, "bandwidth",
             "rtt", "report", "dump_ir", "trace", "trace_network", "plot", "scope_depth", "max_rows",
             *_TWO),
            'pcformer run --model=minilm --text="A private sentence." --policy=mpcformer,exact --seq_len=32',
            "pcformer.cli_run:main"),
    Command("distill", "Fine-tune a BERT model by distillation so a policy's approximations cost "
            "little accuracy; saves a checkpoint folder that `pcformer run --model` takes.",
            ("model", "policy", *_DISTILL),
            "pcformer distill --model=minilm --policy=mpcformer --steps=2000 --out=distilled/",
            "pcformer.distill.cli:main"),
    Command("cost", "A model's static cost from its shapes alone (no weights, no simulation): bytes "
            "per party, rounds, LAN/WAN, per module; decoders: prefill, per token and total.",
            ("model", "seq_len", "new_tokens", "policy", "protocols", "ring_bits", "frac_bits",
             "trunc_mode", "compare_bits", "bandwidth", "rtt",
             "report", "scope_depth", "max_rows"),
            "pcformer cost --model=llama-7b --seq_len=128 --new_tokens=1 --policy=exact",
            "pcformer.cli_run:cost"),
    Command("party", "One party of a two-process run: the server (weights) or the client (text, "
            "prompt or image) in its own process, joined over jax.distributed, each with only its "
            "own dealer material (--role=dealer prepares it); the client prints its result.",
            ("role", "coordinator", "dealer_material", "model", "text", "prompt", "image",
             "max_new_tokens", "seq_len",
             "policy", "ring_bits", "frac_bits", "trunc_mode", "protocols", "compare_bits", "seed",
             "peer_timeout", "connect_timeout", "job", "model_parallel"),
            "pcformer party --role=server --coordinator=127.0.0.1:7777 --dealer_material=server.npz "
            "--model=minilm",
            "pcformer.party_cli:party"),
)}

_HELP = ("-h", "--help", "-help", "--helpshort", "-helpshort", "-?")


class UsageError(ValueError):
    """A bad command line: printed as one line, exit status 2."""


def version() -> str:
    """The installed package's version (package metadata)."""
    from importlib import metadata
    try:
        return metadata.version("pcformer")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _default(flag) -> str:
    d = flag.default
    if d is None:
        return "none"
    if isinstance(d, str):
        return repr(d) if (d == "" or " " in d) else d
    if isinstance(d, tuple):
        return ",".join(map(str, d)) or "''"
    return str(d)


def command_help(cmd: Command) -> str:
    """A command's help: summary, its flags with defaults and meanings, an example."""
    lines = [f"usage: pcformer {cmd.name} [--flag=value ...]", "", cmd.summary, "", "flags:"]
    for name in (*cmd.flags, *COMMON):
        f = FLAGS[name]
        if f.boolean:
            left = f"--[no]{name} (default {'yes' if f.default else 'no'})"
        else:
            left = f"--{name}={_default(f)}"
        lines.append(f"  {left:38s} {f.help}")
    lines += ["", "example:", f"  {cmd.example}"]
    return "\n".join(lines)


def top_help() -> str:
    """The commands, how to get each one's help, an example each."""
    width = max(map(len, COMMANDS))
    lines = [f"pcformer {version()}: compile JAX/Flax transformers into simulated two-party (MPC) "
             "programs, with an exact communication ledger.", "",
             "usage: pcformer <command> [--flag=value ...]", "", "commands:"]
    lines += [f"  {c.name:{width}s}  {c.summary}" for c in COMMANDS.values()]
    lines += ["", "  pcformer <command> --help   that command's flags, defaults and an example",
              "  pcformer --version", "", "examples:"]
    lines += [f"  {c.example}" for c in COMMANDS.values()]
    return "\n".join(lines)


def _early(argv: list[str]) -> int | None:
    """Help and version, answered before absl parses anything (and without JAX)."""
    args = argv[1:]
    if "--version" in args or "-V" in args:
        print(f"pcformer {version()}")
        return 0
    if any(a in _HELP for a in args):
        cmds = [a for a in args if a in COMMANDS]
        print(command_help(COMMANDS[cmds[0]]) if cmds else top_help())
        return 0
    return None


def _check_flags(cmd: Command) -> None:
    """A flag another command reads, given to this one, is a mistake: say so."""
    ours = set(cmd.flags) | set(COMMON)
    given = [n for n in sorted(set(FLAGS)) if n in _ALL_OURS and FLAGS[n].present and n not in ours]
    if given:
        raise UsageError(f"--{given[0]} is not a flag of `pcformer {cmd.name}` "
                         f"(see pcformer {cmd.name} --help)")


_ALL_OURS = frozenset(n for c in COMMANDS.values() for n in c.flags) | frozenset(COMMON)


def _user_errors() -> tuple:
    """Exceptions that mean bad input, not a bug: one line, exit 2."""
    errs = [UsageError, OSError, UnicodeError]
    for mod, name in (("pcformer.inference", "InputError"), ("pcformer.models.checkpoint", "CheckpointError"),
                      ("pcformer.compiler.policies", "PolicyError"), ("pcformer.distill", "DistillError"),
                      ("pcformer.presets", "CostError"),
                      # a program or policy the protocols cannot run (it names the op and line)
                      ("pcformer.compiler.lower_base", "LoweringError")):
        m = sys.modules.get(mod)   # a module never imported cannot have raised its error
        if m is not None and hasattr(m, name):
            errs.append(getattr(m, name))
    return tuple(errs)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        text = f"{e.filename}: {e.strerror}"
    return " ".join(text.split()) if text else type(e).__name__


def main(argv) -> int:
    args = argv[1:]
    if len(args) != 1 or args[0] not in COMMANDS:
        print(f"pcformer: error: expected one command, {' or '.join(COMMANDS)}; got "
              f"{' '.join(args) or 'none'} (see pcformer --help)", file=sys.stderr)
        return 2
    cmd = COMMANDS[args[0]]
    debug = FLAGS.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        _check_flags(cmd)
        if not FLAGS.compile_cache:
            from . import compile_cache
            compile_cache.disable()
        from absl import logging
        logging.set_verbosity(logging.WARNING)  # keep JAX's backend INFO lines off the screen
        module, func = cmd.target.split(":")
        return int(getattr(importlib.import_module(module), func)() or 0)
    except KeyboardInterrupt:
        print("\npcformer: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns exceptions into messages
        sys.stderr.flush()
        if isinstance(e, _user_errors()):
            print(f"pcformer: error: {_one_line(e)}", file=sys.stderr)
            return 2
        if debug:
            raise
        print(f"pcformer: internal error: {type(e).__name__}: {_one_line(e)} (a bug; run again "
              f"with {DEBUG_ENV}=1 or --debug for the traceback)", file=sys.stderr)
        return 3


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's parser, with a bad flag (unknown name, a value that does not parse) as one line."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"pcformer: error: {_one_line(e)} (see pcformer --help)", file=sys.stderr)
        sys.exit(2)


def run_main():
    """Console-script entry point."""
    try:
        status = _early(sys.argv)
        if status is not None:
            sys.exit(status)
        app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
    except BrokenPipeError:  # `pcformer --help | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    run_main()
