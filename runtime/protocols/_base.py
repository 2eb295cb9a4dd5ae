"""Shared helpers of the protocol modules: the op-label decorator and row helpers."""
from __future__ import annotations

import functools

import jax.numpy as jnp

from pcformer.runtime import ring


IDEAL_RULES: dict = {}
"""op name -> ideal rule(ctx, like, *args, **kwargs): the op's functionality on reconstructed
values, returned as fresh shares shaped like `like` (the shadow run's output). Filled by
`protocols/ideal.py`; ops without a rule (local ones, reveal) run as in protocol mode."""


def protocol(name: str):
    """Wrap a protocol so its messages carry `name` in the ledger's op path (ctx.op).

    In ideal mode (`ctx.ideal`), an op with a rule in IDEAL_RULES runs its real protocol only in
    the shadow (`ctx.shadow`: ledger written through the channel, nothing computed) and returns
    the rule's output (its functionality, fresh shares, the shadow's depths).
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapped(ctx, *args, **kwargs):
            with ctx.op(name):
                rule = IDEAL_RULES.get(name)
                if rule is None or not getattr(ctx, "ideal", False):
                    return fn(ctx, *args, **kwargs)
                like = ctx.shadow(lambda: fn(ctx, *args, **kwargs))
                return rule(ctx, like, *args, **kwargs)
        wrapped.op_name = name
        return wrapped
    return deco


def rows(first, second):
    """Stack party 0's and party 1's local arrays into a [2, ...] array."""
    return jnp.stack([first, second])


def only_party0(value):
    """[value, 0]: a public term that only party 0 adds (so the sum gains it once)."""
    return jnp.stack([value, jnp.zeros_like(value)])


def by_party(p: int, own, other):
    """[2, ...] array with `own` at row p and `other` at row 1-p."""
    return rows(own, other) if p == 0 else rows(other, own)


def const(ctx, value):
    """A Python int as a ring scalar (mod 2^l)."""
    l = ctx.ring_bits
    return jnp.asarray(value % (1 << l), dtype=jnp.uint64).astype(ring.ring_dtype(l))


def as_ring(ctx, c):
    """A public operand as ring elements (ints are taken mod 2^l; arrays must be ring already)."""
    if isinstance(c, int):
        return const(ctx, c)
    c = jnp.asarray(c)
    if c.dtype != ring.ring_dtype(ctx.ring_bits):
        raise TypeError(f"public ring operand must have dtype {ring.ring_dtype(ctx.ring_bits)}, "
                        f"got {c.dtype} (encode fixed-point values with ring.encode first)")
    return c
