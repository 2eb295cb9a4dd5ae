"""Comparison protocols: DReLU, ReLU, less-than, select, max and argmax (tree reduction).

Comparison results are arithmetic shares of integer bits 0/1 (scale 1, not fixed point), so
multiplying a fixed-point value by one keeps its scale. All comparisons assume |x - y| < 2^(l-1).
"""
from __future__ import annotations

import jax.numpy as jnp

from pcformer.runtime import costs
from pcformer.runtime.shares import AShare

from . import arith, boolean, ideal
from ._base import as_ring, const, protocol
from .adapt import unary
from .registry import ProtocolOp, register


@protocol("drelu")
def drelu(ctx, x: AShare) -> AShare:
    """[x >= 0] = 1 - msb(x): the MSB is flipped in the boolean domain (local), then B2A."""
    return boolean.b2a(ctx, boolean.not_(ctx, boolean.msb(ctx, x)))


@protocol("relu")
def relu(ctx, x: AShare) -> AShare:
    """max(x, 0) = x * drelu(x) with a Beaver multiplication."""
    return arith.mul(ctx, x, drelu(ctx, x))


@protocol("less")
def less(ctx, x: AShare, y: AShare) -> AShare:
    """[x < y] = msb(x - y)."""
    return boolean.b2a(ctx, boolean.msb(ctx, arith.sub(ctx, x, y)))


@protocol("less_public")
def less_public(ctx, x: AShare, c) -> AShare:
    """[x < c] for a public ring value c = msb(x - c)."""
    return boolean.b2a(ctx, boolean.msb(ctx, arith.add_public(ctx, x, -as_ring(ctx, c))))


@protocol("select")
def select(ctx, b: AShare, x: AShare, y: AShare) -> AShare:
    """b ? x : y for a shared bit b: b*(x - y) + y (one Beaver mul)."""
    return arith.add(ctx, arith.mul(ctx, b, arith.sub(ctx, x, y)), y)


def _take(x: AShare, lo, hi, step=1) -> AShare:
    return AShare(x.data[:, lo:hi:step], x.depth)


def _cat(parts) -> AShare:
    return AShare(jnp.concatenate([p.data for p in parts], axis=1), max(p.depth for p in parts))


def _tree(ctx, x: AShare, axis: int, with_index: bool):
    axis = axis % len(x.shape)
    v = AShare(jnp.moveaxis(x.data, axis + 1, 1), x.depth)
    k = v.shape[0]
    if k < 1:
        raise ValueError("max over an empty axis")
    dt = v.data.dtype
    idx_pub = jnp.broadcast_to(
        jnp.arange(k, dtype=dt).reshape((k,) + (1,) * (len(v.shape) - 1)), v.shape)
    idx = None  # secret indices once the first level has selected them
    while v.shape[0] > 1:
        n = v.shape[0]
        h = n // 2
        va, vb = _take(v, 0, 2 * h, 2), _take(v, 1, 2 * h, 2)
        lt = less(ctx, va, vb)                       # 1 where the later element wins
        if not with_index:
            m = select(ctx, lt, vb, va)
        elif idx is None:                            # indices still public: selecting is local
            m = select(ctx, lt, vb, va)
            ia, ib = idx_pub[0:2 * h:2], idx_pub[1:2 * h:2]
            sel = arith.add_public(ctx, arith.mul_public(ctx, lt, ib - ia), ia)
            rest = idx_pub[2 * h:]
            rest_sh = AShare(jnp.stack([rest, jnp.zeros_like(rest)]), 0)
            idx = _cat([sel, rest_sh]) if n % 2 else sel
        else:                                        # one mul selects values and indices
            ia, ib = _take(idx, 0, 2 * h, 2), _take(idx, 1, 2 * h, 2)
            with ctx.op("select"):
                both = arith.mul(ctx, _cat([lt, lt]), _cat([arith.sub(ctx, vb, va),
                                                            arith.sub(ctx, ib, ia)]))
            mv = AShare(both.data[:, :h], both.depth)
            mi = AShare(both.data[:, h:], both.depth)
            m = arith.add(ctx, mv, va)
            sel = arith.add(ctx, mi, ia)
            idx = _cat([sel, _take(idx, 2 * h, n)]) if n % 2 else sel
        v = _cat([m, _take(v, 2 * h, n)]) if n % 2 else m
    out = AShare(v.data[:, 0], v.depth)
    if not with_index:
        return out, None
    if idx is None:  # k == 1
        idx = AShare(jnp.stack([idx_pub, jnp.zeros_like(idx_pub)]), 0)
    return out, AShare(idx.data[:, 0], idx.depth)


@protocol("max")
def max_(ctx, x: AShare, axis: int = -1) -> AShare:
    """Maximum over `axis` by a tree: ceil(log2 k) levels of less + select."""
    return _tree(ctx, x, axis, False)[0]


@protocol("argmax")
def argmax(ctx, x: AShare, axis: int = -1) -> AShare:
    """Index (an integer share, scale 1; first index wins ties) of the maximum over `axis`."""
    return _tree(ctx, x, axis, True)[1]


@protocol("max_argmax")
def max_argmax(ctx, x: AShare, axis: int = -1):
    """(max, argmax) over `axis` from one tree."""
    return _tree(ctx, x, axis, True)


# ----------------------------------------------------------------------------- registry table
def _axis(op) -> dict:
    return {"axis": op.attrs["axis"]}


TABLE = (
    ProtocolOp("drelu", drelu, costs.drelu, ideal.drelu, unary()),
    ProtocolOp("relu", relu, costs.relu, ideal.relu, unary()),
    ProtocolOp("less", less, costs.less, ideal.less),
    ProtocolOp("less_public", less_public, costs.less_public, ideal.less_public),
    ProtocolOp("select", select, costs.select, ideal.select),
    ProtocolOp("max", max_, costs.max_, ideal.max_, unary(_axis)),
    ProtocolOp("argmax", argmax, costs.argmax, ideal.argmax, unary(_axis)),
    ProtocolOp("max_argmax", max_argmax, costs.argmax, ideal.max_argmax),
)
register(*TABLE)
