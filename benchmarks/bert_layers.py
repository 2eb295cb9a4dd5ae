"""Private BERT encoder layers: compile time, run time, plaintext ratio, bytes and rounds.

    python benchmarks/bert_layers.py [--layers 1] [--seq_len 128] [--policy mpcformer,exact]
                                     [--mode protocol|ideal] [--repeats 3] [--mesh]
                                     [--model_parallel N] [--dealer simulated|separated]
                                     [--protocols beaver|fss] [--op_times]

Builds an all-MiniLM-L6-v2-shaped encoder (`pcformer.models.bert.BertEncoder`, hidden 384,
12 heads, MLP 1536, random weights) with `--layers` layers. The weights belong to the server
(party 0), the input hidden states to the client (party 1), the attention mask is public (or
the client's, or absent). For each policy it compiles the encoder with `pcformer.compile`, runs it
once (that call pays XLA compilation), then `--repeats` more times and keeps the best, and times
the plaintext jitted float32 forward of the same model the same way. It prints per layer: bytes
online/offline per party, rounds (critical path depth of the layer's own messages) and steps,
and for the whole program: compile time, run time and run/plaintext ratio, whether the static
cost equals the measured ledger, and the max error vs the rewritten plaintext program.

The LAST line of output is one JSON object with every figure (for tracking over time).
Run time per layer = run time / layers (the layers run inside one jitted program).
--mesh also runs the party-sharded executor (`executor="sharded"`: party p on device p, messages
as collectives; on CPU the script asks XLA for 2 host devices) and reports its compile and run
time beside the in-process executor's, and (with `--executor program`, the same randomness)
whether outputs and ledger agree bit for bit (both runs use the same `--seed`), and XLA's
per-device argument and scratch memory. --model_parallel N adds a `model` axis of N devices per
party and splits the server's weight matrices over it (tensor parallel: docs/distributed.md).
--dealer separated (with --mesh) makes the dealer a third party that deals every sharded run its
own material before it runs (`dealer="separated"`) and reports the dealer's time beside the run's.
--op_times adds one more run in which every protocol op waits for its result, and prints the
slowest ops (name, operator class, shape, seconds, calls): where a policy's time goes.
--protocols picks the protocol family (`MPCConfig.protocols`, one registered in
runtime/protocols/registry.py; "fss": docs/fss.md); the output and the JSON name it.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import time

import os
import sys



def _model_parallel(argv) -> int:
    """--model_parallel N from argv, read before JAX's import (it fixes the host devices)."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--model_parallel", type=int, default=1)
    return early.parse_known_args(argv)[0].model_parallel


if "--mesh" in sys.argv and "xla_force_host_platform_device_count" not in os.environ.get(
        "XLA_FLAGS", ""):   # host devices for the party (x model) axes; must precede JAX's import
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count="
                               f"{2 * _model_parallel(sys.argv[1:])}")

import pcformer  # noqa: F401,E402  first: tunes malloc before JAX starts (pcformer/_allocator.py)
import jax
import jax.numpy as jnp
import numpy as np
from pcformer import _allocator


@dataclasses.dataclass(frozen=True)
class Shape:
    """Encoder shape; defaults are all-MiniLM-L6-v2's (one layer, one sentence of 128 tokens)."""

    layers: int = 1
    seq_len: int = 128
    batch: int = 1
    hidden: int = 384
    heads: int = 12
    intermediate: int = 1536
    act: str = "gelu"


def build(shape: Shape, seed: int = 0):
    """(encoder module, params, hidden states x, boolean key mask) with random weights/inputs."""
    from pcformer.models.bert import BertConfig, BertEncoder

    cfg = BertConfig(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                     num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                     hidden_act=shape.act)
    model = BertEncoder(cfg)
    rng = np.random.default_rng(seed)
    # LayerNorm-scale inputs, like the output of BERT's embedding LayerNorm.
    x = jnp.asarray(rng.standard_normal((shape.batch, shape.seq_len, shape.hidden)), jnp.float32)
    mask = jnp.ones((shape.batch, 1, 1, shape.seq_len), bool)
    params = model.init(jax.random.PRNGKey(seed), x, mask)
    return model, params, x, mask


def forward_fn(model, mask_kind: str):
    """The function handed to the compiler: only the last hidden state is revealed."""
    if mask_kind == "none":
        return lambda params, x: model.apply(params, x, None)[0]
    return lambda params, x, mask: model.apply(params, x, mask)[0]


def best_of(call, repeats: int) -> tuple[float, float]:
    """(first call seconds, best of `repeats` later calls); each call waits for its result."""
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        runs.append(time.perf_counter() - t0)
    return first, min(runs)


def layer_of(scope: str) -> str:
    """'layer_3' for any scope inside encoder layer 3, '' outside every layer."""
    for part in scope.split("/"):
        if re.fullmatch(r"layer_\d+", part):
            return part
    return ""


def per_layer(entries) -> dict:
    """{layer name: {phase: {"bytes": [b0, b1], "rounds": depth span, "steps": n}}}.

    A layer's rounds are the number of distinct critical-path depths its messages occupy
    (the program's rounds are the max depth over all messages, reported separately).
    """
    from pcformer.report import phase_summary
    from pcformer.runtime.ledger import PHASES

    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(layer_of(e.scope), []).append(e)
    return {name: {ph: phase_summary(es, ph, rounds="levels") for ph in PHASES}
            for name, es in sorted(groups.items())}


def bench_policy(shape: Shape, policy: str, args) -> dict:
    import pcformer

    model, params, x, mask = build(shape, args.seed)
    fn = forward_fn(model, args.mask)
    inputs = (params, x) if args.mask == "none" else (params, x, mask)
    owners = (0, 1) if args.mask == "none" else (0, 1, None if args.mask == "public" else 1)
    config = pcformer.MPCConfig(mode=args.mode, trunc_mode=args.trunc_mode,
                                matmul_kernel=args.matmul_kernel, protocols=args.protocols,
                                compare_bits=args.compare_bits,
                                seed=args.seed if args.mesh else None)
    options = {"xla_backend_optimization_level": args.opt_level} if args.opt_level >= 0 else None
    if args.fusion_emitters != "default":    # XLA CPU's fusion emitters (op executor default: off)
        options = {**(options or {}), "xla_cpu_use_fusion_emitters": args.fusion_emitters == "on"}

    t0 = time.perf_counter()
    prog = pcformer.compile(fn, *inputs, owners=owners, policy=policy, config=config,
                            executor=args.executor, compiler_options=options)
    front_s = time.perf_counter() - t0          # trace + rewrite + lower + executor build
    if args.chunk_calls is not None:            # the op executor's chunking (opcache.CHUNK_CALLS)
        prog._exe.chunk_calls = args.chunk_calls
    if args.compile_threads is not None:       # its compiling ahead (opcache.COMPILE_THREADS)
        prog._exe.compile_threads = args.compile_threads
    t0 = time.perf_counter()
    out, report = prog.run(*inputs)             # pays the XLA compilation of the run's jit
    first_run_s = time.perf_counter() - t0
    xla_s = report.time.get("compile_s", 0.0) if report.time else 0.0
    runs = []
    for _ in range(max(1, args.repeats)):
        _, rep = prog.run(*inputs)
        runs.append(rep.time["run_s"])
    run_s = min(runs)
    op_times = profile_ops(prog, inputs) if args.op_times else None

    plain = jax.jit(fn)
    _, plain_s = best_of(lambda: plain(*inputs), max(args.repeats, 5))
    ref = np.asarray(prog.plaintext(*inputs))
    err = float(np.max(np.abs(np.asarray(out) - ref)))

    static = prog.cost.totals()
    measured = report.totals()
    sharded = bench_sharded(fn, inputs, owners, policy, config, options, args, out, report) \
        if args.mesh else None
    return {
        "sharded": sharded,
        "policy": policy,
        "front_s": round(front_s, 3),
        "xla_compile_s": round(xla_s, 3),
        "compile_s": round(front_s + xla_s, 3),
        "first_run_s": round(first_run_s, 3),
        "run_s": round(run_s, 4),
        "run_s_median": round(float(np.median(runs)), 4),
        "run_s_per_layer": round(run_s / shape.layers, 4),
        "plaintext_s": round(plain_s, 6),
        "ratio": round(run_s / plain_s, 1),
        "totals": measured,
        "layers": per_layer(report.entries),
        "static_equals_measured": static == measured,
        "max_abs_err_vs_rewritten_plaintext": err,
        "trace_count": prog.trace_count,
        "op_times": op_times,
    }


def profile_ops(prog, inputs, top: int = 12) -> list | None:
    """One more run with each protocol op waiting for its result (the op executor's `op_times`):
    [[op, operator class, result shape, seconds, calls]], the slowest `top` first. The
    waits serialise the run, so the seconds add up to a little more than a plain run's."""
    exe = prog._exe
    if not hasattr(exe, "op_times"):
        return None                      # the whole-program and sharded executors run as one
    exe.op_times = {}
    prog.run(*inputs)
    rows = sorted(([name, cls, list(shape), round(sec, 4), calls]
                   for (name, cls, shape), (sec, calls) in exe.op_times.items()),
                  key=lambda r: -r[3])
    exe.op_times = None
    return rows[:top]


def bench_sharded(fn, inputs, owners, policy, config, options, args, out, report) -> dict:
    """The same program party-sharded (executor="sharded"): compile and run time, and whether
    its outputs and ledger equal the in-process run's (same seed, same run index)."""
    import pcformer

    from pcformer.runtime import mesh as M
    m = M.party_mesh(model=args.model_parallel)
    prog = pcformer.compile(fn, *inputs, owners=owners, policy=policy, config=config,
                            executor="sharded", compiler_options=options, mesh=m,
                            dealer=args.dealer)
    t0 = time.perf_counter()
    out_s, rep = prog.run(*inputs)
    first_run_s = time.perf_counter() - t0
    # the in-process reference of the SAME run index (a seeded run's keys follow the run count)
    same = (np.array_equal(np.asarray(out_s), np.asarray(out)) and rep.entries == report.entries)
    runs, deals = [], []
    for _ in range(max(1, args.repeats)):
        _, r = prog.run(*inputs)
        runs.append(r.time["run_s"])
        deals.append(r.time.get("deal_s", 0.0))   # separated: the dealer's pass for this run
    with pcformer.runtime.x64():   # the executable the runs used (cached: no compile)
        memory = prog._exe.compile(prog._flat(inputs))[0].memory_analysis()
    return {"devices": [str(d) for d in prog._exe.mesh.devices.flat],
            "mesh": dict(m.shape),
            # per device, from XLA: the arguments it holds and its scratch
            "argument_mb_per_device": round(memory.argument_size_in_bytes / 1e6, 3),
            "temp_mb_per_device": round(memory.temp_size_in_bytes / 1e6, 3),
            "xla_compile_s": round(rep.time.get("compile_s", 0.0), 3),
            "first_run_s": round(first_run_s, 3), "run_s": round(min(runs), 4),
            "dealer": args.dealer,
            "deal_s": round(min(deals), 4) if args.dealer == "separated" else None,
            # only the whole-program executor draws the same randomness (op: per-op keys)
            "equals_in_process": bool(same) if args.executor == "program" else None}


def mb(b: int) -> str:
    return f"{b / 1e6:.2f} MB"


def print_result(r: dict, shape: Shape) -> None:
    print(f"== policy {r['policy']}: compile {r['compile_s']:.2f} s (front {r['front_s']:.2f} s "
          f"+ XLA {r['xla_compile_s']:.2f} s), run best {r['run_s']:.3f} s "
          f"({r['run_s_per_layer']:.3f} s/layer, median {r['run_s_median']:.3f} s), "
          f"plaintext {r['plaintext_s'] * 1e3:.2f} ms, ratio {r['ratio']:.0f}x")
    for name, ph in r["layers"].items():
        on, off = ph["online"], ph["offline"]
        print(f"  {name or '(outside layers)':16s} online P0 {mb(on['bytes'][0])} "
              f"P1 {mb(on['bytes'][1])} rounds {on['rounds']} steps {on['steps']} | "
              f"offline P0 {mb(off['bytes'][0])} P1 {mb(off['bytes'][1])}")
    t = r["totals"]
    print(f"  total            online P0 {mb(t['online']['bytes'][0])} "
          f"P1 {mb(t['online']['bytes'][1])} rounds {t['online']['rounds']} "
          f"steps {t['online']['steps']} | offline P0 {mb(t['offline']['bytes'][0])} "
          f"P1 {mb(t['offline']['bytes'][1])}")
    if r.get("sharded"):
        sh = r["sharded"]
        print(f"  party-sharded (mesh {sh['mesh']}): XLA compile "
              f"{sh['xla_compile_s']:.2f} s, run best {sh['run_s']:.3f} s (in-process "
              f"{r['run_s']:.3f} s)"
              + (f", separated dealer's pass best {sh['deal_s']:.3f} s per run"
                 if sh['deal_s'] is not None else "")
              + f"; outputs and ledger equal in-process: "
              f"{sh['equals_in_process']}; per device: arguments "
              f"{sh['argument_mb_per_device']} MB, scratch {sh['temp_mb_per_device']} MB")
    for name, cls, shp, sec, calls in r.get("op_times") or []:
        print(f"  op time {sec:8.3f} s  {calls:3d} x {name} ({cls or '-'}) {shp}")
    print(f"  static cost == measured: {r['static_equals_measured']}; "
          f"max |err| vs rewritten plaintext {r['max_abs_err_vs_rewritten_plaintext']:.3g}")


def _families() -> tuple[str, ...]:
    from pcformer.runtime.protocols import registry
    return registry.families()


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = Shape()
    p.add_argument("--layers", type=int, default=d.layers)
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--heads", type=int, default=d.heads)
    p.add_argument("--intermediate", type=int, default=d.intermediate)
    p.add_argument("--act", default=d.act, help="hidden_act of the model (gelu = erf form)")
    p.add_argument("--policy", default="mpcformer", help="comma list of policy names")
    p.add_argument("--executor", default="op", choices=("op", "program"),
        help="op: one jit per protocol-op signature (default); program: ONE jit of the whole run")
    p.add_argument("--mode", default="protocol", choices=["protocol", "ideal"])
    p.add_argument("--protocols", default="beaver", choices=_families(),
                   help="protocol family (the registry's; fss: docs/fss.md)")
    p.add_argument("--trunc_mode", default="dealer", choices=["dealer", "local"])
    p.add_argument("--compare_bits", type=int, default=None,
                   help="fss: SIGMA's reduced comparison width (MPCConfig.compare_bits)")
    p.add_argument("--matmul_kernel", default="auto", choices=["auto", "limb", "native"])
    p.add_argument("--mask", default="public", choices=["public", "client", "none"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--opt_level", type=int, default=-1,
                   help="XLA backend optimization level of the compiled programs (the op "
                        "executor's op programs, or the whole program's jit; -1: XLA default)")
    p.add_argument("--fusion_emitters", default="default", choices=("default", "on", "off"),
                   help="XLA CPU's fusion emitters for the compiled programs (the op executor "
                        "turns them off by default: compiler/opcache.op_program_defaults)")
    p.add_argument("--chunk_calls", type=int, default=None,
                   help="op executor: run an elementwise op as at most N calls of a smaller "
                        "program (compiler/opcache.CHUNK_CALLS; 1: no chunking)")
    p.add_argument("--compile_threads", type=int, default=None,
                   help="op executor: threads compiling the first run's programs ahead of it "
                        "(compiler/opcache.COMPILE_THREADS; 0: each compiles when reached)")
    p.add_argument("--op_times", action="store_true",
                   help="one more run timing each protocol op (op executor): the slowest ops, "
                        "their operator class and shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mesh", action="store_true",
                   help="also run party-sharded (executor='sharded', party p on device p) and "
                        "report its time beside the in-process run's (seeded: MPCConfig(seed))")
    p.add_argument("--model_parallel", type=int, default=1,
                   help="with --mesh: a `model` axis of N devices per party, the server's weight "
                        "matrices split over it (tensor parallel; 2N host devices on CPU)")
    p.add_argument("--dealer", default="simulated", choices=["simulated", "separated"],
                   help="with --mesh: 'separated' deals each sharded run its own material from "
                        "a third-party dealer before it runs, and reports the dealer's time")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    shape = Shape(args.layers, args.seq_len, args.batch, args.hidden, args.heads,
                  args.intermediate, args.act)
    print(f"shape {dataclasses.asdict(shape)}, protocols {args.protocols}, mode {args.mode}, "
          f"device {jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}, "
          f"allocator {_allocator.status()}")
    results = []
    for policy in [s.strip() for s in args.policy.split(",") if s.strip()]:
        r = bench_policy(shape, policy, args)
        print_result(r, shape)
        results.append(r)
    summary = {"bench": "bert_layers", "shape": dataclasses.asdict(shape), "mode": args.mode,
               "protocols": args.protocols, "trunc_mode": args.trunc_mode,
               "compare_bits": args.compare_bits, "mask": args.mask,
               "device": jax.devices()[0].device_kind, "allocator": _allocator.status(),
               "results": results}
    print(json.dumps(summary, separators=(",", ":")))
    return summary


if __name__ == "__main__":
    main()
