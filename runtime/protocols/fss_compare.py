"""FSS comparisons built on the one-round DReLU, ReLU and select of `fss`: less-than, max and
argmax by a tree (SIGMA / Orca's maxpool trees).

max uses max(a, b) = b + relu(a - b): ONE round per tree level. argmax needs the comparison bit
before it can select values and indices (one `select` for both): TWO rounds per level.
All comparisons assume |x - y| < 2^(n-1) (n = `bits`, default l).
"""
from __future__ import annotations

import jax.numpy as jnp

from pcformer.runtime.parties import only_party0
from pcformer.runtime.shares import AShare

from . import arith, fss
from ._base import as_ring, const
from ._fss_base import fss_entry, fss_protocol, inherited_beaver_ops
from .adapt import unary
from .registry import register


def _one_minus(ctx, b: AShare) -> AShare:
    return AShare(only_party0(jnp.broadcast_to(const(ctx, 1), b.shape)) - b.data, b.depth)


@fss_protocol("less")
def less(ctx, x: AShare, y: AShare, bits: int | None = None, prg: str | None = None) -> AShare:
    """[x < y] = 1 - drelu(x - y): one round."""
    return _one_minus(ctx, fss.drelu(ctx, arith.sub(ctx, x, y), bits=bits, prg=prg))


@fss_protocol("less_public")
def less_public(ctx, x: AShare, c, bits: int | None = None, prg: str | None = None) -> AShare:
    """[x < c] for a public ring value c: one round."""
    shifted = arith.add_public(ctx, x, -as_ring(ctx, c))
    return _one_minus(ctx, fss.drelu(ctx, shifted, bits=bits, prg=prg))


def _pairs(x: AShare):
    """(even, odd, leftover or None) slices along axis 0 of the value axis."""
    n = x.shape[0]
    h = n // 2
    rest = AShare(x.data[:, 2 * h:], x.depth) if n % 2 else None
    return AShare(x.data[:, 0:2 * h:2], x.depth), AShare(x.data[:, 1:2 * h:2], x.depth), rest


def _cat(*parts) -> AShare:
    parts = [p for p in parts if p is not None]
    return AShare(jnp.concatenate([p.data for p in parts], axis=1), max(p.depth for p in parts))


def _front(x: AShare, axis: int) -> AShare:
    return AShare(jnp.moveaxis(x.data, axis % len(x.shape) + 1, 1), x.depth)


def _check_nonempty(x: AShare):
    if x.shape[0] < 1:
        raise ValueError("max over an empty axis")


@fss_protocol("max")
def max_(ctx, x: AShare, axis: int = -1, bits: int | None = None,
         prg: str | None = None) -> AShare:
    """Maximum over `axis`: ceil(log2 k) levels of b + relu(a - b), one round each."""
    v = _front(x, axis)
    _check_nonempty(v)
    while v.shape[0] > 1:
        a, b, rest = _pairs(v)
        m = arith.add(ctx, b, fss.relu(ctx, arith.sub(ctx, a, b), bits=bits, prg=prg))
        v = _cat(m, rest)
    return AShare(v.data[:, 0], v.depth)


def _argmax_tree(ctx, x: AShare, axis: int, bits, prg):
    """(max, index of the max) over `axis` (the index an integer share; the first index wins
    ties): per level d = drelu(a - b) = [a >= b], then one select of values and indices together."""
    v = _front(x, axis)
    _check_nonempty(v)
    k = v.shape[0]
    dt = v.data.dtype
    pub = jnp.broadcast_to(jnp.arange(k, dtype=dt).reshape((k,) + (1,) * (len(v.shape) - 1)),
                           v.shape)
    idx = AShare(only_party0(pub), 0)
    while v.shape[0] > 1:
        a, b, rest = _pairs(v)
        ia, ib, irest = _pairs(idx)
        d = fss.drelu(ctx, arith.sub(ctx, a, b), bits=bits, prg=prg)
        both = fss.select(ctx, _cat(d, d), _cat(a, ia), _cat(b, ib))
        h = a.shape[0]
        v = _cat(AShare(both.data[:, :h], both.depth), rest)
        idx = _cat(AShare(both.data[:, h:], both.depth), irest)
    return AShare(v.data[:, 0], v.depth), AShare(idx.data[:, 0], idx.depth)


@fss_protocol("argmax")
def argmax(ctx, x: AShare, axis: int = -1, bits: int | None = None,
           prg: str | None = None) -> AShare:
    """Index of the maximum over `axis`: 2 rounds per tree level (`_argmax_tree`)."""
    return _argmax_tree(ctx, x, axis, bits, prg)[1]


@fss_protocol("max_argmax")
def max_argmax(ctx, x: AShare, axis: int = -1, bits: int | None = None,
               prg: str | None = None):
    """(max, argmax) over `axis` from the argmax tree (its values are selected already): the
    same messages as `argmax`."""
    return _argmax_tree(ctx, x, axis, bits, prg)


# ----------------------------------------------------------------------------- registry table
def _axis(op) -> dict:
    return {"axis": op.attrs["axis"]}


TABLE = (
    fss_entry("less", less),
    fss_entry("less_public", less_public),
    fss_entry("max", max_, unary(_axis)),
    fss_entry("argmax", argmax, unary(_axis)),
    fss_entry("max_argmax", max_argmax),
)
# the family is complete here: fss.py's ops, these, and the Beaver ops neither replaces
register(*TABLE, *inherited_beaver_ops(fss.TABLE + TABLE))
