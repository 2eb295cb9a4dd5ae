"""Comparison protocols: DReLU, ReLU, less-than, select, max and argmax (tree reduction).

Comparison results are arithmetic shares of integer bits 0/1 (scale 1, not fixed point), so
multiplying a fixed-point value by one keeps its scale. All comparisons assume |x - y| < 2^(l-1).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pcformer.runtime.config import MPCConfig
from pcformer.runtime.costs import n_elems, rounds, shift
from pcformer.runtime.parties import only_party0
from pcformer.runtime.shares import AShare

from . import arith, boolean, ideal
from ._base import as_ring, protocol
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
            rest_sh = AShare(only_party0(rest), 0)
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
        idx = AShare(only_party0(idx_pub), 0)
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


# ----------------------------------------------------------------------------- cost formulas
# each op's messages from static shapes (runtime/costs.py: Msg and placement); tests hold them
# equal to the ledger the protocols above write, message by message

def drelu_cost(x_shape, config: MPCConfig = MPCConfig()):
    m = shift(boolean.msb_cost(x_shape, config), 0, "msb")
    return m + shift(boolean.b2a_cost(x_shape, config), rounds(m), "")


def relu_cost(x_shape, config: MPCConfig = MPCConfig()):
    d = shift(drelu_cost(x_shape, config), 0, "drelu")
    return d + shift(arith.mul_cost(x_shape, x_shape, config), rounds(d))


def less_cost(x_shape, y_shape=None, config: MPCConfig = MPCConfig()):
    shape = (x_shape if y_shape is None
             else tuple(np.broadcast_shapes(tuple(x_shape), tuple(y_shape))))
    m = shift(boolean.msb_cost(shape, config), 0, "msb")
    return m + shift(boolean.b2a_cost(shape, config), rounds(m))


def less_public_cost(x_shape, config: MPCConfig = MPCConfig(), **attrs):
    return less_cost(x_shape, None, config)


def select_cost(b_shape, x_shape=None, y_shape=None, config: MPCConfig = MPCConfig()):
    return arith.mul_cost(b_shape, b_shape, config)


def _tree_cost(x_shape, config, axis, with_index):
    shape = tuple(x_shape)
    axis = axis % len(shape)
    k = shape[axis]
    rest = n_elems(shape) // k
    r_less = rounds(less_cost((1,), None, config))
    msgs, base, n, level = [], 0, k, 0
    while n > 1:
        h = n // 2
        msgs += shift(less_cost((h * rest,), None, config), base, "less")
        sel_n = 2 * h * rest if (with_index and level > 0) else h * rest
        msgs += shift(arith.mul_cost((sel_n,), None, config), base + r_less, "select")
        base += r_less + 1
        n = n - h
        level += 1
    return msgs


def max_cost(x_shape, config: MPCConfig = MPCConfig(), axis: int = -1):
    """Tree reduction: ceil(log2 k) levels of less + select (each 1 + log2(l) + 1 + 1 rounds)."""
    return _tree_cost(x_shape, config, axis, False)


def argmax_cost(x_shape, config: MPCConfig = MPCConfig(), axis: int = -1):
    """As max; from the second level on, values and (now secret) indices share one mul."""
    return _tree_cost(x_shape, config, axis, True)


# ----------------------------------------------------------------------------- registry table
def _axis(op) -> dict:
    return {"axis": op.attrs["axis"]}


TABLE = (
    ProtocolOp("drelu", drelu, drelu_cost, ideal.drelu, unary(), elementwise=True, chunks=True),
    ProtocolOp("relu", relu, relu_cost, ideal.relu, unary(), elementwise=True, chunks=True),
    ProtocolOp("less", less, less_cost, ideal.less),
    ProtocolOp("less_public", less_public, less_public_cost, ideal.less_public),
    ProtocolOp("select", select, select_cost, ideal.select),
    ProtocolOp("max", max_, max_cost, ideal.max_, unary(_axis)),
    ProtocolOp("argmax", argmax, argmax_cost, ideal.argmax, unary(_axis)),
    ProtocolOp("max_argmax", max_argmax, argmax_cost, ideal.max_argmax),
)
register(*TABLE)
