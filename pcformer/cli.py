"""The `pcformer` command line (absl): private inference traces and distillation.

    pcformer run --model=minilm --text="A private sentence." --policy=mpcformer --seq_len=128
    pcformer run --model=path/to/gpt2 --prompt="Once upon a time" --max_new_tokens=4
    pcformer distill --model=minilm --policy=mpcformer --steps=2000 --out=distilled/

Also `python -m pcformer ...`. Bad flags or inputs print one line and exit with status 2.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

from absl import app, flags

FLAGS = flags.FLAGS

COMMANDS = ("run", "distill", "cost")
_TIME_LABELS = {"compile_s": "front end (trace, rewrite, lower)", "xla_compile_s": "XLA compile",
                "simulate_s": "simulate", "exact_s": "exact model"}

flags.DEFINE_string("model", "minilm", "A named model ('minilm') or a Hugging Face checkpoint folder (BERT or GPT-2); "
                    "cost: also a preset (bert-base, gpt2-xl, ...) or a config.json.")
flags.DEFINE_string("text", "Private inference keeps the prompt secret.", "BERT: the client's sentence.")
flags.DEFINE_string("prompt", "Once upon a time", "GPT-2: the client's prompt.")
flags.DEFINE_integer("max_new_tokens", 4, "GPT-2: tokens to generate privately (greedy).", lower_bound=1)
flags.DEFINE_string("policy", "mpcformer", "A named policy (exact, mpcformer, puma, paper), a JSON/YAML policy file, "
                    "or several comma-separated (for --plot).")
flags.DEFINE_integer("seq_len", 32, "Sequence length the client pads its tokens to.", lower_bound=1)
flags.DEFINE_enum("ring_bits", "64", ["32", "64"], "Ring Z_2^l of the shares.")
flags.DEFINE_integer("frac_bits", 16, "Fixed-point fraction bits.", lower_bound=1)
flags.DEFINE_enum("trunc_mode", "dealer", ["dealer", "local"], "Truncation protocol.")
flags.DEFINE_enum("mode", "protocol", ["protocol", "ideal"], "Run every message, or each op's functionality (same ledger).")
flags.DEFINE_integer("seed", 0, "Dealer / PRG seed.")
flags.DEFINE_boolean("check_overflow", False, "Detect fixed-point overflow and report its location (slower).")
flags.DEFINE_float("bandwidth", None, "A custom network's bandwidth in bits per second (with --rtt).")
flags.DEFINE_float("rtt", None, "A custom network's round-trip time in seconds (with --bandwidth).")
flags.DEFINE_string("report", None, "Write the full JSON report here.")
flags.DEFINE_string("dump_ir", None, "Write the protocol IR here.")
flags.DEFINE_string("trace", None, "Write a Chrome/Perfetto trace-event timeline here.")
flags.DEFINE_string("trace_network", "lan", "Network the --trace timeline is drawn for: lan, wan or custom.")
flags.DEFINE_string("plot", None, "Write a PNG plot of bytes and rounds by layer and operator class (needs matplotlib).")
flags.DEFINE_integer("scope_depth", 3, "Module-path components per row of the by-module table.", lower_bound=1)
flags.DEFINE_integer("max_rows", 40, "Rows printed per table (the JSON report has all).", lower_bound=1)
# distill
flags.DEFINE_string("data", None, "distill: a text file with one example per line (default: the built-in corpus).")
flags.DEFINE_integer("steps", None, "distill: training steps (default: DistillConfig's).", lower_bound=1)
flags.DEFINE_string("out", None, "distill: output checkpoint folder.")
flags.DEFINE_float("lr", None, "distill: peak learning rate of AdamW (default: DistillConfig's).")
flags.DEFINE_integer("warmup", None, "distill: linear warm-up steps (default: DistillConfig's).", lower_bound=0)
flags.DEFINE_integer("batch_size", None, "distill: examples a step (default: DistillConfig's).", lower_bound=1)
flags.DEFINE_string("length_buckets", None, "distill: shorter padded lengths for batches of short examples, "
                    "comma-separated (empty: none; default: DistillConfig's).")
flags.DEFINE_string("resume", None, "distill: a saved state file or output folder to continue from.")
# cost (pcformer/cost_command.py holds the command)
flags.DEFINE_integer("new_tokens", 1, "cost: decoders: tokens generated after a --seq_len prompt.", lower_bound=1)
flags.DEFINE_enum("protocols", "beaver", ["beaver"], "cost: protocol family (dealer-assisted Beaver triples).")
flags.DEFINE_boolean("compile_cache", True, "Keep compiled XLA programs in a per-user cache folder "
                     "(also PCFORMER_COMPILE_CACHE=0 to turn off, or =<folder>).")


class UsageError(ValueError):
    """A bad command line: printed as one line."""


def _config():
    from .config import MPCConfig
    return MPCConfig(ring_bits=int(FLAGS.ring_bits), frac_bits=FLAGS.frac_bits,
                     trunc_mode=FLAGS.trunc_mode, seed=FLAGS.seed,
                     check_overflow=FLAGS.check_overflow, mode=FLAGS.mode)


def _networks():
    from .config import NETWORKS, Network
    nets = dict(NETWORKS)
    if (FLAGS.bandwidth is None) != (FLAGS.rtt is None):
        raise UsageError("--bandwidth and --rtt go together")
    if FLAGS.bandwidth is not None:
        nets["custom"] = Network(bandwidth=FLAGS.bandwidth, rtt=FLAGS.rtt, name="custom")
    return nets


def _policies(spec: str) -> list[str]:
    names = [p.strip() for p in spec.split(",") if p.strip()]
    if not names:
        raise UsageError("--policy is empty")
    for n in names:
        from .inference import load_policy
        load_policy(n)  # fails early with the list of valid names
    return names


@contextlib.contextmanager
def _progress(total: int, desc: str):
    """A progress bar on stderr that appears only for runs longer than a moment."""
    from tqdm import tqdm
    bar = tqdm(total=total, desc=desc, delay=1.0, leave=False, file=sys.stderr,
               bar_format="{desc} [{n}/{total}, {elapsed}]")
    started = []

    def step(label: str):
        if started:
            bar.update(1)
        started.append(label)
        bar.set_description_str(f"{desc}: {label}")

    try:
        yield step
    finally:
        bar.update(total - bar.n)
        bar.close()


def _describe(model, policy: str, cfg, seq_len: int) -> str:
    c = model.config
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", "?")
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", "?")
    where = FLAGS.model
    return (f"model     {where} ({model.kind}, {layers} layers, hidden {hidden})\n"
            f"policy    {policy}\n"
            f"ring      Z_2^{cfg.ring_bits}, {cfg.frac_bits} fraction bits, truncation {cfg.trunc_mode}, "
            f"mode {cfg.mode}, seq_len {seq_len}")


def print_report(report, cost, nets, out=print):
    from . import tables
    j = report.to_json(scope_depth=FLAGS.scope_depth)
    out("\nCost by module (bytes sent by each party; rounds = depth levels the module occupies)")
    by_module = sorted(j["by_scope"], key=lambda r: _natural(r["name"]))
    out(tables.cost_rows(by_module, "module", FLAGS.max_rows))
    out("\nCost by protocol op")
    out(tables.cost_rows(j["by_op"], "op", FLAGS.max_rows))
    same = cost.to_json()["totals"] == j["totals"]
    out(f"\nTotals (rounds = critical-path depth; static cost == measured ledger: {'yes' if same else 'NO'})")
    out(tables.totals_table(j["totals"]))
    out("\nLatency estimate (rounds x RTT + bytes of the busier direction / bandwidth)")
    rows = []
    for name, net in nets.items():
        e = report.estimate(net)
        rows.append([f"{name} ({net.bandwidth / 1e9:g} Gbps, {net.rtt * 1e3:g} ms RTT)",
                     tables.human_seconds(e["setup"]), tables.human_seconds(e["offline"]),
                     tables.human_seconds(e["online"]), tables.human_seconds(e["per_run"])])
    out(tables.render(["network", "setup (once)", "offline", "online", "per run"], rows))
    return same


def _natural(name: str):
    """Module paths in reading order: embeddings, layer_0 ... layer_10, then the rest."""
    import re
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name or "~")]


def _fidelity_lines(fid: dict) -> list[str]:
    lines = []
    for key, label in (("vs_plaintext", "vs plaintext rewritten program"), ("vs_exact", "vs exact model")):
        f = fid[key]
        if "reference" in f:
            label = f"vs exact ({f['reference']})"
        lines.append(f"  {label:32s} max abs {f['max_abs']:.3g}  mean abs {f['mean_abs']:.3g}  "
                     f"cosine {f['cosine_mean']:.6f}")
    return lines


def _write_outputs(job_json: dict, job, nets):
    if FLAGS.report:
        Path(FLAGS.report).write_text(json.dumps(job_json, indent=1))
        print(f"report    {FLAGS.report}")
    if FLAGS.dump_ir:
        Path(FLAGS.dump_ir).write_text(str(job.program.ir))
        print(f"IR        {FLAGS.dump_ir}")
    if FLAGS.trace:
        from .timeline import write_chrome_trace
        if FLAGS.trace_network not in nets:
            raise UsageError(f"--trace_network={FLAGS.trace_network}: use one of {sorted(nets)}")
        write_chrome_trace(FLAGS.trace, job.report.entries, nets[FLAGS.trace_network],
                           title=f"pcformer {FLAGS.model} {job.policy}")
        print(f"trace     {FLAGS.trace} (open in ui.perfetto.dev; network {FLAGS.trace_network})")


def cmd_run() -> int:
    from . import models
    from .inference import private_embedding, private_generation

    cfg = _config()
    nets = _networks()
    names = _policies(FLAGS.policy)
    model = models.load(FLAGS.model)
    jobs = []
    for policy in names:
        print(_describe(model, policy, cfg, FLAGS.seq_len))
        with _progress(5, f"pcformer {policy}") as step:
            step("load model")
            if model.kind == "bert":
                job = private_embedding(model, FLAGS.text, policy=policy, config=cfg,
                                        seq_len=FLAGS.seq_len, step=step)
            else:
                job = private_generation(model, FLAGS.prompt, FLAGS.max_new_tokens, policy=policy,
                                         config=cfg, seq_len=FLAGS.seq_len, step=step)
        jobs.append(job)
        same = print_report(job.report, job.static_report, nets)
        if model.kind == "gpt2":
            print(f"\nGenerated privately: {job.text!r}  (token ids {job.token_ids})")
            print(f"  plaintext greedy:  {job.plaintext_text!r}  agreement {job.agreement:.0%}")
            per = job.per_token
            print(f"  per generated token: online {per['online_bytes']} bytes per party, "
                  f"{per['online_rounds']} rounds")
        print("\nFidelity of the private output")
        print("\n".join(_fidelity_lines(job.fidelity)))
        print("\nWall time: " + ", ".join(f"{_TIME_LABELS.get(k, k)} {v:.2f} s"
                                          for k, v in job.times.items()))
        from . import compile_cache
        print(compile_cache.describe())
        job_json = job_to_json(job, nets, same)
        if len(names) == 1:
            _write_outputs(job_json, job, nets)
    if FLAGS.plot:
        from .plots import plot_policies
        plot_policies([(j.policy, j.report) for j in jobs], FLAGS.plot)
        print(f"plot      {FLAGS.plot}")
    return 0


def job_to_json(job, nets, static_equals_measured: bool) -> dict:
    """The full JSON report: the measured report's to_json() plus run settings and fidelity."""
    import dataclasses
    j = job.report.to_json()
    j["static_totals"] = job.static_report.to_json()["totals"]
    j["static_equals_measured"] = static_equals_measured
    j["model"] = FLAGS.model
    j["policy"] = job.policy
    j["config"] = dataclasses.asdict(job.config)
    j["seq_len"] = job.seq_len
    j["estimate"] = {name: job.report.estimate(net) for name, net in nets.items()}
    j["fidelity"] = job.fidelity
    j["wall_time"] = job.times
    if hasattr(job, "token_ids"):
        j["generated"] = {"token_ids": list(map(int, job.token_ids)), "text": job.text,
                          "plaintext_token_ids": list(map(int, job.plaintext_ids)),
                          "agreement": job.agreement, "per_token": job.per_token}
    return j


def cmd_cost() -> int:
    from . import cost_command
    return cost_command.main(FLAGS.model, FLAGS.seq_len, FLAGS.new_tokens, policy=FLAGS.policy,
                             config=_config(), nets=_networks(), report=FLAGS.report,
                             scope_depth=FLAGS.scope_depth, max_rows=FLAGS.max_rows,
                             protocols=FLAGS.protocols)


def cmd_distill() -> int:
    from . import distill
    buckets = FLAGS.length_buckets
    return distill.run_cli(model=FLAGS.model, policy=FLAGS.policy, data=FLAGS.data,
                           out=FLAGS.out, resume=FLAGS.resume, steps=FLAGS.steps,
                           seq_len=FLAGS.seq_len, seed=FLAGS.seed, lr=FLAGS.lr,
                           warmup=FLAGS.warmup, batch_size=FLAGS.batch_size,
                           length_buckets=None if buckets is None else distill.parse_ints(buckets))


def _known_errors():
    """Errors that mean bad input, not a bug: printed as one line (a bug keeps its traceback)."""
    from .models import CheckpointError
    return (UsageError, ValueError, OSError, CheckpointError)


def main(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # keep JAX's backend INFO lines off the user's screen
    args = argv[1:]
    if len(args) != 1 or args[0] not in COMMANDS:
        print(f"pcformer: error: expected one command, {' or '.join(COMMANDS)}; got {' '.join(args) or 'none'} "
              f"(see pcformer --helpshort)", file=sys.stderr)
        return 2
    try:
        if not FLAGS.compile_cache:
            from . import compile_cache
            compile_cache.disable()
        return {"run": cmd_run, "distill": cmd_distill, "cost": cmd_cost}[args[0]]()
    except _known_errors() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"pcformer: error: {msg}", file=sys.stderr)
        return 2


def run_main():
    """Console-script entry point."""
    app.run(lambda argv: sys.exit(main(argv)))


if __name__ == "__main__":
    run_main()
