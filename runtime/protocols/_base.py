"""Shared helpers of the protocol modules: the op-label decorator and the party-row helpers
(runtime/parties.py: the same code in one process and on a party's own device)."""
from __future__ import annotations

import functools

import jax.numpy as jnp

from pcformer.runtime import ring
from pcformer.runtime.parties import by_party
from pcformer.runtime.shares import AShare

from . import registry


def protocol(name: str):
    """Wrap a protocol so its messages carry `name` in the ledger's op path (ctx.op).

    In ideal mode (`ctx.ideal`), an op whose registry entry (in the config's protocol family)
    has an `ideal` functionality runs its real protocol only in the shadow (`ctx.shadow`: ledger
    written through the channel, nothing computed) and returns the functionality's output
    (fresh shares, the shadow's depths).
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapped(ctx, *args, **kwargs):
            with ctx.op(name):
                rule = _ideal_of(ctx, name)
                if rule is None:
                    return fn(ctx, *args, **kwargs)
                like = ctx.shadow(lambda: fn(ctx, *args, **kwargs))
                return rule(ctx, like, *args, **kwargs)
        wrapped.op_name = name
        return wrapped
    return deco


def _ideal_of(ctx, name: str):
    """The ideal functionality of op `name` when ctx runs in ideal mode, else None."""
    if not getattr(ctx, "ideal", False):
        return None
    entry = registry.find(name, getattr(ctx.config, "protocols", registry.DEFAULT_FAMILY))
    return None if entry is None else entry.ideal


def const(ctx, value):
    """A Python int as a ring scalar (mod 2^l)."""
    l = ctx.ring_bits
    return jnp.asarray(value % (1 << l), dtype=jnp.uint64).astype(ring.ring_dtype(l))


def pow2(ctx, e):
    """2^e as a ring scalar, e a Python int or a traced integer (a truncation's shift that the
    op executor passes at run time, so one compiled program serves every shift)."""
    return const(ctx, 1) << jnp.asarray(e, ring.ring_dtype(ctx.ring_bits))


def as_ring(ctx, c):
    """A public operand as ring elements (ints are taken mod 2^l; arrays must be ring already)."""
    if isinstance(c, int):
        return const(ctx, c)
    c = jnp.asarray(c)
    if c.dtype != ring.ring_dtype(ctx.ring_bits):
        raise TypeError(f"public ring operand must have dtype {ring.ring_dtype(ctx.ring_bits)}, "
                        f"got {c.dtype} (encode fixed-point values with ring.encode first)")
    return c


def default_dn(ndim: int):
    """dimension_numbers of a plain matrix product (last axis of x with the first of y)."""
    return (((ndim - 1,), (0,)), ((), ()))


def canon_dn(dn, ndim):
    """dimension_numbers as nested tuples (hashable), the default when None."""
    dn = dn or default_dn(ndim)
    return (tuple(map(tuple, dn[0])), tuple(map(tuple, dn[1])))


def private_operand(x, p: int):
    """A secret operand as shares, or a plain array private to party 1-p as shares [.., 0]."""
    if isinstance(x, AShare):
        return x
    x = jnp.asarray(x)
    return AShare(by_party(p, jnp.zeros_like(x), x), 0)
