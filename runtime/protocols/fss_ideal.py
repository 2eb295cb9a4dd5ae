"""Ideal-mode rules of the FSS family: each op's functionality on the reconstructed values,
returned as fresh shares with the shadow run's depth (the ledger is the protocol's, written by
the shadow). Every FSS op is exact inside its stated input range, so each rule is bit-exact with
protocol mode there."""
from __future__ import annotations

import jax.numpy as jnp

from pcformer.runtime import fss_costs, ring
from pcformer.runtime.shares import AShare

from . import ideal
from ._base import as_ring
from ._fss_base import FSS_IDEAL_RULES, low_bits


def _rule(name):
    def deco(fn):
        FSS_IDEAL_RULES[name] = fn
        return fn
    return deco


def value(x: AShare):
    return x.data[0] + x.data[1]


def fresh(ctx, v, depth: int) -> AShare:
    """Fresh additive shares (r, v - r), r uniform."""
    r = ctx.uniform(v.shape)
    return AShare(jnp.stack([r, v - r]), depth)


def signed_n(v, n: int):
    """The n-bit two's-complement value of v mod 2^n, as a signed ring-width integer."""
    bits = jnp.iinfo(v.dtype).bits
    s = ring.to_signed(v << jnp.asarray(bits - n, v.dtype))
    return s >> jnp.asarray(bits - n, s.dtype)


def drelu_value(ctx, v, bits=None):
    n = fss_costs.compare_width(ctx.config, bits)
    return (signed_n(v, n) >= 0).astype(v.dtype)


@_rule("drelu")
def _drelu(ctx, like, x, bits=None, prg="splitmix"):
    return fresh(ctx, drelu_value(ctx, value(x), bits), like.depth)


@_rule("relu")
def _relu(ctx, like, x, bits=None, prg="splitmix"):
    v = value(x)
    return fresh(ctx, v * drelu_value(ctx, v, bits), like.depth)


@_rule("select")
def _select(ctx, like, b, x, y):
    bv, xv, yv = value(b), value(x), value(y)
    return fresh(ctx, jnp.broadcast_to(bv * (xv - yv) + yv, like.shape), like.depth)


@_rule("truncate")
def _truncate(ctx, like, x, bits=None, mode=None, prg="splitmix"):
    if (mode or ctx.config.trunc_mode) == "local":     # the Beaver family's local shift
        return ideal.truncate(ctx, like, x, bits, "local")
    f = ctx.config.frac_bits if bits is None else int(bits)
    s = ring.to_signed(value(x))
    return fresh(ctx, ring.from_signed(s >> jnp.asarray(f, s.dtype)), like.depth)


@_rule("lut")
def _lut(ctx, like, x, table, bits, prg="splitmix"):
    t = as_ring(ctx, table)
    return fresh(ctx, t[low_bits(value(x), int(bits)).astype(jnp.int32)], like.depth)


@_rule("less")
def _less(ctx, like, x, y, bits=None, prg="splitmix"):
    return fresh(ctx, 1 - drelu_value(ctx, value(x) - value(y), bits), like.depth)


@_rule("less_public")
def _less_public(ctx, like, x, c, bits=None, prg=None):
    return fresh(ctx, 1 - drelu_value(ctx, value(x) - as_ring(ctx, c), bits), like.depth)


@_rule("max")
def _max(ctx, like, x, axis=-1, bits=None, prg="splitmix"):
    s = ring.to_signed(value(x))
    return fresh(ctx, ring.from_signed(jnp.max(s, axis=axis)), like.depth)


@_rule("argmax")
def _argmax(ctx, like, x, axis=-1, bits=None, prg="splitmix"):
    v = value(x)
    idx = jnp.argmax(ring.to_signed(v), axis=axis).astype(v.dtype)
    return fresh(ctx, idx, like.depth)


@_rule("max_argmax")
def _max_argmax(ctx, like, x, axis=-1, bits=None, prg="splitmix"):
    return (_max(ctx, like[0], x, axis, bits, prg), _argmax(ctx, like[1], x, axis, bits, prg))
