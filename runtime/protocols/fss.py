"""The function-secret-sharing (FSS) family: DReLU, ReLU, select, exact truncation and lookup
tables, each ONE online round (docs/fss.md has the formulas and the papers).

Same contract as the Beaver family (arith.py, compare.py): additive shares `AShare` over Z_2^l,
every message through `channel` (which writes the ledger), row i of every local computation uses
only party i's share, party i's dealer material and what party i received. Comparison results
are integer bits 0/1 (scale 1). The masked-input paradigm: the parties open x + r for a dealer
mask r (n bits each) and evaluate their FSS keys at the public masked value.

`prg` picks the tree PRG ("splitmix" fast, "threefry" JAX's block cipher; None: the run's
`MPCConfig.fss_prg`); `bits` (n, default `MPCConfig.compare_bits`, else l) is the
bit width the input is known to fit as a signed value (|x| < 2^(n-1)): SIGMA's reduced-width
comparisons open n bits instead of l and have n-level keys.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import channel, fss_costs, fss_dealer, ring
from pcformer.runtime.fss_dpf import dpf_eval_all
from pcformer.runtime.fss_keys import dcf_eval
from pcformer.runtime.parties import only_party0
from pcformer.runtime.shares import AShare

from . import arith
from . import fss_ideal  # noqa: F401  (fills FSS_IDEAL_RULES)
from ._base import as_ring, const
from ._fss_base import fss_entry, fss_protocol, low_bits
from .adapt import input_shape, unary
from .registry import FromIR, register


def open_masked(ctx, x: AShare, r, n: int, depth: int | None = None):
    """Open (x + r) mod 2^n in one exchange of n bits per element each; returns (public, depth)."""
    payload = low_bits(x.data + r, n)
    recv, d = channel.exchange(ctx, payload, x.depth if depth is None else depth, n)
    return low_bits(channel.opened(ctx, payload + recv), n), d


def _ring(ctx, v):
    return v.astype(ring.ring_dtype(ctx.ring_bits))


def _prg(ctx, prg):
    """The explicit PRG, else the run's (one setting for the whole program)."""
    return ctx.config.fss_prg if prg is None else prg


def _width(ctx, bits):
    n = fss_costs.compare_width(ctx.config, bits)
    if not 2 <= n <= ctx.ring_bits:
        raise ValueError(f"bits must be in [2, {ctx.ring_bits}] (the ring), got {n}")
    return n


def _msb_shares(ctx, xh, n: int, m, v_beta):
    """Shares of msb_n(x) from the public masked value and the DCF output beta*[low(xh) < low(r)]:
    msb(x) = a xor w with a = msb(xh) public and w = msb(r) + beta*c = msb(r) xor carry."""
    a = (xh >> jnp.asarray(n - 1, xh.dtype)) & const(ctx, 1)
    w = m + v_beta
    return a, only_party0(a) + (const(ctx, 1) - const(ctx, 2) * a) * w


def _dcf_low(ctx, keys, xh, n: int, prg: str):
    """DCF outputs [2, k, *shape] (ring) at the low n-1 bits of the opened value."""
    return _ring(ctx, dcf_eval(keys, low_bits(xh, n - 1), n - 1, prg))


@fss_protocol("drelu")
def drelu(ctx, x: AShare, bits: int | None = None, prg: str | None = None) -> AShare:
    """[x >= 0] for |x| < 2^(n-1): open x + r (n bits each, one round), evaluate a DCF on n-1 bits
    (Boyle et al. 2021, SIGMA's DReLU)."""
    n = _width(ctx, bits)
    prg = _prg(ctx, prg)
    r, m, _, keys = fss_dealer.drelu_material(ctx, x.shape, n, prg, with_relu=False)
    xh, d = open_masked(ctx, x, r, n)
    _, msb = _msb_shares(ctx, xh, n, m, _dcf_low(ctx, keys, xh, n, prg)[:, 0])
    return AShare(only_party0(jnp.broadcast_to(const(ctx, 1), x.shape)) - msb, d)


@fss_protocol("relu")
def relu(ctx, x: AShare, bits: int | None = None, prg: str | None = None) -> AShare:
    """max(x, 0) in ONE round: open x + r (l bits each); a DCF with the two-word payload
    (beta, beta*r) gives shares of drelu(x) and of drelu(x)*r, and relu = drelu*(x+r) - drelu*r."""
    n = _width(ctx, bits)
    prg = _prg(ctx, prg)
    r, m, mr, keys = fss_dealer.drelu_material(ctx, x.shape, n, prg, with_relu=True)
    xh, d = open_masked(ctx, x, r, ctx.ring_bits)
    v = _dcf_low(ctx, keys, low_bits(xh, n), n, prg)
    a, msb = _msb_shares(ctx, low_bits(xh, n), n, m, v[:, 0])
    one = const(ctx, 1)
    dre = only_party0(jnp.broadcast_to(one, x.shape)) - msb
    msb_r = a * r + (one - const(ctx, 2) * a) * (mr + v[:, 1])      # shares of msb(x) * r
    return AShare(dre * xh - (r - msb_r), d)


@fss_protocol("select")
def select(ctx, b: AShare, x: AShare, y: AShare) -> AShare:
    """b ? x : y for a shared bit b in ONE round: open b xor r_b (1 bit each; arithmetic shares of
    a bit reduce mod 2 to XOR shares) and (x - y) + r_d (l bits each) in the same round."""
    d = arith.sub(ctx, x, y)
    rd, rb, rb_sh, rbrd = fss_dealer.select_material(ctx, d.shape)
    depth = max(b.depth, d.depth)
    one = const(ctx, 1)
    bh, _ = open_masked(ctx, AShare(jnp.broadcast_to(b.data, b.data.shape[:1] + d.shape) ^ rb,
                                    b.depth),
                        jnp.zeros_like(rd), 1, depth)
    dh, dd = open_masked(ctx, d, rd, ctx.ring_bits, depth)
    # b*(x-y) = (bh xor rb)(dh - rd) = bh dh - bh rd + (1 - 2 bh)(rb dh - rb rd)
    bd = only_party0(bh * dh) - bh * rd + (one - const(ctx, 2) * bh) * (rb_sh * dh - rbrd)
    return arith.add(ctx, AShare(bd, dd), y)


@fss_protocol("truncate")
def truncate(ctx, x: AShare, bits: int | None = None, mode: str | None = None,
             prg: str | None = None) -> AShare:
    """Exact floor(x / 2^f) for |x| < 2^(l-2), ONE round (SIGMA's truncation): open
    x' + r with x' = x + 2^(l-2) >= 0 (l bits each); a DCF on f bits gives the borrow of the low
    bits, and the wrap of x' + r is msb(r) * (1 - msb(x' + r)) (x' < 2^(l-1)). `mode` (or
    `MPCConfig.trunc_mode`) "local" is the user's choice of SecureML's free local shift instead
    (the Beaver family's, no messages, rare large errors); "dealer" means this exact one."""
    if (mode or ctx.config.trunc_mode) == "local":
        return arith.truncate(ctx, x, bits, "local")
    l = ctx.ring_bits
    f = ctx.config.frac_bits if bits is None else int(bits)
    if not 1 <= f < l - 2:
        raise ValueError(f"truncation bits must be in [1, {l - 3}], got {f}")
    prg = _prg(ctx, prg)
    r, q, m, keys = fss_dealer.trunc_material(ctx, x.shape, f, prg)
    xp = x.data + only_party0(jnp.broadcast_to(const(ctx, 1 << (l - 2)), x.shape))
    xh, d = open_masked(ctx, AShare(xp, x.depth), r, l)
    borrow = _ring(ctx, dcf_eval(keys, low_bits(xh, f), f, prg))[:, 0]
    a = xh >> jnp.asarray(l - 1, xh.dtype)
    wrap = m * (const(ctx, 1) - a)
    z = (only_party0((xh >> jnp.asarray(f, xh.dtype)) - const(ctx, 1 << (l - 2 - f)))
         - q - borrow + wrap * const(ctx, 1 << (l - f)))
    return AShare(z, d)


def _lut_operands(op, args, config) -> tuple:
    """(x, the IR's float table encoded at its scale, [2^n] or [2^n, k] for k columns): `lut`'s
    operands from an IR op."""
    table = np.asarray(op.attrs["table"])
    width = op.attrs.get("width", 1)
    table = table if width == 1 else table.reshape(-1, width)
    return (args[0], jnp.asarray(ring.encode(table, op.attrs["enc"], config.ring_bits)))


def lut_table(ctx, table, bits: int):
    """The public table as ring elements, checked to have 2^bits entries (rows, for a [2^n, k]
    table of k columns read at one index)."""
    t = as_ring(ctx, table)
    if t.ndim not in (1, 2) or t.shape[0] != 1 << bits:
        raise ValueError(f"a {bits}-bit lookup table needs {1 << bits} entries (rows), "
                         f"got shape {t.shape}")
    return t


@fss_protocol("lut")
def lut(ctx, x: AShare, table, bits: int, prg: str | None = None) -> AShare:
    """table[x mod 2^n] for a public ring table of 2^n entries, ONE round (SIGMA's lookup):
    open (x + r) mod 2^n (n bits each); a DPF at r, evaluated on the whole domain, gives shares
    y_j of [j == r], and table[x] = sum_j y_j table[(xh - j) mod 2^n]. Keys and local work grow
    as 2^n: meant for n <= 10 or so. A [2^n, k] table gives k columns at the one index, [*x, k],
    for the same key and message."""
    n = int(bits)
    if not 1 <= n <= min(16, ctx.ring_bits):
        raise ValueError(f"lookup tables take 1 to 16 bits, got {n}")
    t = lut_table(ctx, table, n)
    prg = _prg(ctx, prg)
    r, keys = fss_dealer.lut_material(ctx, x.shape, n, prg)
    xh, d = open_masked(ctx, x, r, n)
    return AShare(_read_tables(ctx, keys, xh, t, n, prg), d)


# elements per block of the full-domain evaluation: its [2, 2^n, block] words stay near 4 MB,
# in cache, instead of one [2, 2^n, *shape] array streamed through memory several times
_BLOCK_WORDS = 1 << 18


def _read_tables(ctx, keys, xh, t, n: int, prg: str):
    """sum_j y_j table[(xh - j) mod 2^n] for the DPF shares y_j of every point j: [2, *shape]
    (k columns: [2, *shape, k]), evaluated block by block over the elements (`lax.map`); the
    result is the same as evaluating the whole domain at once."""
    shape = xh.shape
    m = int(np.prod(shape, dtype=np.int64))
    block = max(1, min(m, _BLOCK_WORDS >> n))
    nb = -(-m // block)

    def blocks(a, lead: int):      # [*lead, *shape] -> [nb, *lead, block] (zero-padded)
        a = a.reshape(a.shape[:lead] + (m,))
        a = jnp.pad(a, [(0, 0)] * lead + [(0, nb * block - m)])
        return jnp.moveaxis(a.reshape(a.shape[:lead] + (nb, block)), lead, 0)

    def one(args):
        k, h = args
        y = _ring(ctx, dpf_eval_all(k, n, prg))                     # [2, 2^n, block]
        j = jnp.arange(1 << n, dtype=h.dtype)[:, None]
        shifted = t[low_bits(h[None] - j, n).astype(jnp.int32)]   # [2^n, block(, k)]
        if t.ndim == 1:
            return jnp.sum(y * shifted[None], axis=1, dtype=h.dtype)
        # k columns: the one DPF's shares read against each, one sum per column (a sum over
        # a [2, 2^n, block, k] product was a fifth slower)
        return jnp.stack([jnp.sum(y * shifted[None, ..., c], axis=1, dtype=h.dtype)
                          for c in range(t.shape[1])], axis=-1)

    kb = jax.tree_util.tree_map(lambda a: blocks(a, a.ndim - len(shape)), keys)
    out = jax.lax.map(one, (kb, blocks(xh, 0)))                      # [nb, P, block(, k)]
    lead = out.shape[1]
    out = jnp.moveaxis(out, 0, 1).reshape((lead, nb * block) + t.shape[1:])[:, :m]
    return out.reshape((lead,) + shape + t.shape[1:])


# ----------------------------------------------------------------------------- registry table
# Family "fss": these replace the Beaver ops of the same name (fss_compare.py adds the rest and
# the Beaver ops it keeps). truncate's IR adapter reads the IR's `shift` and its optional
# `mode` (a lookup's index is always truncated exactly, whatever MPCConfig.trunc_mode says).
# lut's adapter: the IR carries the table as floats and its scale (compiler/lookup_table.py);
# the ring encoding happens here, with encode's range check.
TABLE = (
    fss_entry("drelu", drelu, unary(), elementwise=True, chunks=True),
    fss_entry("relu", relu, unary(), elementwise=True, chunks=True),
    fss_entry("select", select),
    fss_entry("truncate", truncate, unary(lambda op: {"bits": op.attrs["shift"],
                                                      "mode": op.attrs.get("mode")}),
              elementwise=True, chunks=True),
    fss_entry("lut", lut, FromIR(input_shape, _lut_operands,
                                 lambda op: {"bits": op.attrs["bits"]})),
)
register(*TABLE)
