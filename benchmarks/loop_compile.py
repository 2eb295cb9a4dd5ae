"""XLA CPU compile time of a comparison's carry circuit, its levels unrolled or in a loop.

    python benchmarks/loop_compile.py [--sizes 2176,24576,196608] [--repeats 2]

Why. A cold run's comparison programs (`drelu`, `relu`) are its slowest to compile (issue 18):
the Kogge-Stone adder of runtime/protocols/boolean.py `_prefix_carries` unrolls its log2(64) - 1
middle levels, each one boolean Beaver AND (mask, exchange, combine) of the stacked (G, P) words.
The levels differ only in their shift and their slice of the dealer's material, so they can be
one `lax.fori_loop` body. This is a stand-alone model of that circuit (the same gate arithmetic;
the exchange is the parties' row swap of one simulated program; no ledger): it compiles both
forms of one circuit per size, checks that they compute the same bits, and prints compile and
run time side by side, measured in one process. It does not change pcformer: looping the real
circuit also needs the ledger door to record a loop body's messages once per iteration and each
iteration's dealer material to be its own (the issue's lead).
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from pcformer.compiler import compat
from pcformer.runtime import x64

U = np.uint64
LEVELS = 6          # log2 of the ring's 64 bits


def _mix(z):
    z = (z ^ (z >> U(30))) * U(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U(27))) * U(0x94D049BB133111EB)
    return z ^ (z >> U(31))


def _material(seed, units: int, shape: tuple):
    """[units, 3, 2, *shape]: per AND unit the rows (a, b, c) of both parties (a stream)."""
    n = int(np.prod(shape))
    ctr = lax.iota(U, units * 6 * n).reshape((units, 3, 2) + shape)
    return _mix(seed + ctr * U(0x9E3779B97F4A7C15))


def _and(x, y, abc):
    """A boolean Beaver AND of [2, ...] party rows: open e = x ^ a and f = y ^ b (the exchange
    swaps the rows), then z = c ^ (e & b) ^ (f & a), party 0 adding e & f."""
    a, b, c = abc[0], abc[1], abc[2]
    e, f = x ^ a, y ^ b
    e, f = e ^ e[::-1], f ^ f[::-1]
    z = c ^ (e & b) ^ (f & a)
    return z.at[0].set(z[0] ^ (e[0] & f[0]))


def carry_bits(xd, seed, loop: bool):
    """The sign bits of the 2-party sums of `xd` ([2, n] ring words), by the Kogge-Stone adder."""
    shape = xd.shape[1:]
    mid = _material(seed, LEVELS - 1, (2,) + shape)              # the middle levels' units
    ends = _material(seed ^ U(1), 2, shape)                      # the first and last AND
    zero = jnp.zeros_like(xd[0])
    g = _and(jnp.stack([xd[0], zero]), jnp.stack([zero, xd[1]]), ends[0])
    gp = jnp.stack([g, xd], axis=1)                              # [party, (G, P), n]
    keep_g = jnp.asarray(np.array([np.iinfo(U).max, 0], U)).reshape((1, 2) + (1,) * len(shape))

    def level(i, gp):
        shift = lax.shift_left(U(1), i.astype(U)) if loop else U(1 << i)
        units = lax.dynamic_index_in_dim(mid, i, 0, keepdims=False) if loop else mid[i]
        p2 = jnp.broadcast_to(gp[:, 1:2], gp.shape)
        return _and(p2, gp << shift, units) ^ (gp & keep_g)

    if loop:
        gp = lax.fori_loop(0, LEVELS - 1, level, gp)
    else:
        for i in range(LEVELS - 1):
            gp = level(i, gp)
    G, P = gp[:, 0], gp[:, 1]
    top = _and(P, G << U(1 << (LEVELS - 1)), ends[1])
    return (xd ^ (G ^ top) << U(1)) >> U(63)


def measure(n: int, loop: bool, xs, seed) -> tuple:
    """(lower s, compile s, run s, result) of one form at n elements, compiled afresh."""
    fn = jax.jit(lambda xd, s: carry_bits(xd, s, loop))
    t0 = time.perf_counter()
    lowered = fn.lower(jax.ShapeDtypeStruct((2, n), U), jax.ShapeDtypeStruct((), U))
    t1 = time.perf_counter()
    with compat.persistent_cache_bypassed():
        compiled = lowered.compile()
    t2 = time.perf_counter()
    out = compiled(xs, seed).block_until_ready()
    t3 = time.perf_counter()
    for _ in range(5):
        compiled(xs, seed).block_until_ready()
    run = (time.perf_counter() - t3) / 5
    return t1 - t0, t2 - t1, run, np.asarray(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="2176,24576,196608",
                   help="element counts (one exact MiniLM layer's comparisons: 2176 to 196608)")
    p.add_argument("--repeats", type=int, default=2, help="rounds, the two forms alternating")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with x64():
        for n in (int(s) for s in args.sizes.split(",")):
            xs = rng.integers(0, np.iinfo(np.int64).max, size=(2, n), dtype=U)
            seed = U(rng.integers(0, 2**63))
            for r in range(args.repeats):
                (_, cu, ru, bits_u), (_, cl, rl, bits_l) = (measure(n, False, xs, seed),
                                                           measure(n, True, xs, seed))
                assert np.array_equal(bits_u, bits_l), "the two forms disagree"
                print(f"n={n:>7} round {r}: compile unrolled {cu:.2f} s, loop {cl:.2f} s "
                      f"({cu / cl:.1f}x less); run unrolled {ru * 1e3:.1f} ms, loop "
                      f"{rl * 1e3:.1f} ms ({rl / ru:.2f}x)")


if __name__ == "__main__":
    main()
