"""FSS drelu/relu against the Beaver family's on one tensor, and the FSS lookup (a 9-bit
two-column table, as the `exact` policy's GeLU under fss): run time, bytes, rounds, in one run.

    python benchmarks/fss_ops.py [--shape 128,1536] [--repeats 3] [--prg splitmix|threefry]

Each op runs as its own jitted two-party program on a secret-shared random fixed-point tensor
(the MLP activation of one all-MiniLM-L6-v2 layer at 128 tokens by default): the first call
compiles (reported apart), then the best of `--repeats`. Prints one line per op (run time,
compile time, online bytes per party, offline bytes per party, rounds) and the FSS/Beaver
run-time ratios; the LAST line is one JSON object with every figure.
"""
from __future__ import annotations

import argparse
import json
import time

import pcformer  # noqa: F401  first: tunes malloc before JAX starts (pcformer/_allocator.py)
import jax
import numpy as np

from pcformer.runtime import AShare, Context, MPCConfig, encode, x64
from pcformer.runtime.protocols import compare, fss


LUT_BITS = 9


def _table(bits: int, columns: int):
    """A public table of random ring elements, [2^bits, columns] (the lookup's cost and time do
    not depend on its values)."""
    rng = np.random.default_rng(1)
    return jax.numpy.asarray(rng.integers(0, 2 ** 64, size=(1 << bits, columns), dtype=np.uint64))


def _ops(prg: str):
    return {
        "beaver drelu": compare.drelu,
        "beaver relu": compare.relu,
        "fss drelu": lambda ctx, x: fss.drelu(ctx, x, prg=prg),
        "fss relu": lambda ctx, x: fss.relu(ctx, x, prg=prg),
        "fss lut": lambda ctx, x: fss.lut(ctx, x, _table(LUT_BITS, 2), LUT_BITS, prg=prg),
    }


def _totals(ledger, phase):
    """Bytes sent per party (offline: received from the dealer) and rounds of one phase."""
    es = [e for e in ledger.entries if e.phase == phase]
    return ([sum(-(-e.bits[p] // 8) for e in es) for p in (0, 1)],
            max((e.depth for e in es), default=0))


def measure(op, shares, repeats: int):
    """(compile + first run seconds, best run seconds, ledger) of op on the shares."""
    holder = {}

    def program(key, data):
        ctx = Context(MPCConfig(), key)
        holder["ledger"] = ctx.ledger
        return op(ctx, AShare(data)).data

    fn = jax.jit(program)
    keys = jax.random.split(jax.random.PRNGKey(0), repeats + 1)
    t0 = time.perf_counter()
    fn(keys[0], shares).block_until_ready()
    first = time.perf_counter() - t0
    best = float("inf")
    for k in keys[1:]:
        t0 = time.perf_counter()
        fn(k, shares).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return first, best, holder["ledger"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="128,1536")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--prg", default="splitmix", choices=["splitmix", "threefry"])
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = encode(rng.normal(0, 3, shape))
    r = rng.integers(0, 2 ** 64, size=shape, dtype=np.uint64)
    results = {}
    with x64():
        shares = jax.numpy.asarray(np.stack([x - r, r]))
        for name, op in _ops(args.prg).items():
            first, best, ledger = measure(op, shares, args.repeats)
            (on, rounds), (off, _) = _totals(ledger, "online"), _totals(ledger, "offline")
            results[name] = dict(run_s=best, compile_and_first_s=first, online_bytes=on,
                                 offline_bytes=off, rounds=rounds)
            print(f"{name:13s} run {best * 1e3:9.1f} ms  compile+first {first:6.2f} s  "
                  f"online P0/P1 {on[0] / 1e6:7.2f}/{on[1] / 1e6:7.2f} MB  offline P0/P1 "
                  f"{off[0] / 1e6:8.2f}/{off[1] / 1e6:8.2f} MB  rounds {rounds}")
    ratios = {op: results[f"fss {op}"]["run_s"] / results[f"beaver {op}"]["run_s"]
              for op in ("drelu", "relu")}
    for op, q in ratios.items():
        print(f"run-time ratio fss/beaver {op}: {q:.2f}x")
    print(json.dumps(dict(shape=shape, prg=args.prg, results=results, ratios=ratios)))


if __name__ == "__main__":
    main()
