"""Exact ring matmul in Z_2^64: the float64 limb kernel vs XLA's native integer dot vs one f32 GEMM.

Usage: python benchmarks/ring_matmul.py [--m 128 --k 768 --n 768 --repeats 5 --ring-bits 64]
Prints each time (best of `repeats`, one jitted call each), the ratios, and as its last line a
JSON object with limb_s, native_s, f32_s (seconds) and the ratios. Compare ratios within one
run, never absolute times across runs.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import ring


def best_of(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=128)
    ap.add_argument("--k", type=int, default=768)
    ap.add_argument("--n", type=int, default=768)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ring-bits", type=int, default=64, choices=(32, 64))
    args = ap.parse_args(argv)
    l = args.ring_bits
    rng = np.random.default_rng(0)
    dt = np.uint64 if l == 64 else np.uint32
    with ring.x64():
        a = jnp.asarray(rng.integers(0, 2 ** l, size=(args.m, args.k), dtype=dt))
        b = jnp.asarray(rng.integers(0, 2 ** l, size=(args.k, args.n), dtype=dt))
        w = jnp.asarray(rng.integers(-(2 ** 20) + 1, 2 ** 20, size=(args.k, args.n))
                        .astype(np.int64).view(np.uint64).astype(dt))
        limb = jax.jit(lambda x, y: ring.ring_matmul(x, y, None, l, "limb"))
        small = jax.jit(lambda x, y: ring.ring_matmul(x, y, None, l, "limb", b_bits=20))
        native = jax.jit(lambda x, y: ring.ring_matmul(x, y, None, l, "native"))
        same = bool(jnp.all(limb(a, b) == native(a, b)))
        same_small = bool(jnp.all(small(a, w) == native(a, w)))
        af, bf = a.astype(jnp.float32), b.astype(jnp.float32)
        f32 = jax.jit(lambda x, y: x @ y)
        t_limb = best_of(limb, (a, b), args.repeats)
        t_small = best_of(small, (a, w), args.repeats)
        t_native = best_of(native, (a, b), args.repeats)
        t_f32 = best_of(f32, (af, bf), args.repeats)
    gemms = ring.limb_gemm_count(l, args.k)
    gemms_small = ring.limb_gemm_count(l, args.k, b_bits=20)
    print(f"{args.m}x{args.k} @ {args.k}x{args.n} in Z_2^{l} on {jax.default_backend()}, "
          f"best of {args.repeats}")
    print(f"  limb kernel ({gemms} f64 GEMMs):           {t_limb * 1e3:9.2f} ms  bit-identical: {same}")
    print(f"  limb, |w| < 2^20 ({gemms_small} f64 GEMMs):      {t_small * 1e3:9.2f} ms  bit-identical: {same_small}")
    print(f"  native integer dot:                 {t_native * 1e3:9.2f} ms")
    print(f"  one f32 GEMM:                       {t_f32 * 1e3:9.2f} ms")
    print(f"  native / limb = {t_native / t_limb:.2f}x   limb / f32 = {t_limb / t_f32:.1f}x   "
          f"native / f32 = {t_native / t_f32:.1f}x")
    print(json.dumps({
        "shape": [args.m, args.k, args.n], "ring_bits": l, "backend": jax.default_backend(),
        "limb_s": t_limb, "limb_small_s": t_small, "native_s": t_native, "f32_s": t_f32,
        "native_over_limb": t_native / t_limb, "limb_over_f32": t_limb / t_f32,
        "limb_gemms": gemms, "limb_small_gemms": gemms_small,
        "bit_identical": same and same_small}))


if __name__ == "__main__":
    main()
