"""The dealer (trusted helper): correlated randomness generated inside the jitted program.

PRG-seed scheme (as CrypTen's TTP and SPU's SEMI2K "trusted first party"): the dealer shares a
seed with each party (`ctx.dealer_rows`: row q from the stream it shares with party q;
`ctx.uniform(party=q)`), so every uniformly random component of a party's material is PRG
output of that party's seed and costs nothing to transmit (`ctx.dealer_block(owners, shape)`:
one block whose row i comes from party owners[i]'s stream). The dealer sends only the correction
that makes the correlation hold to party 1 (e.g. c1 = a*b - c0). Each function deals through
`channel.deal` exactly once (one offline ledger entry), passing the correction as a thunk: in a
party's own process (runtime/dealer_tape.py) it is never computed there (it needs the other
party's material) but read from the party's tape. Each function draws its randomness in one
block where it can (fast compiles). The dealer computes on both parties' rows; what it returns
is as the parties hold it (`parties.mine` / `parties.rows`: both rows in one process, the
device's own on a party's device).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import channel, ring
from .parties import mine, rows
from .shares import SETUP_PARTY


_TRIPLE = (0, 1, 0, 1, 0)   # whose stream each row of a triple's block is: a0, a1, b0, b1, c0


def beaver_triple(ctx, shape):
    """(a, b, c) with c = a*b: offline n*l bits to party 1."""
    u = ctx.dealer_block(_TRIPLE, shape)          # rows a0, a1, b0, b1, c0 (sliced, not restacked)
    a, b, c0 = u[0:2], u[2:4], u[4]
    c1 = channel.deal(ctx, 1, lambda: (a[0] + a[1]) * (b[0] + b[1]) - c0, ctx.ring_bits)
    return mine(a), mine(b), rows(c0, c1)


def square_pair(ctx, shape):
    """(a, s) with s = a^2: offline n*l bits to party 1."""
    u = ctx.dealer_block((0, 1, 0), shape)        # rows a0, a1, s0
    a, s0 = u[0:2], u[2]
    s1 = channel.deal(ctx, 1, lambda: (a[0] + a[1]) * (a[0] + a[1]) - s0, ctx.ring_bits)
    return mine(a), rows(s0, s1)


def _matmul(ctx, x, y, dn, **kw):
    return ring.ring_matmul(x, y, dn, ctx.ring_bits, ctx.config.matmul_kernel, **kw)


def _shape_of(thunk) -> tuple:
    return tuple(jax.eval_shape(thunk).shape)


def matrix_triple(ctx, x_shape, y_shape, dn):
    """(A, B, C) with C = dot_general(A, B, dn): offline |C|*l bits to party 1."""
    a = ctx.dealer_rows(tuple(x_shape))
    b = ctx.dealer_rows(tuple(y_shape))
    product = lambda: _matmul(ctx, a[0] + a[1], b[0] + b[1], dn)   # noqa: E731
    c0 = ctx.uniform(_shape_of(product), party=0)
    c1 = channel.deal(ctx, 1, lambda: product() - c0, ctx.ring_bits)
    return mine(a), mine(b), rows(c0, c1)


def amortised(party: int) -> bool:
    """Whether a plaintext operand held by `party` is opened once per deployment (setup phase).

    Only the server's (party 0, the weight owner): its values are fixed for a deployment (the
    compiler re-keys the deployment when they change). A client's plaintext operand (a one-hot of
    its token ids, any per-run input) is opened every run with a fresh mask, online: a mask
    reused across runs would let the server subtract two openings and read the difference of
    the client's inputs.
    """
    return party == SETUP_PARTY


def setup_mask(ctx, shape, party: int, weight_id: str):
    """B for a plaintext operand held by `party`: per deployment if `amortised` (from the setup
    key the dealer shares with the server), else per run (from the dealer's stream with `party`)."""
    if amortised(party):
        return ctx.uniform(shape, weight_id=weight_id)
    return ctx.uniform(shape, party=party)


def private_triple(ctx, x_shape, w_shape, dn, party: int, weight_id: str, w_on_left: bool):
    """Material for a product with a weight W held in plaintext by `party` (p).

    A (shape of the other operand) goes to party 1-p, B (shape of W) to party p, both PRG output.
    `setup_mask(...)` decides B: for the server's weights a per-deployment mask (F = W - B is
    opened once, at setup), for anything else fresh every run. C = A.B (or B.A when W is the
    left operand) is shared: |C|*l bits to party 1.
    """
    a = ctx.uniform(tuple(x_shape), party=1 - party)
    b = setup_mask(ctx, tuple(w_shape), party, weight_id)
    product = (lambda: _matmul(ctx, b, a, dn)) if w_on_left else (lambda: _matmul(ctx, a, b, dn))
    c0 = ctx.uniform(_shape_of(product), party=0)
    c1 = channel.deal(ctx, 1, lambda: product() - c0, ctx.ring_bits)
    return a, b, rows(c0, c1)


def elementwise_private_triple(ctx, shape, party: int, weight_id: str):
    """As `private_triple` for an elementwise product: C = A*B, n*l bits to party 1."""
    a, c0 = ctx.dealer_block((1 - party, 0), shape)   # A to party 1-p, c0 to party 0
    b = setup_mask(ctx, tuple(shape), party, weight_id)
    c1 = channel.deal(ctx, 1, lambda: a * b - c0, ctx.ring_bits)
    return a, b, rows(c0, c1)


def _mask(width: int, dtype):
    """All-ones in the low `width` bits of the word type."""
    bits = jnp.iinfo(dtype).bits
    return jnp.asarray(np.array((1 << min(width, bits)) - 1, dtype=np.uint64)).astype(dtype)


def _and_block(ctx, lead, width: int):
    """[5, *lead] boolean material, rows a0, a1, b0, b1, c0 (c1 is dealt), `width` bits."""
    dt = ring.ring_dtype(ctx.ring_bits)
    u = ctx.dealer_block(_TRIPLE, lead)
    return u & _mask(width, dt) if width < jnp.iinfo(dt).bits else u


def _and_correction(a, b, c0):
    return ((a[0] ^ a[1]) & (b[0] ^ b[1])) ^ c0


def and_triples(ctx, shapes, width: int):
    """Boolean triples c = a & b (`width` bits per element) for several ANDs, dealt in ONE
    message: offline sum(n)*width bits to party 1. Returns a list of (a, b, c)."""
    blocks = [_and_block(ctx, shape, width) for shape in shapes]
    parts = [(u[0:2], u[2:4], u[4]) for u in blocks]
    corr = channel.deal(ctx, 1, lambda: tuple(_and_correction(*p) for p in parts), width)
    return [(mine(a), mine(b), rows(c0, c1)) for (a, b, c0), c1 in zip(parts, corr)]


def and_triple(ctx, shape, width: int):
    """One boolean AND triple (a, b, c) of `shape`: offline n*width bits to party 1.

    Same message as `and_triples(ctx, [shape], width)[0]`, with fewer ops: a and b are slices
    of the one PRG block (no unstack / restack), and the mask is skipped when the width fills
    the word (smaller XLA programs for the adder's seven AND layers).
    """
    u = _and_block(ctx, shape, width)
    a, b, c0 = u[0:2], u[2:4], u[4]
    (c1,) = channel.deal(ctx, 1, lambda: (_and_correction(a, b, c0),), width)
    return mine(a), mine(b), rows(c0, c1)


def and_material(ctx, units: int, shape, width: int):
    """PRG material and dealer corrections for `units` AND triples of `shape`, from ONE PRG call
    and one vectorised correction (nothing is dealt yet: `deal_and` sends each layer's part when
    the layer runs, so the ledger keeps one offline entry per layer, in order).
    Returns (u [5, units, *shape], corr [units, *shape] or None in a party's own process)."""
    u = _and_block(ctx, (units,) + tuple(shape), width)
    corr = _and_correction(u[0:2], u[2:4], u[4]) if ctx.dealer_computes else None
    return u, corr


def deal_and(ctx, material, lo: int, hi: int, shape, width: int):
    """Deal units lo:hi of `and_material` as one triple (a, b, c) of `shape`:
    one offline message of prod(shape)*width bits to party 1."""
    u, corr = material
    full = (2,) + tuple(shape)
    a = u[0:2, lo:hi].reshape(full)
    b = u[2:4, lo:hi].reshape(full)
    c0 = u[4, lo:hi].reshape(tuple(shape))
    part = (lambda: _and_correction(a, b, c0)) if corr is None else (
        lambda: corr[lo:hi].reshape(tuple(shape)))
    (c1,) = channel.deal(ctx, 1, lambda: (part(),), width)
    return mine(a), mine(b), rows(c0, c1)


def bit_pair(ctx, shape):
    """A random bit r shared in both domains: (boolean shares of width 1, arithmetic shares).

    The boolean shares are both PRG output; the arithmetic r1 = r - r0 is dealt: n*l bits to party 1.
    """
    one = jnp.asarray(1, ring.ring_dtype(ctx.ring_bits))
    u = ctx.dealer_block((0, 1, 0), shape)        # rows rb0, rb1, r0 (r1 is dealt)
    rb, r0 = u[0:2] & one, u[2]
    r1 = channel.deal(ctx, 1, lambda: (rb[0] ^ rb[1]) - r0, ctx.ring_bits)
    return mine(rb), rows(r0, r1)


def trunc_triple(ctx, shape, frac: int):
    """Shares of uniform r, of (r mod 2^(l-1)) >> frac and of r's MSB: offline 2*n*l bits to party 1.

    r itself is PRG output for both parties; the two derived values are corrected in one message.
    """
    l = ctx.ring_bits
    dt = ring.ring_dtype(l)
    u = ctx.dealer_block((0, 1, 0, 0), shape)     # rows r0, r1, q0, m0 (q1, m1 are dealt)
    r, q0, m0 = u[0:2], u[2], u[3]

    def corrections():
        rv = r[0] + r[1]
        rlow_sh = (rv & jnp.asarray((1 << (l - 1)) - 1, dt)) >> jnp.asarray(frac, dt)
        return rlow_sh - q0, (rv >> jnp.asarray(l - 1, dt)) - m0

    q1, m1 = channel.deal(ctx, 1, corrections, l)
    return mine(r), rows(q0, q1), rows(m0, m1)
