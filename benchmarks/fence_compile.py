"""XLA CPU compile time of one whole-program jit, with and without fenced messages.

    python benchmarks/fence_compile.py [--depths 5,10,20] [--size 64]

A chain of `depth` Beaver multiplications (each followed by a truncation) on a [size, size]
secret, traced into ONE jitted program, as the whole-program executor does
(compiler/execute.py). Unfenced, XLA's fusion pulls every exchange's row swap into its producers
and consumers and the compile time grows superlinearly with depth; fenced
(`Context(fence_messages=True)`, the executor's setting) each received message is its own
buffer. Prints both compile times and their ratio per depth, measured in one process.
"""
from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from pcformer.runtime import MPCConfig, encode, x64
from pcformer.runtime import protocols as P
from pcformer.runtime.shares import Context


def compile_seconds(depth: int, size: int, fence: bool) -> float:
    x = encode(np.random.default_rng(0).normal(size=(size, size)), 16)

    def program(key, x):
        ctx = Context(MPCConfig(), key, fence_messages=fence)
        s = P.share(ctx, x, 0)
        for _ in range(depth):
            s = P.truncate(ctx, P.mul(ctx, s, s))
        return P.reveal(ctx, s)

    with x64():
        lowered = jax.jit(program).lower(jax.random.PRNGKey(0), x)
        t0 = time.perf_counter()
        lowered.compile()
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--depths", default="5,10,20")
    p.add_argument("--size", type=int, default=64)
    a = p.parse_args()
    for depth in (int(d) for d in a.depths.split(",")):
        fenced = compile_seconds(depth, a.size, True)
        plain = compile_seconds(depth, a.size, False)
        print(f"depth {depth:3d}: unfenced {plain:6.1f} s, fenced {fenced:6.1f} s, "
              f"unfenced/fenced {plain / fenced:5.1f}x", flush=True)


if __name__ == "__main__":
    main()
