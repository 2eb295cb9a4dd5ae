"""Ideal-mode rules: each protocol op's FUNCTIONALITY on the reconstructed values.

Each protocol module's registry table names the rule of each of its ops (`ProtocolOp.ideal`).
A rule gets `like`, the output of the op's real
protocol run in the shadow (`Context.shadow`: the ledger is written through the channel exactly
as in protocol mode, nothing is computed), and returns fresh shares of the function's value with
the shadow's depth (and width): party 0 gets a uniform mask r, party 1 value - r (XOR for boolean
shares). Deterministic ops are bit-exact with protocol mode; truncation reproduces the protocol's
error by computing what the protocol computes from its public opening (dealer) or by shifting
fresh shares locally (SecureML).
"""
from __future__ import annotations

import jax.numpy as jnp

from pcformer.runtime import dealer, ring
from pcformer.runtime.shares import AShare, BShare

from ._base import as_ring, canon_dn, const, pow2, private_operand

def value(x: AShare):
    """x0 + x1 mod 2^l."""
    return x.data[0] + x.data[1]


def bvalue(x: BShare):
    """x0 ^ x1."""
    return x.data[0] ^ x.data[1]


def fresh(ctx, v, depth: int) -> AShare:
    """Fresh additive shares of v: (r, v - r) with r uniform."""
    r = ctx.uniform(v.shape)
    return AShare(jnp.stack([r, v - r]), depth)


def fresh_bool(ctx, v, depth: int, width: int) -> BShare:
    """Fresh XOR shares of v's `width` low bits: (r, v ^ r) with r uniform on those bits."""
    m = dealer._mask(width, v.dtype)
    r = ctx.uniform(v.shape) & m
    return BShare(jnp.stack([r, (v & m) ^ r]), depth, width)


def _msb(ctx, v):
    """The MSB of ring values as ring 0/1."""
    return v >> jnp.asarray(ctx.ring_bits - 1, v.dtype)


def _mm(ctx, a, b, dn):
    return ring.ring_matmul(a, b, dn, ctx.ring_bits, ctx.config.matmul_kernel)


def mul(ctx, like, x, y):
    return fresh(ctx, value(x) * value(y), like.depth)


def square(ctx, like, x):
    v = value(x)
    return fresh(ctx, v * v, like.depth)


def dot_general(ctx, like, x, y, dimension_numbers=None):
    dn = canon_dn(dimension_numbers, len(x.shape))
    return fresh(ctx, _mm(ctx, value(x), value(y), dn), like.depth)


def mul_private(ctx, like, x, w, party, weight_id="w"):
    return fresh(ctx, value(private_operand(x, party)) * as_ring(ctx, w), like.depth)


def dot_general_private(ctx, like, x, w, party, dimension_numbers=None, weight_id="w",
                         w_on_left=False, w_bits=None):
    xv = value(private_operand(x, party))
    w = as_ring(ctx, w)
    dn = canon_dn(dimension_numbers, w.ndim if w_on_left else xv.ndim)
    out = _mm(ctx, w, xv, dn) if w_on_left else _mm(ctx, xv, w, dn)
    return fresh(ctx, out, like.depth)


def _trunc_dealer(ctx, v, f: int):
    """What the dealer protocol reconstructs: c = v + 2^(l-2) + r opened, r uniform; result
    (c mod 2^(l-1)) >> f - 2^(l-2-f) - (r mod 2^(l-1)) >> f + 2^(l-1-f) (c_msb xor r_msb)."""
    l = ctx.ring_bits
    dt = v.dtype
    low = const(ctx, (1 << (l - 1)) - 1)
    sh = jnp.asarray(f, dt)
    r = ctx.uniform(v.shape)
    c = v + const(ctx, 1 << (l - 2)) + r
    top = _msb(ctx, c) ^ _msb(ctx, r)
    return ((c & low) >> sh) - pow2(ctx, l - 2 - f) - ((r & low) >> sh) \
        + top * pow2(ctx, l - 1 - f)


def truncate(ctx, like, x, bits=None, mode=None):
    f = ctx.config.frac_bits if bits is None else bits
    mode = mode or ctx.config.trunc_mode
    if mode == "dealer":
        return fresh(ctx, _trunc_dealer(ctx, value(x), f), like.depth)
    # local (SecureML): the protocol's own local shifts, on fresh shares
    s = fresh(ctx, value(x), like.depth).data
    sh = ring.to_signed(jnp.asarray(f, s.dtype))
    z0 = ring.from_signed(ring.to_signed(s[0]) >> sh)
    z1 = -ring.from_signed(ring.to_signed(-s[1]) >> sh)
    return AShare(jnp.stack([z0, z1]), like.depth)


def and_(ctx, like, x, y):
    return fresh_bool(ctx, bvalue(x) & bvalue(y), like.depth, like.width)


def a2b(ctx, like, x):
    return fresh_bool(ctx, value(x), like.depth, like.width)


def msb(ctx, like, x):
    return fresh_bool(ctx, _msb(ctx, value(x)), like.depth, like.width)


def b2a(ctx, like, b):
    return fresh(ctx, bvalue(b) & const(ctx, 1), like.depth)


def drelu(ctx, like, x):
    return fresh(ctx, const(ctx, 1) - _msb(ctx, value(x)), like.depth)


def relu(ctx, like, x):
    v = value(x)
    return fresh(ctx, v * (const(ctx, 1) - _msb(ctx, v)), like.depth)


def less(ctx, like, x, y):
    shape = like.shape
    vx = jnp.broadcast_to(value(x), shape)
    return fresh(ctx, _msb(ctx, vx - value(y)), like.depth)


def less_public(ctx, like, x, c):
    return fresh(ctx, _msb(ctx, value(x) - as_ring(ctx, c)), like.depth)


def select(ctx, like, b, x, y):
    shape = like.shape
    vx, vy = value(x), value(y)
    out = value(b) * (vx - vy) + vy
    return fresh(ctx, jnp.broadcast_to(out, shape), like.depth)


def _plain_tree(ctx, v, axis: int):
    """The protocol's max/argmax tree on plaintext ring values (same pairing and tie rule:
    the later element wins only if strictly greater, by the MSB of the ring difference)."""
    axis = axis % v.ndim
    v = jnp.moveaxis(v, axis, 0)
    k = v.shape[0]
    idx = jnp.broadcast_to(jnp.arange(k, dtype=v.dtype).reshape((k,) + (1,) * (v.ndim - 1)),
                           v.shape)
    while v.shape[0] > 1:
        n, h = v.shape[0], v.shape[0] // 2
        va, vb, ia, ib = v[0:2 * h:2], v[1:2 * h:2], idx[0:2 * h:2], idx[1:2 * h:2]
        lt = _msb(ctx, va - vb)
        m, i = lt * (vb - va) + va, lt * (ib - ia) + ia
        v = jnp.concatenate([m, v[2 * h:]]) if n % 2 else m
        idx = jnp.concatenate([i, idx[2 * h:]]) if n % 2 else i
    return v[0], idx[0]


def max_(ctx, like, x, axis=-1):
    return fresh(ctx, _plain_tree(ctx, value(x), axis)[0], like.depth)


def argmax(ctx, like, x, axis=-1):
    return fresh(ctx, _plain_tree(ctx, value(x), axis)[1], like.depth)


def max_argmax(ctx, like, x, axis=-1):
    m, i = _plain_tree(ctx, value(x), axis)
    return fresh(ctx, m, like[0].depth), fresh(ctx, i, like[1].depth)
