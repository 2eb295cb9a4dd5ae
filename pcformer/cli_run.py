"""`pcformer run` and `pcformer cost`: the work behind the command table in pcformer/cli.py
(`pcformer distill` is pcformer/distill/cli.py).

Every check a user's input can fail is made before anything expensive starts (`_plan` before
the model loads, `_check_model` before compiling), so a bad flag costs a second, not a run, and
no output file is half-written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from .cli import FLAGS, UsageError
from .cli_output import (fidelity_lines, job_to_json, not_distilled_note, print_generation,
                         print_report, summary_table, wall_time_line)
from .progress import Progress

_START = time.perf_counter()  # the wall-time line counts start-up (imports) too


@dataclasses.dataclass(frozen=True)
class Plan:
    """What `pcformer run` will do, settled from the flags before any model loads."""

    config: object
    nets: dict
    policies: tuple            # (display name, Policy)
    outputs: dict              # policy name -> {"report"|"dump_ir"|"trace": path}


def _config():
    from .config import MPCConfig
    try:
        return MPCConfig(ring_bits=int(FLAGS.ring_bits), frac_bits=FLAGS.frac_bits,
                         trunc_mode=FLAGS.trunc_mode, seed=FLAGS.seed,
                         check_overflow=FLAGS.check_overflow, mode=FLAGS.mode,
                         protocols=FLAGS.protocols, compare_bits=FLAGS.compare_bits)
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None


def _networks() -> dict:
    from .config import NETWORKS, Network
    nets = dict(NETWORKS)
    if (FLAGS.bandwidth is None) != (FLAGS.rtt is None):
        raise UsageError("--bandwidth and --rtt go together")
    if FLAGS.bandwidth is not None:
        try:
            nets["custom"] = Network(bandwidth=FLAGS.bandwidth, rtt=FLAGS.rtt, name="custom")
        except ValueError as e:
            raise UsageError(str(e)) from None
    return nets


def per_policy_path(path: str, policy: str, several: bool) -> str:
    """One output file per policy when there are several: r.json -> r.mpcformer.json."""
    if not several:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.{policy}{p.suffix}"))


def check_writable(path: str, flag: str) -> None:
    """An output path must be a file we can create: not a folder, in an existing writable one."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"--{flag}={path} is a folder; give a file name")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--{flag}={path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise UsageError(f"--{flag}={path}: not writable")


def _text_flag(name: str) -> None:
    try:
        getattr(FLAGS, name).encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"--{name} is not valid UTF-8 text") from None


def plan() -> Plan:
    """Everything the flags alone decide, checked up front."""
    from pcformer.compiler import policies
    cfg = _config()
    nets = _networks()
    pols = policies.load_many(FLAGS.policy)
    names = [p.name for p in pols]
    if len(set(names)) != len(names):
        raise UsageError(f"--policy names a policy twice: {', '.join(names)}")
    if FLAGS.trace and FLAGS.trace_network not in nets:
        raise UsageError(f"--trace_network={FLAGS.trace_network}: use one of {sorted(nets)}")
    several = len(pols) > 1
    for flag in ("report", "dump_ir", "trace"):
        if getattr(FLAGS, flag) and Path(getattr(FLAGS, flag)).is_dir():
            raise UsageError(f"--{flag}={getattr(FLAGS, flag)} is a folder; give a file name")
    outputs = {}
    for name in names:
        outs = {}
        for flag in ("report", "dump_ir", "trace"):
            if getattr(FLAGS, flag):
                outs[flag] = per_policy_path(getattr(FLAGS, flag), name, several)
                check_writable(outs[flag], flag)
        outputs[name] = outs
    if FLAGS.plot:
        check_writable(FLAGS.plot, "plot")
        import importlib.util
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install matplotlib")
    for flag in ("text", "prompt"):
        _text_flag(flag)
    return Plan(cfg, nets, tuple(zip(names, pols)), outputs)


_GPT2_ONLY, _BERT_ONLY = ("prompt", "max_new_tokens"), ("text",)


def check_model(model) -> None:
    """Flags that do not fit the loaded model: refused before compiling anything."""
    from .inference import DECODERS
    if model.kind == "vit":
        return _check_vit(model)
    if model.kind not in ("bert", *DECODERS):
        raise UsageError(f"{FLAGS.model} is a {model.kind} model: `pcformer run` takes text models "
                         f"(bert, {', '.join(DECODERS)}) and ViT classifiers; use `pcformer cost "
                         f"--model={FLAGS.model}` or the Python API (pcformer.compile) for it")
    wrong = _GPT2_ONLY if model.kind == "bert" else _BERT_ONLY
    given = [f for f in (*wrong, "image") if FLAGS[f].present]
    if given:
        right = "--text" if model.kind == "bert" else "--prompt and --max_new_tokens"
        whose = {"image": "ViT classifiers", "text": "BERT models"}.get(given[0], "GPT-2 models (and other decoders)")
        raise UsageError(f"--{given[0]} is for {whose}; {FLAGS.model} is a {model.kind} model "
                         f"(use {right})")
    c = model.config
    limit = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None)
    if limit is not None and FLAGS.seq_len > limit:
        raise UsageError(f"--seq_len={FLAGS.seq_len} is more than the {limit} positions of "
                         f"{FLAGS.model}")
    from .inference import check_prompt, tokenize_padded
    if model.kind == "bert":
        tokenize_padded(model, [FLAGS.text], FLAGS.seq_len)   # too long, or ids beyond the vocabulary
    else:
        check_prompt(model, FLAGS.prompt, FLAGS.max_new_tokens, FLAGS.seq_len)


def _check_vit(model):
    """A ViT classifier takes --image only; its pixels are checked here, before compiling."""
    from .models import vit
    if not isinstance(model.module, vit.ViTForImageClassification):
        raise UsageError(f"{FLAGS.model} is a ViT without a classification head: `pcformer run` "
                         f"classifies images; use `pcformer cost --model={FLAGS.model}` or the "
                         f"Python API (pcformer.compile) for its hidden states")
    given = [f for f in (*_GPT2_ONLY, *_BERT_ONLY) if FLAGS[f].present]
    if given:
        raise UsageError(f"--{given[0]} is for text models; {FLAGS.model} is a ViT classifier "
                         f"(use --image=FILE.npy)")
    if FLAGS.image is None:
        raise UsageError(f"{FLAGS.model} is a ViT classifier: give the client's image as "
                         f"--image=FILE.npy (pixel values [C, H, W] after its image processor)")
    from .classify import load_image
    load_image(FLAGS.image, model)


def _describe(model, policy: str, cfg, seq_len: int) -> str:
    c = model.config
    if model.kind == "vit":   # its sequence is the image's patches and the class token
        seq_len = (c.image_size // c.patch_size) ** 2 + 1
    layers = getattr(c, "num_hidden_layers", None) or getattr(c, "n_layer", "?")
    hidden = getattr(c, "hidden_size", None) or getattr(c, "n_embd", "?")
    return (f"model     {FLAGS.model} ({model.kind}, {layers} layers, hidden {hidden})\n"
            f"policy    {policy}\n"
            f"ring      Z_2^{cfg.ring_bits}, {cfg.frac_bits} fraction bits, truncation {cfg.trunc_mode}, "
            f"mode {cfg.mode}, seq_len {seq_len}")


def _write_outputs(job_json: dict, job, outs: dict, nets) -> None:
    """Each output written whole (a temporary file renamed), so nothing is left half-written."""
    if "report" in outs:
        _write_text(outs["report"], json.dumps(job_json, indent=1))
        print(f"report    {outs['report']}")
    if "dump_ir" in outs:
        _write_text(outs["dump_ir"], job.program.ir_text())
        print(f"IR        {outs['dump_ir']}")
    if "trace" in outs:
        from .timeline import chrome_trace
        trace = chrome_trace(job.report.entries, nets[FLAGS.trace_network],
                             title=f"pcformer {FLAGS.model} {job.policy}")
        _write_text(outs["trace"], json.dumps(trace))
        print(f"trace     {outs['trace']} (open in ui.perfetto.dev; network {FLAGS.trace_network})")


def _write_text(path: str, text: str) -> None:
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    """`pcformer run`."""
    if FLAGS.processes == 2:
        from .party_cli import run_two
        return run_two()
    p = plan()
    from . import models
    from .inference import private_embedding, private_generation

    with Progress("load model") as bar:
        model = models.load(FLAGS.model)
        bar.done()
    check_model(model)
    jobs = []
    for name, pol in p.policies:
        print(_describe(model, name, p.config, FLAGS.seq_len), flush=True)
        with Progress(f"{name}") as bar:
            if model.kind == "vit":
                from .classify import load_image, private_classification
                job = private_classification(model, load_image(FLAGS.image, model), policy=pol,
                                             config=p.config, step=bar.stage, detail=bar.detail)
            elif model.kind == "bert":
                job = private_embedding(model, FLAGS.text, policy=pol, config=p.config,
                                        seq_len=FLAGS.seq_len, step=bar.stage, detail=bar.detail)
            else:
                job = private_generation(model, FLAGS.prompt, FLAGS.max_new_tokens, policy=pol,
                                         config=p.config, seq_len=FLAGS.seq_len, step=bar.stage,
                                         detail=bar.detail)
            bar.done()
        job.policy = name
        jobs.append(job)
        same = print_report(job.report, job.static_report, p.nets, FLAGS.scope_depth, FLAGS.max_rows)
        if model.kind == "vit":
            print(f"\nPrivate class (revealed to the client): {job.label()}  "
                  f"(exact model: {job.label(job.exact)})")
        elif model.kind != "bert":
            print_generation(job, p.nets)
        print("\nFidelity of the private output")
        print("\n".join(fidelity_lines(job.fidelity)))
        note = not_distilled_note(model, pol, job.fidelity)
        if note:
            print(note)
        print("\n" + wall_time_line(job.times, time.perf_counter() - _START))
        from . import compile_cache
        print(compile_cache.describe())
        _write_outputs(job_to_json(job, p.nets, same, FLAGS.model), job, p.outputs[name], p.nets)
        print(flush=True)
    if len(jobs) > 1:
        print("Summary (per run; bytes: the busier party's online bytes)")
        print(summary_table(jobs, p.nets))
    if FLAGS.plot:
        from .plots import plot_policies
        title = f"{FLAGS.model}, seq_len {FLAGS.seq_len}, {p.config.mode} mode, Z_2^{p.config.ring_bits}"
        plot_policies([(j.policy, j.report) for j in jobs], FLAGS.plot, title=title)
        print(f"plot      {FLAGS.plot}")
    return 0


def cost() -> int:
    """`pcformer cost`."""
    from . import cost_command
    from pcformer.compiler import policies
    if "," in FLAGS.policy:
        raise UsageError("cost takes one --policy (run it once per policy)")
    policies.load(FLAGS.policy)  # a bad policy (or file) is refused before any work
    if FLAGS.report:
        check_writable(FLAGS.report, "report")
    return cost_command.main(FLAGS.model, FLAGS.seq_len, FLAGS.new_tokens, policy=FLAGS.policy,
                             config=_config(), nets=_networks(), report=FLAGS.report,
                             scope_depth=FLAGS.scope_depth, max_rows=FLAGS.max_rows,
                             protocols=FLAGS.protocols)


if __name__ == "__main__":
    sys.exit(main())
