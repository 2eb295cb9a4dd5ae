"""The dealer's function-secret-sharing material: masks and DCF/DPF keys, per protocol.

Masked-input paradigm (Boyle et al., Eurocrypt 2021): for each gate the dealer draws a mask r
(additively shared: both shares are PRG output from the seeds it shares with each party, so r
costs nothing to transmit) and gives each party a key for the gate's function shifted by r.
Everything is drawn from the dealer's streams with each party (`ctx.dealer_rows`, `ctx.uniform(party=q)`),
never from public values. In a party's own process (runtime/dealer_tape.py, `ctx.material`) the
keys are not generated (that needs both parties' root seeds and the mask): the party takes its
root seed from its own stream and every correction word from its tape (`channel.deal`).

What is dealt (`channel.deal`, offline phase) follows `dealer.py`'s convention: whatever is a
uniform PRG output of a party's seed is free; a key's correction words are the same for both
parties and are sent to each (their root seeds are PRG output); a value correlated with r goes to
party 1 as a correction (c1 = v - c0). `fss_costs` holds the byte counts as formulas.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from . import channel, fss_costs, ring
from .fss_dpf import DPFKeys, dpf_gen
from .fss_keys import SEED_WORDS, DCFKeys, dcf_gen
from .parties import mine, rows


def _low_bits(v, n: int):
    """v mod 2^n as uint64 (n <= 64)."""
    v = v.astype(jnp.uint64)
    return v if n >= 64 else v & jnp.uint64((1 << n) - 1)


def _bit(v, i: int):
    """Bit i of v as 0/1 uint64."""
    return (v.astype(jnp.uint64) >> jnp.uint64(i)) & jnp.uint64(1)


def root_seeds(ctx, shape):
    """Both parties' root seeds [2, SEED_WORDS, *shape] uint64: PRG output (free to deal). The
    dealer's view: a key carries `mine` of it (a party holds only its own)."""
    words = ctx.dealer_rows((SEED_WORDS,) + tuple(shape)).astype(jnp.uint64)
    if ctx.ring_bits == 64:
        return words
    high = ctx.dealer_rows((SEED_WORDS,) + tuple(shape)).astype(jnp.uint64)
    return (high << jnp.uint64(32)) | words


def mask(ctx, shape):
    """A uniform mask r as the parties' shares (both PRG output) and its value (ring dtype; the
    dealer's)."""
    r = ctx.dealer_rows(tuple(shape))
    return mine(r), r[0] + r[1]


def _deal_common(ctx, parts):
    """Send each (payload, bits_per_element) of a key's correction words to both parties; returns
    the payloads as this party holds them. In one process both copies are the words themselves;
    in a party's own process the copy addressed to the other party is zeros (never received), so
    OR-ing the two copies gives the words on either device."""
    copies = [[channel.deal(ctx, party, payload, bits) for payload, bits in parts]
              for party in (0, 1)]
    return [jax.tree_util.tree_map(lambda a, b: a | b, c0, c1) for c0, c1 in zip(*copies)]


def _generate(ctx, gen):
    """The dealer's keys `gen()`, or, in a party's own process, only their shapes (the party's
    correction words come from its tape; its root seed from its own stream)."""
    return gen() if ctx.dealer_computes else jax.eval_shape(gen)


def deal_dcf(ctx, alpha, beta, n: int, prg: str) -> DCFKeys:
    """DCF keys for x < alpha -> beta ([k, *shape]) on n bits; both parties receive the correction
    words: n*lambda (seeds), 2n (control bits), (n + 1)*k*l (payload) bits per element."""
    seeds = root_seeds(ctx, alpha.shape)
    keys = _generate(ctx, lambda: dcf_gen(seeds, alpha, beta, n, prg))
    s_cw, t_cw, (v_cw, final) = _deal_common(
        ctx, [(keys.s_cw, 64), (keys.t_cw, 1), ((keys.v_cw, keys.final), ctx.ring_bits)])
    return DCFKeys(mine(seeds), s_cw, t_cw, v_cw, final)


def deal_dpf(ctx, alpha, beta, n: int, prg: str) -> DPFKeys:
    """DPF keys for x == alpha -> beta on n bits; both parties receive m (lambda + 2) + w l bits
    per element of correction words (early termination: m levels, w words a leaf, fss_dpf)."""
    seeds = root_seeds(ctx, alpha.shape)
    keys = _generate(ctx, lambda: dpf_gen(seeds, alpha, beta, n, prg))
    s_cw, t_cw, final = _deal_common(
        ctx, [(keys.s_cw, 64), (keys.t_cw, 1), (keys.final, ctx.ring_bits)])
    return DPFKeys(mine(seeds), s_cw, t_cw, final)


def correlated(ctx, values):
    """Shares of each value (ring dtype): c0 PRG output, c1 = v - c0 dealt to party 1 in ONE
    message (len(values) * n * l bits)."""
    c0 = [ctx.uniform(v.shape, party=0) for v in values]
    c1 = channel.deal(ctx, 1, lambda: tuple(v - c for v, c in zip(values, c0)), ctx.ring_bits)
    return [rows(a, b) for a, b in zip(c0, c1)]


def _ring(ctx, v):
    return v.astype(ring.ring_dtype(ctx.ring_bits))


def drelu_material(ctx, shape, n: int, prg: str, with_relu: bool):
    """Mask r and a DCF on the low n-1 bits of r with payload beta = 1 - 2 msb_n(r) (and, for ReLU,
    beta * r); shares of msb_n(r) (and of msb_n(r) * r) to party 1.

    Returns (r shares, msb shares, msb*r shares or None, keys)."""
    r, rv = mask(ctx, shape)
    m = _bit(rv, n - 1)
    beta = jnp.uint64(1) - jnp.uint64(2) * m
    payload = [beta, beta * rv.astype(jnp.uint64)] if with_relu else [beta]
    keys = deal_dcf(ctx, _low_bits(rv, n - 1), jnp.stack(payload), n - 1, prg)
    extra = [_ring(ctx, m)] + ([_ring(ctx, m * rv.astype(jnp.uint64))] if with_relu else [])
    shared = correlated(ctx, extra)
    return r, shared[0], (shared[1] if with_relu else None), keys


def trunc_material(ctx, shape, f: int, prg: str):
    """Mask r, a DCF on its low f bits (payload 1) and shares of r >> f and msb(r) to party 1.

    Returns (r shares, (r >> f) shares, msb shares, keys)."""
    r, rv = mask(ctx, shape)
    one = jnp.ones((1,) + tuple(shape), jnp.uint64)
    keys = deal_dcf(ctx, _low_bits(rv, f), one, f, prg)
    dt = rv.dtype
    q, m = correlated(ctx, [rv >> jnp.asarray(f, dt), rv >> jnp.asarray(ctx.ring_bits - 1, dt)])
    return r, q, m, keys


def select_material(ctx, shape):
    """For b ? x : y: an arithmetic mask r_d (PRG), a random bit r_b as XOR shares (PRG), and
    arithmetic shares of r_b and r_b * r_d (2 n l bits to party 1).

    Returns (r_d shares, r_b XOR shares, r_b shares, r_b*r_d shares)."""
    rd, rdv = mask(ctx, shape)
    one = jnp.asarray(1, rdv.dtype)
    rb = ctx.dealer_rows(tuple(shape)) & one
    rbv = rb[0] ^ rb[1]
    rb_sh, rbrd = correlated(ctx, [rbv, rbv * rdv])
    return rd, mine(rb), rb_sh, rbrd


def lut_material(ctx, shape, n: int, prg: str):
    """Mask r (its low n bits index the table) and a DPF at r mod 2^n with payload 1.

    Returns (r shares, keys)."""
    r, rv = mask(ctx, shape)
    keys = deal_dpf(ctx, _low_bits(rv, n), jnp.ones(tuple(shape), jnp.uint64), n, prg)
    return r, keys


def offline_bytes(op: str, *shapes, config, **attrs) -> tuple[int, int]:
    """The dealer's material of one op in bytes per party (party 0, party 1), from the formulas
    of `fss_costs` (the ledger's offline entries, each rounded up to whole bytes)."""
    msgs = [m for m in fss_costs.COSTS[op](*shapes, config=config, **attrs)
            if m.phase == "offline"]
    return (sum(-(-m.bits[0] // 8) for m in msgs), sum(-(-m.bits[1] // 8) for m in msgs))
