"""The dealer (trusted helper): correlated randomness generated inside the jitted program.

PRG-seed scheme (as CrypTen's TTP and SPU's SEMI2K "trusted first party"): the dealer shares a
seed with each party, so all of party 0's material and every uniformly random component of
party 1's are PRG output and cost nothing to transmit. The dealer sends only the correction that
makes the correlation hold to party 1 (e.g. c1 = a*b - c0). Each function deals through
`channel.deal` exactly once (one offline ledger entry) and returns material with a party axis.
Each function draws all its randomness in one `ctx.uniform` block (fast compiles).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from . import channel, ring


def _block(ctx, k, shape):
    """k independent uniform ring arrays of `shape`, from one PRG call."""
    u = ctx.uniform((k,) + tuple(shape))
    return [u[i] for i in range(k)]


def beaver_triple(ctx, shape):
    """(a, b, c) with c = a*b: offline n*l bits to party 1."""
    u = ctx.uniform((5,) + tuple(shape))          # rows a0, a1, b0, b1, c0 (sliced, not restacked)
    c1 = channel.deal(ctx, 1, (u[0] + u[1]) * (u[2] + u[3]) - u[4], ctx.ring_bits)
    return u[0:2], u[2:4], jnp.stack([u[4], c1])


def square_pair(ctx, shape):
    """(a, s) with s = a^2: offline n*l bits to party 1."""
    u = ctx.uniform((3,) + tuple(shape))          # rows a0, a1, s0
    av = u[0] + u[1]
    s1 = channel.deal(ctx, 1, av * av - u[2], ctx.ring_bits)
    return u[0:2], jnp.stack([u[2], s1])


def _matmul(ctx, x, y, dn, **kw):
    return ring.ring_matmul(x, y, dn, ctx.ring_bits, ctx.config.matmul_kernel, **kw)


def matrix_triple(ctx, x_shape, y_shape, dn):
    """(A, B, C) with C = dot_general(A, B, dn): offline |C|*l bits to party 1."""
    a = jnp.stack(_block(ctx, 2, x_shape))
    b = jnp.stack(_block(ctx, 2, y_shape))
    c = _matmul(ctx, a[0] + a[1], b[0] + b[1], dn)
    (c0,) = _block(ctx, 1, c.shape)
    c1 = channel.deal(ctx, 1, c - c0, ctx.ring_bits)
    return a, b, jnp.stack([c0, c1])


SETUP_PARTY = 0


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
    """B for a plaintext operand held by `party`: per deployment if `amortised`, else per run."""
    if amortised(party):
        return ctx.uniform(shape, weight_id=weight_id)
    return ctx.uniform(shape)


def private_triple(ctx, x_shape, w_shape, dn, party: int, weight_id: str, w_on_left: bool):
    """Material for a product with a weight W held in plaintext by `party` (p).

    A (shape of the other operand) goes to party 1-p, B (shape of W) to party p, both PRG output.
    `setup_mask(...)` decides B: for the server's weights a per-deployment mask (F = W - B is
    opened once, at setup), for anything else fresh every run. C = A.B (or B.A when W is the
    left operand) is shared: |C|*l bits to party 1.
    """
    (a,) = _block(ctx, 1, x_shape)
    b = setup_mask(ctx, tuple(w_shape), party, weight_id)
    c = _matmul(ctx, b, a, dn) if w_on_left else _matmul(ctx, a, b, dn)
    (c0,) = _block(ctx, 1, c.shape)
    c1 = channel.deal(ctx, 1, c - c0, ctx.ring_bits)
    return a, b, jnp.stack([c0, c1])


def elementwise_private_triple(ctx, shape, party: int, weight_id: str):
    """As `private_triple` for an elementwise product: C = A*B, n*l bits to party 1."""
    (a, c0) = _block(ctx, 2, shape)
    b = setup_mask(ctx, tuple(shape), party, weight_id)
    c1 = channel.deal(ctx, 1, a * b - c0, ctx.ring_bits)
    return a, b, jnp.stack([c0, c1])


def _mask(width: int, dtype):
    """All-ones in the low `width` bits of the word type."""
    bits = jnp.iinfo(dtype).bits
    return jnp.asarray(np.array((1 << min(width, bits)) - 1, dtype=np.uint64)).astype(dtype)


def and_triples(ctx, shapes, width: int):
    """Boolean triples c = a & b (`width` bits per element) for several ANDs, dealt in ONE
    message: offline sum(n)*width bits to party 1. Returns a list of (a, b, c)."""
    m = _mask(width, ring.ring_dtype(ctx.ring_bits))
    out, corr = [], []
    for shape in shapes:
        a0, a1, b0, b1, c0 = [u & m for u in _block(ctx, 5, shape)]
        corr.append(((a0 ^ a1) & (b0 ^ b1)) ^ c0)
        out.append((jnp.stack([a0, a1]), jnp.stack([b0, b1]), c0))
    corr = channel.deal(ctx, 1, tuple(corr), width)
    return [(a, b, jnp.stack([c0, c1])) for (a, b, c0), c1 in zip(out, corr)]


def and_triple(ctx, shape, width: int):
    """One boolean AND triple (a, b, c), each [2, *shape]: offline n*width bits to party 1.

    Same randomness and message as `and_triples(ctx, [shape], width)[0]`, with fewer ops: a and
    b are slices of the one PRG block (no unstack / restack), and the mask is skipped when the
    width fills the word (smaller XLA programs for the adder's seven AND layers).
    """
    dt = ring.ring_dtype(ctx.ring_bits)
    u = ctx.uniform((5,) + tuple(shape))
    if width < jnp.iinfo(dt).bits:
        u = u & _mask(width, dt)
    a, b, c0 = u[0:2], u[2:4], u[4]
    (c1,) = channel.deal(ctx, 1, (((a[0] ^ a[1]) & (b[0] ^ b[1])) ^ c0,), width)
    return a, b, jnp.stack([c0, c1])


def and_material(ctx, units: int, shape, width: int):
    """PRG material and dealer corrections for `units` AND triples of `shape`, from ONE PRG call
    and one vectorised correction (nothing is dealt yet: `deal_and` sends each layer's part when
    the layer runs, so the ledger keeps one offline entry per layer, in order).
    Returns (u [5, units, *shape], corr [units, *shape])."""
    dt = ring.ring_dtype(ctx.ring_bits)
    u = ctx.uniform((5, units) + tuple(shape))
    if width < jnp.iinfo(dt).bits:
        u = u & _mask(width, dt)
    return u, ((u[0] ^ u[1]) & (u[2] ^ u[3])) ^ u[4]


def deal_and(ctx, material, lo: int, hi: int, shape, width: int):
    """Deal units lo:hi of `and_material` as one triple (a, b, c) of `shape` ([2, *shape] each):
    one offline message of prod(shape)*width bits to party 1."""
    u, corr = material
    full = (2,) + tuple(shape)
    a = u[0:2, lo:hi].reshape(full)
    b = u[2:4, lo:hi].reshape(full)
    c0 = u[4, lo:hi].reshape(tuple(shape))
    (c1,) = channel.deal(ctx, 1, (corr[lo:hi].reshape(tuple(shape)),), width)
    return a, b, jnp.stack([c0, c1])


def bit_pair(ctx, shape):
    """A random bit r shared in both domains: (boolean [2,...] width 1, arithmetic [2,...]).

    The boolean shares are both PRG output; the arithmetic r1 = r - r0 is dealt: n*l bits to party 1.
    """
    one = jnp.asarray(1, ring.ring_dtype(ctx.ring_bits))
    rb0, rb1, r0 = _block(ctx, 3, shape)
    rb0, rb1 = rb0 & one, rb1 & one
    r1 = channel.deal(ctx, 1, (rb0 ^ rb1) - r0, ctx.ring_bits)
    return jnp.stack([rb0, rb1]), jnp.stack([r0, r1])


def trunc_triple(ctx, shape, frac: int):
    """Shares of uniform r, of (r mod 2^(l-1)) >> frac and of r's MSB: offline 2*n*l bits to party 1.

    r itself is PRG output for both parties; the two derived values are corrected in one message.
    """
    l = ctx.ring_bits
    dt = ring.ring_dtype(l)
    r0, r1, q0, m0 = _block(ctx, 4, shape)
    rv = r0 + r1
    rlow_sh = (rv & jnp.asarray((1 << (l - 1)) - 1, dt)) >> jnp.asarray(frac, dt)
    rm = rv >> jnp.asarray(l - 1, dt)
    q1, m1 = channel.deal(ctx, 1, (rlow_sh - q0, rm - m0), l)
    return jnp.stack([r0, r1]), jnp.stack([q0, q1]), jnp.stack([m0, m1])
