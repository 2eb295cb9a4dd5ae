"""Helpers of the FSS tests (tests/test_fss_*.py): ring values with their edge cases, sharing a
plaintext, revealing, and running a protocol under x64."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import AShare, Context, MPCConfig, x64


def np_dtype(l: int):
    return np.uint64 if l == 64 else np.uint32


def signed_dtype(l: int):
    return np.int64 if l == 64 else np.int32


def edge_values(l: int, n: int, rng, bound_bits: int | None = None):
    """n signed values as ring elements: 0, -1, 1, the limits (+-2^(b-1) - 1 / -2^(b-1)),
    then uniform ones, all with |x| < 2^(b-1) for b = bound_bits (default l)."""
    b = l if bound_bits is None else bound_bits
    lo, hi = -(2 ** (b - 1)), 2 ** (b - 1) - 1
    v = rng.integers(lo, hi, size=n, dtype=np.int64, endpoint=True)
    v[:6] = [0, -1, 1, hi, lo, hi - 1]
    return v.astype(signed_dtype(l)).view(np_dtype(l))


def shares_of(x, l: int, rng):
    """Random additive shares [2, ...] of ring array x (as AShare, depth 0)."""
    x = np.asarray(x, np_dtype(l))
    r = rng.integers(0, 2 ** l, size=x.shape, dtype=np_dtype(l))
    return AShare(np.stack([x - r, r]))   # numpy: becomes uint64 inside the x64 run


def value(s: AShare):
    """The shared ring value as numpy."""
    return np.asarray(s.data[0] + s.data[1])


def signed(u, l: int):
    return np.asarray(u).view(signed_dtype(l))


def run(config: MPCConfig, fn, key=0, audit=False, jit=False):
    """fn(ctx) under x64 with a fresh Context; returns (output as numpy pytree, ctx)."""
    with x64():
        ctx = Context(config, jax.random.PRNGKey(key), audit=audit)
        out = (jax.jit(lambda: fn(ctx)) if jit else (lambda: fn(ctx)))()
        return jax.tree_util.tree_map(np.asarray, out), ctx


def ledger_of(config: MPCConfig, fn):
    """The ledger fn(ctx) writes, traced abstractly (jax.eval_shape: nothing is computed)."""
    with x64():
        ctx = Context(config, jax.random.PRNGKey(0))
        jax.eval_shape(lambda: fn(ctx))
        return ctx.ledger.entries
