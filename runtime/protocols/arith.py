"""Arithmetic protocols over additive shares in Z_2^l.

Every protocol is a pure function of the context, shares and public values; every message goes
through `channel`; row i of every local computation uses only party i's share, party i's dealer
material and what party i received. Output depth = max(input depths) + rounds(op).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from pcformer.runtime import channel, dealer, ring
from pcformer.runtime.config import MPCConfig
from pcformer.runtime.costs import Msg, both, free, n_elems, offline
from pcformer.runtime.parties import by_party, by_party_lazy, only_party0, per_party, row
from pcformer.runtime.shares import AShare

from . import ideal
from .adapt import bcast, encode, input_shape, out_shape, unary, weight_id
from .registry import FromIR, ProtocolOp, register

from ._base import (as_ring, canon_dn as _canon_dn, const, pow2,
                    private_operand as _private_operand, protocol)


def _bshape(*shapes):
    return tuple(np.broadcast_shapes(*shapes))


def _bdata(x: AShare, shape):
    return jnp.broadcast_to(x.data, x.data.shape[:1] + tuple(shape))


@protocol("share")
def share(ctx, x, owner: int) -> AShare:
    """Input sharing by its owner: 0 communication.

    The non-owner's share is PRG output from a seed both parties share; the owner's share is
    x - that. `x` is a ring array (use `share_fixed` for floats).
    """
    x = as_ring(ctx, x)
    r = ctx.uniform(x.shape)
    return AShare(by_party(owner, x - r, r), 0)


def share_fixed(ctx, x, owner: int) -> AShare:
    """Fixed-point encode (in jit, no range check) and share a float array."""
    return share(ctx, ring.encode_traced(x, ctx.config.frac_bits, ctx.ring_bits), owner)


@protocol("reveal")
def reveal(ctx, x: AShare, to: int | None = None):
    """Open x to both parties (to=None: one exchange, n*l bits each) or to party `to` only.

    Returns the ring value (as seen by the receiver(s)).
    """
    if to is None:
        recv, _ = channel.exchange(ctx, x.data, x.depth, ctx.ring_bits)
        return channel.opened(ctx, x.data + recv)
    other, _ = channel.send(ctx, 1 - to, row(x.data, 1 - to), x.depth, ctx.ring_bits)
    return row(x.data, to) + other


@protocol("add")
def add(ctx, x: AShare, y: AShare) -> AShare:
    shape = _bshape(x.shape, y.shape)
    return AShare(_bdata(x, shape) + _bdata(y, shape), max(x.depth, y.depth))


@protocol("sub")
def sub(ctx, x: AShare, y: AShare) -> AShare:
    shape = _bshape(x.shape, y.shape)
    return AShare(_bdata(x, shape) - _bdata(y, shape), max(x.depth, y.depth))


@protocol("neg")
def neg(ctx, x: AShare) -> AShare:
    return AShare(-x.data, x.depth)


@protocol("add_public")
def add_public(ctx, x: AShare, c) -> AShare:
    """x + c for a public ring value c: party 0 adds it."""
    c = as_ring(ctx, c)
    shape = _bshape(x.shape, c.shape)
    return AShare(_bdata(x, shape) + only_party0(jnp.broadcast_to(c, shape)), x.depth)


@protocol("mul_public")
def mul_public(ctx, x: AShare, c) -> AShare:
    """x * c for a public ring value c (integer product; fixed-point callers truncate after)."""
    c = as_ring(ctx, c)
    return AShare(x.data * c[None], x.depth)


def _same_shape(op, x, y):
    if tuple(x.shape) != tuple(y.shape):
        raise ValueError(f"{op}: operands must have the same shape (broadcast first), "
                         f"got {tuple(x.shape)} and {tuple(y.shape)}")


@protocol("mul")
def mul(ctx, x: AShare, y: AShare) -> AShare:
    """Beaver multiplication: open e = x - a and f = y - b in one exchange (2*n*l bits each)."""
    _same_shape("mul", x, y)
    a, b, c = dealer.beaver_triple(ctx, x.shape)
    (re, rf), d = channel.exchange(ctx, (x.data - a, y.data - b), max(x.depth, y.depth),
                                   ctx.ring_bits)
    e = x.data - a + re
    f = y.data - b + rf
    z = c + e * b + f * a + only_party0(e[0] * f[0])
    return AShare(z, d)


@protocol("square")
def square(ctx, x: AShare) -> AShare:
    """x^2 with a square pair (a, a^2): open e = x - a (n*l bits each); x^2 = e^2 + 2ea + a^2."""
    a, s = dealer.square_pair(ctx, x.shape)
    re, d = channel.exchange(ctx, x.data - a, x.depth, ctx.ring_bits)
    e = x.data - a + re
    z = s + const(ctx, 2) * e * a + only_party0(e[0] * e[0])
    return AShare(z, d)


def _party_batched(dn):
    """dimension_numbers for operands with a leading party axis as an extra batch dim."""
    (ca, cb), (ba, bb) = dn
    inc = lambda t: tuple(int(i) + 1 for i in t)
    return ((inc(ca), inc(cb)), ((0,) + inc(ba), (0,) + inc(bb)))


def _mm(ctx, a, b, dn, **kw):
    return ring.ring_matmul(a, b, dn, ctx.ring_bits, ctx.config.matmul_kernel, **kw)


@protocol("dot_general")
def dot_general(ctx, x: AShare, y: AShare, dimension_numbers=None) -> AShare:
    """Secret x secret dot_general with a matrix triple: open E = X - A, F = Y - B in one exchange
    ((|X| + |Y|) * l bits each); party i computes X_i.F + E.B_i + C_i (sums to X.Y)."""
    dn = _canon_dn(dimension_numbers, len(x.shape))
    a, b, c = dealer.matrix_triple(ctx, x.shape, y.shape, dn)
    (re, rf), d = channel.exchange(ctx, (x.data - a, y.data - b), max(x.depth, y.depth),
                                   ctx.ring_bits)
    e = x.data - a + re
    f = y.data - b + rf
    pdn = _party_batched(dn)
    z = _mm(ctx, x.data, f, pdn) + _mm(ctx, e, b, pdn) + c
    return AShare(z, d)


def _private_product(ctx, x, w, party, dn, weight_id, w_on_left, w_bits, elementwise):
    p = party
    x = _private_operand(x, p)
    w = as_ring(ctx, w)
    if elementwise:
        _same_shape("mul_private", x, AShare(w[None], 0))
        a, b, c = dealer.elementwise_private_triple(ctx, x.shape, p, weight_id)
    else:
        a, b, c = dealer.private_triple(ctx, x.shape, w.shape, dn, p, weight_id, w_on_left)

    def mm(u, wv, small=None):
        """u (x-shaped) times wv (W-shaped): elementwise or dot_general in the caller's order."""
        if elementwise:
            return u * wv
        if w_on_left:
            return _mm(ctx, wv, u, dn, a_bits=small)
        return _mm(ctx, u, wv, dn, b_bits=small)

    if dealer.amortised(p):
        # setup (once per deployment): the server opens F = W - B to the client
        with ctx.phase("setup"):
            f, _ = channel.send(ctx, p, w - b, 0, ctx.ring_bits)
    else:
        # a client's plaintext operand changes per run: fresh B, opened online in the same
        # round as E (both depend only on what the senders hold when x is ready)
        f, _ = channel.send(ctx, p, w - b, x.depth, ctx.ring_bits)
    # online: party 1-p opens E = x_{1-p} - A to party p
    e, d = channel.send(ctx, 1 - p, row(x.data, 1 - p) - a, x.depth, ctx.ring_bits)
    z = by_party_lazy(p, lambda: mm(row(x.data, p) + e, w, w_bits) + row(c, p),
                      lambda: mm(a, f) + row(c, 1 - p))
    return AShare(z, d)


@protocol("mul_private")
def mul_private(ctx, x, w, party: int, weight_id: str = "w") -> AShare:
    """Elementwise x * W, W held in plaintext by `party` (p); x secret or private to party 1-p.

    Setup: p sends F = W - B (|W|*l bits, once per deployment; only the server's weights, p = 0:
    a client's W is opened online every run with a fresh B, see `dealer.amortised`).
    Online: 1-p sends E = x_{1-p} - A (n*l bits);
    p computes (x_p + E)*W + c_p, 1-p computes A*F + c_{1-p}. Offline: n*l bits to party 1.
    """
    return _private_product(ctx, x, w, party, None, weight_id, False, None, True)


@protocol("dot_general_private")
def dot_general_private(ctx, x, w, party: int, dimension_numbers=None, weight_id: str = "w",
                        w_on_left: bool = False, w_bits: int | None = None) -> AShare:
    """dot_general(x, W) (or dot_general(W, x) with w_on_left) with W held in plaintext by `party`.

    Same protocol as `mul_private` with matrix products: setup |W|*l bits from p; online |x|*l
    bits from 1-p, one round; offline |out|*l bits to party 1. `w_bits`: |W| < 2^w_bits as signed
    (fewer limb GEMMs for p's product).
    """
    xs = x.shape if isinstance(x, AShare) else jnp.shape(x)
    ws = jnp.shape(w)
    dn = _canon_dn(dimension_numbers, len(ws) if w_on_left else len(xs))
    return _private_product(ctx, x, w, party, dn, weight_id, w_on_left, w_bits, False)


@protocol("truncate")
def truncate(ctx, x: AShare, bits: int | None = None, mode: str | None = None) -> AShare:
    """Divide by 2^bits (default f) rounding toward -inf, within the mode's error.

    local (SecureML): party 0 shifts its signed share, party 1 computes -((-x1) >> f); no
    communication; off by <= 1 LSB except, with probability about |x|/2^(l-1), by about 2^(l-f).
    dealer: open c = x + 2^(l-2) + r once (n*l bits each); exact up to +1 LSB for |x| < 2^(l-2).
    """
    f = ctx.config.frac_bits if bits is None else bits
    mode = mode or ctx.config.trunc_mode
    l = ctx.ring_bits
    dt = ring.ring_dtype(l)
    sh = jnp.asarray(f, dt)
    if mode == "local":
        return AShare(per_party(
            x.data, lambda x0: ring.from_signed(ring.to_signed(x0) >> ring.to_signed(sh)),
            lambda x1: -ring.from_signed(ring.to_signed(-x1) >> ring.to_signed(sh))), x.depth)
    if mode != "dealer":
        raise ValueError(f"unknown truncation mode {mode!r}")
    return _truncate_dealer(ctx, x, f)


def _truncate_dealer(ctx, x: AShare, f: int) -> AShare:
    l = ctx.ring_bits
    dt = ring.ring_dtype(l)
    r, q, m = dealer.trunc_triple(ctx, x.shape, f)
    xp = x.data + only_party0(jnp.broadcast_to(const(ctx, 1 << (l - 2)), x.shape))
    rc, d = channel.exchange(ctx, xp + r, x.depth, l)
    c = xp + r + rc                                   # both rows hold the public c
    c_low = c & const(ctx, (1 << (l - 1)) - 1)
    c_m = c >> jnp.asarray(l - 1, dt)
    one = const(ctx, 1)
    # 2^(l-1) v with v = c_m xor r_m = c_m + r_m (1 - 2 c_m): linear in the shares of r_m
    v = only_party0(c_m[0]) + m * (one - const(ctx, 2) * c_m)
    z = (only_party0((c_low >> jnp.asarray(f, dt))[0] - pow2(ctx, l - 2 - f))
         - q + v * pow2(ctx, l - 1 - f))
    return AShare(z, d)


# ----------------------------------------------------------------------------- cost formulas
# each op's messages from static shapes (runtime/costs.py: Msg and placement); tests hold them
# equal to the ledger the protocols above write, message by message

def reveal_cost(x_shape, config: MPCConfig = MPCConfig(), to=None):
    """To both: one exchange, n*l each. To party p: the other sends n*l."""
    b = n_elems(x_shape) * config.ring_bits
    if to is None:
        return [both(b, 1, "reveal")]
    return [Msg("online", (b, 0) if to == 1 else (0, b), 1, "reveal")]


def mul_cost(x_shape, y_shape=None, config: MPCConfig = MPCConfig()):
    """Beaver: offline c1 (n*l to party 1); online e and f in one exchange (2*n*l each)."""
    nl = n_elems(x_shape) * config.ring_bits
    return [offline(nl, "mul"), both(2 * nl, 1, "mul")]


def square_cost(x_shape, config: MPCConfig = MPCConfig()):
    """Square pair: offline s1 (n*l); online e (n*l each)."""
    nl = n_elems(x_shape) * config.ring_bits
    return [offline(nl, "square"), both(nl, 1, "square")]


def dot_shape(x_shape, y_shape, dimension_numbers=None):
    dn = dimension_numbers or (((len(x_shape) - 1,), (0,)), ((), ()))
    (ca, cb), (ba, bb) = dn
    batch = [x_shape[i] for i in ba]
    fa = [s for i, s in enumerate(x_shape) if i not in ca and i not in ba]
    fb = [s for i, s in enumerate(y_shape) if i not in cb and i not in bb]
    return tuple(batch + fa + fb)


def dot_general_cost(x_shape, y_shape, config: MPCConfig = MPCConfig(), dimension_numbers=None):
    """Matrix triple: offline |C|*l; online E and F in one exchange ((|X|+|Y|)*l each)."""
    l = config.ring_bits
    out = dot_shape(x_shape, y_shape, dimension_numbers)
    return [offline(n_elems(out) * l, "dot_general"),
            both((n_elems(x_shape) + n_elems(y_shape)) * l, 1, "dot_general")]


def _private_cost(out_n, x_n, w_n, party, l, name):
    from_p = lambda b: (b, 0) if party == 0 else (0, b)
    from_q = lambda b: (0, b) if party == 0 else (b, 0)
    # the server's W is opened once per deployment (setup); a client's W every run, online, in
    # the same round as E (runtime.dealer.amortised)
    return [offline(out_n * l, name),
            Msg("setup" if party == 0 else "online", from_p(w_n * l), 1, name),
            Msg("online", from_q(x_n * l), 1, name)]


def mul_private_cost(x_shape, w_shape, config: MPCConfig = MPCConfig(), party: int = 0, **attrs):
    """W held by party p: setup F = W - B (|W|*l from p); online E (n*l from 1-p); offline n*l."""
    n = n_elems(x_shape)
    return _private_cost(n, n, n_elems(w_shape), party, config.ring_bits, "mul_private")


def dot_general_private_cost(x_shape, w_shape, config: MPCConfig = MPCConfig(),
                             party: int = 0, dimension_numbers=None, w_on_left: bool = False,
                             **attrs):
    """As mul_private with a matrix product; offline |out|*l."""
    out = (dot_shape(w_shape, x_shape, dimension_numbers) if w_on_left
           else dot_shape(x_shape, w_shape, dimension_numbers))
    return _private_cost(n_elems(out), n_elems(x_shape), n_elems(w_shape), party,
                         config.ring_bits, "dot_general_private")


def truncate_cost(x_shape, config: MPCConfig = MPCConfig(), bits=None, mode=None):
    """local: free. dealer: offline 2*n*l (shares of r'>>f and r_m); online c (n*l each)."""
    if (mode or config.trunc_mode) == "local":
        return []
    nl = n_elems(x_shape) * config.ring_bits
    return [offline(2 * nl, "truncate"), both(nl, 1, "truncate")]


# ----------------------------------------------------------------------------- registry table
# how each op the lowering emits is called from its IR op (attrs documented in compiler/ir.py)

def _share_operands(op, args, config):
    return (encode(config, args[0], op.attrs.get("enc", 0)),)


def _mul_private_operands(op, args, config):
    out = out_shape(op)
    return bcast(args[0], out), jnp.broadcast_to(encode(config, args[1], op.attrs["enc"]), out)


def _dot_private_shapes(op):
    i = op.attrs["plain_index"]
    return op.operands[1 - i].shape, op.operands[i].shape


def _dot_private_operands(op, args, config):
    i = op.attrs["plain_index"]
    return args[1 - i], encode(config, args[i], op.attrs["enc"])


def _dot_private_kwargs(op):
    i = op.attrs["plain_index"]
    return {"party": op.attrs["party"], "dimension_numbers": op.attrs["dimension_numbers"],
            "weight_id": weight_id(op.operands[i]), "w_on_left": i == 0}


TABLE = (
    ProtocolOp("share", share, free, None,
               FromIR(input_shape, _share_operands, lambda op: {"owner": op.attrs["party"]})),
    ProtocolOp("reveal", reveal, reveal_cost, None, unary(lambda op: {"to": op.attrs["to"]})),
    ProtocolOp("add", add, free),
    ProtocolOp("sub", sub, free),
    ProtocolOp("neg", neg, free),
    ProtocolOp("add_public", add_public, free),
    ProtocolOp("mul_public", mul_public, free),
    ProtocolOp("mul", mul, mul_cost, ideal.mul,
               FromIR(lambda op: (out_shape(op),) * 2,
                      lambda op, args, config: tuple(bcast(a, out_shape(op)) for a in args)),
               elementwise=True),
    ProtocolOp("square", square, square_cost, ideal.square,
               FromIR(lambda op: (out_shape(op),),
                      lambda op, args, config: (bcast(args[0], out_shape(op)),)),
               elementwise=True),
    ProtocolOp("dot_general", dot_general, dot_general_cost, ideal.dot_general,
               FromIR(lambda op: (op.operands[0].shape, op.operands[1].shape),
                      lambda op, args, config: tuple(args),
                      lambda op: {"dimension_numbers": op.attrs["dimension_numbers"]})),
    ProtocolOp("mul_private", mul_private, mul_private_cost, ideal.mul_private,
               FromIR(lambda op: (out_shape(op),) * 2, _mul_private_operands,
                      lambda op: {"party": op.attrs["party"],
                                  "weight_id": weight_id(op.operands[1])})),
    ProtocolOp("dot_general_private", dot_general_private, dot_general_private_cost,
               ideal.dot_general_private,
               FromIR(_dot_private_shapes, _dot_private_operands, _dot_private_kwargs)),
    ProtocolOp("truncate", truncate, truncate_cost, ideal.truncate,
               unary(lambda op: {"bits": op.attrs["shift"]}), elementwise=True,
               traced_attrs=("shift",)),
)
register(*TABLE)
