"""Boolean protocols over XOR shares (bits packed in uint words) and the A2B / B2A conversions.

AND uses boolean Beaver triples from the dealer. A2B adds the parties' shares (x0, 0) + (0, x1)
with a Kogge-Stone parallel-prefix adder: one AND layer for the generate bits, then log2(l)
levels, each a single exchange carrying both ANDs of the level. Exact for every input.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pcformer.runtime import channel, dealer
from pcformer.runtime.config import MPCConfig
from pcformer.runtime.costs import both, free, log2, n_elems, offline
from pcformer.runtime.parties import mine, only_party0, row, rows
from pcformer.runtime.shares import AShare, BShare

from . import ideal
from ._base import const, protocol
from .registry import ProtocolOp, register


def _width_bits(ctx, width):
    return ctx.ring_bits if width is None else width


@protocol("xor")
def xor(ctx, x: BShare, y: BShare) -> BShare:
    return BShare(x.data ^ y.data, max(x.depth, y.depth), max(x.width, y.width))


def not_(ctx, x: BShare) -> BShare:
    """Flip every bit of the `width` low bits: party 0 xors with the all-ones mask (local)."""
    mask = dealer._mask(x.width, x.data.dtype)
    return BShare(x.data ^ only_party0(jnp.broadcast_to(mask, x.shape)), x.depth, x.width)


def _party0_mask(x):
    """[all ones, 0] broadcastable against a party-axis array: `v & mask` = only_party0(v[0])
    for a public v (every row equal), without unstacking and restacking."""
    m = np.array([np.iinfo(x.dtype).max, 0], dtype=x.dtype)
    return mine(jnp.asarray(m).reshape((2,) + (1,) * (x.ndim - 1)))


def _and_arrays(ctx, x, y, width: int, depth: int, triple=None):
    """x & y for two [2, ...] boolean share arrays of one shape: one dealer message, one exchange
    of 2 * n * width bits per party. Returns (product share array, depth).
    `triple`: (a, b, c) already dealt (the adder draws all its layers' material at once)."""
    a, b, c = triple if triple is not None else dealer.and_triple(ctx, x.shape[1:], width)
    (re, rf), d = channel.exchange(ctx, (x ^ a, y ^ b), depth, width)
    e = x ^ a ^ re
    f = y ^ b ^ rf
    return c ^ (e & b) ^ (f & a) ^ (e & f & _party0_mask(e)), d


def _and_layer(ctx, pairs, width: int, depth: int):
    """Several ANDs of [2, ...] boolean share arrays in ONE exchange (and one dealer message).

    Each party sends 2 * n * width bits per AND. Same-shape ANDs are stacked into one array (the
    ledger is the same; the program is smaller, which keeps XLA compile time down).
    Returns the product share arrays.
    """
    if len(pairs) == 1 and pairs[0][0].shape == pairs[0][1].shape:
        z, d = _and_arrays(ctx, pairs[0][0], pairs[0][1], width, depth)
        return [z], d
    if len(pairs) > 1 and len({x.shape for x, _ in pairs} | {y.shape for _, y in pairs}) == 1:
        xs = jnp.stack([x for x, _ in pairs], axis=1)
        ys = jnp.stack([y for _, y in pairs], axis=1)
        (z,), d = _and_layer(ctx, [(xs, ys)], width, depth)
        return [z[:, i] for i in range(len(pairs))], d
    triples = dealer.and_triples(ctx, [x.shape[1:] for x, _ in pairs], width)
    payload = tuple((x ^ a, y ^ b) for (x, y), (a, b, _) in zip(pairs, triples))
    recv, d = channel.exchange(ctx, payload, depth, width)
    out = []
    for (x, y), (a, b, c), (re, rf) in zip(pairs, triples, recv):
        e = x ^ a ^ re
        f = y ^ b ^ rf
        out.append(c ^ (e & b) ^ (f & a) ^ only_party0(e[0] & f[0]))
    return out, d


@protocol("and")
def and_(ctx, x: BShare, y: BShare) -> BShare:
    """x & y with a boolean Beaver triple: 1 round, 2*n*width bits per party, n*width offline."""
    width = max(x.width, y.width)
    (z,), d = _and_layer(ctx, [(x.data, y.data)], width, max(x.depth, y.depth))
    return BShare(z, d, width)


def _prefix_carries(ctx, x: AShare):
    """Kogge-Stone over (x0, 0) and (0, x1): returns (p, G, depth) with G[i] = carry out of bit i."""
    l = ctx.ring_bits
    zero = jnp.zeros_like(row(x.data, 0))
    a = rows(row(x.data, 0), zero)            # party 0's share as a boolean sharing
    b = rows(zero, row(x.data, 1))            # party 1's share as a boolean sharing
    p = x.data                                # a ^ b, local
    levels = log2(l)
    S = tuple(x.shape)
    # all 2*levels AND units (1 + 2 per middle level + 1) from one PRG call, dealt per layer
    mat = dealer.and_material(ctx, 2 * levels, S, l)
    with ctx.op("and"):
        g, d = _and_arrays(ctx, a, b, l, x.depth, dealer.deal_and(ctx, mat, 0, 1, S, l))
    # GP[:, 0] = G, GP[:, 1] = P: a level is ONE stacked AND of (P, P) with (G, P) << s, and
    # GP' = (G ^ P & (G << s), P & (P << s)) = AND ^ (GP & [ones, 0]): no unstack / restack.
    GP = jnp.stack([g, p], axis=1)
    keep_g = jnp.asarray(np.array([np.iinfo(g.dtype).max, 0], dtype=g.dtype)).reshape(
        (1, 2) + (1,) * (g.ndim - 1))
    for i in range(levels - 1):
        s = jnp.asarray(1 << i, GP.dtype)
        P2 = jnp.broadcast_to(GP[:, 1:2], GP.shape)
        with ctx.op("and"):
            tr = dealer.deal_and(ctx, mat, 1 + 2 * i, 3 + 2 * i, (2,) + S, l)
            res, d = _and_arrays(ctx, P2, GP << s, l, d, tr)
        GP = res ^ (GP & keep_g)
    G, P = GP[:, 0], GP[:, 1]
    with ctx.op("and"):
        tr = dealer.deal_and(ctx, mat, 2 * levels - 1, 2 * levels, S, l)
        res, d = _and_arrays(ctx, P, G << jnp.asarray(1 << (levels - 1), G.dtype), l, d, tr)
    return p, G ^ res, d


@protocol("a2b")
def a2b(ctx, x: AShare) -> BShare:
    """Arithmetic to boolean shares of the same value: 1 + log2(l) rounds."""
    p, G, d = _prefix_carries(ctx, x)
    return BShare(p ^ (G << jnp.asarray(1, G.dtype)), d, ctx.ring_bits)


@protocol("msb")
def msb(ctx, x: AShare) -> BShare:
    """Boolean share (width 1) of the most significant bit of x: the same adder as a2b."""
    l = ctx.ring_bits
    p, G, d = _prefix_carries(ctx, x)
    top = jnp.asarray(l - 1, G.dtype)
    bit = ((p >> top) ^ (G >> jnp.asarray(l - 2, G.dtype))) & const(ctx, 1)
    return BShare(bit, d, 1)


@protocol("b2a")
def b2a(ctx, b: BShare) -> AShare:
    """Boolean bit (width 1) to an arithmetic 0/1 share: dealer bit r in both domains; open
    c = b xor r (n bits each, 1 round); b = c + r - 2cr."""
    if b.width != 1:
        raise ValueError(f"b2a converts single bits (width 1), got width {b.width}")
    rb, ra = dealer.bit_pair(ctx, b.shape)
    rc, d = channel.exchange(ctx, b.data ^ rb, b.depth, 1)
    c = b.data ^ rb ^ rc
    z = only_party0(c[0]) + ra * (const(ctx, 1) - const(ctx, 2) * c)
    return AShare(z, d)


# ----------------------------------------------------------------------------- cost formulas
# each op's messages from static shapes (runtime/costs.py: Msg and placement); tests hold them
# equal to the ledger the protocols above write, message by message

def and_cost(x_shape, y_shape=None, config: MPCConfig = MPCConfig(), width=None):
    """Boolean Beaver AND of `width`-bit words: offline n*w; online 2*n*w each."""
    nw = n_elems(x_shape) * (config.ring_bits if width is None else width)
    return [offline(nw, "and"), both(2 * nw, 1, "and")]


def a2b_cost(x_shape, config: MPCConfig = MPCConfig()):
    """Kogge-Stone: generate layer (1 AND of l-bit words), then log2(l) levels of 2 ANDs (the
    last level 1), each level one exchange and one dealer message: 1 + log2(l) rounds."""
    nl = n_elems(x_shape) * config.ring_bits
    L = log2(config.ring_bits)
    msgs = [offline(nl, "and"), both(2 * nl, 1, "and")]
    for i in range(L):
        k = 1 if i == L - 1 else 2
        msgs += [offline(k * nl, "and"), both(2 * k * nl, 2 + i, "and")]
    return msgs


msb_cost = a2b_cost  # the MSB is read off the same adder (carry into bit l-1)


def b2a_cost(x_shape, config: MPCConfig = MPCConfig()):
    """Bit to arithmetic: offline r1 (n*l); online c = b xor r (n bits each), 1 round."""
    n = n_elems(x_shape)
    return [offline(n * config.ring_bits, "b2a"), both(n, 1, "b2a")]


# ----------------------------------------------------------------------------- registry table
# helpers of the comparisons (compare.py): the lowering emits none of them directly
TABLE = (
    ProtocolOp("xor", xor, free),
    ProtocolOp("not", not_, free),
    ProtocolOp("and", and_, and_cost, ideal.and_),
    ProtocolOp("a2b", a2b, a2b_cost, ideal.a2b),
    ProtocolOp("msb", msb, msb_cost, ideal.msb),
    ProtocolOp("b2a", b2a, b2a_cost, ideal.b2a),
)
register(*TABLE)
