"""A public table read at a secret position: pcformer's own primitive, `table_lookup`.

table_lookup(x; table, frac, nonneg, wrap) = table[clip(floor(x * 2^frac), 0, len(table) - 1)]
with wrap=True: table[floor(x * 2^frac) mod len(table)]

`len(table)` is a power of two, 2^n. In float JAX (the rewritten program, distillation) it is
exactly that gather; its derivative is the table's forward difference times 2^frac (a slope
through the steps, zero where the index is clipped, so distillation can train through it).
The lowering (compiler/lower_cmp.py) turns it into the FSS family's one-round `lut` (SIGMA's
lookup tables): an exact truncation to `frac` fractional bits, a clip to [0, 2^n) by one or two
`relu`s, then a DPF on n bits. Tables with n <= 10 or so: the dealer's key and the parties'
local work grow as 2^n per element.

Several tables at one index (a 2-D table of 2^n rows and k columns): the result gains a
trailing axis of k, and the lowering pays for ONE lookup (one truncation, one clip, one DPF whose
full-domain evaluation is read against every column): a piecewise-linear spline's value and
slope tables, say, for the price of one.

`nonneg=True` is the caller's promise that x >= 0 (|x|, say): the lowering then skips the low
clip (one `relu` fewer); the float semantics clip at 0 either way. `wrap=True` reads the low n
bits of the index (a digit of a longer fixed-point value): no clip at all, since the DPF lookup
opens x + r mod 2^n and so drops the high bits for free.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .compat import define_elementwise_primitive

MAX_BITS = 12     # 2^12 entries: beyond that a lookup costs more than the polynomial it replaces


def _index(x, frac: int, size: int, wrap: bool):
    i = jnp.floor(x * float(2 ** frac))
    return (jnp.mod(i, size) if wrap else jnp.clip(i, 0, size - 1)).astype(jnp.int32)


def _columns(table: tuple, width: int) -> np.ndarray:
    """The flat table param as [2^n] (width 1) or [2^n, width]."""
    t = np.asarray(table, dtype=np.float64)
    return t if width == 1 else t.reshape(-1, width)


def _impl(x, *, table: tuple, frac: int, nonneg: bool, wrap: bool, width: int = 1):
    t = jnp.asarray(_columns(table, width), dtype=x.dtype)
    return t[_index(x, frac, len(table) // width, wrap)]


def _slope(x, *, table: tuple, frac: int, nonneg: bool, wrap: bool, width: int = 1):
    t = _columns(table, width)
    step = np.concatenate([np.diff(t, axis=0), np.zeros_like(t[:1])]) * float(2 ** frac)
    slope = jnp.asarray(step, dtype=x.dtype)[_index(x, frac, len(t), wrap)]
    if wrap:
        return slope
    inside = (x >= 0) & (x < len(t) / float(2 ** frac))     # the clipped ends are flat
    return jnp.where(inside if width == 1 else inside[..., None], slope, 0)


table_lookup_p = define_elementwise_primitive("table_lookup", _impl, _slope,
                                              trailing=lambda width=1, **_: width)


def table_lookup(x, table, frac: int, nonneg: bool = False, wrap: bool = False):
    """table[clip(floor(x * 2^frac), 0, len(table) - 1)] for a public table of 2^n floats
    (wrap=True: table[floor(x * 2^frac) mod len(table)]). A 2-D table [2^n, k] reads k
    columns at the one index: the result has x's shape plus a trailing axis of k."""
    arr = np.asarray(table, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise ValueError(f"a lookup table is a vector of 2^n entries or a [2^n, k] array of "
                         f"columns, got shape {arr.shape}")
    width = 1 if arr.ndim == 1 else int(arr.shape[1])
    flat = tuple(float(v) for v in arr.ravel())
    n = bits_of(flat, width)
    if arr.shape[0] != 1 << n or not 1 <= n <= MAX_BITS:
        raise ValueError(f"a lookup table needs 2^n entries with 1 <= n <= {MAX_BITS}, "
                         f"got {arr.shape[0]}")
    if frac < 0:
        raise ValueError(f"frac must be >= 0, got {frac}")
    params = dict(table=flat, frac=int(frac), nonneg=bool(nonneg), wrap=bool(wrap))
    if width > 1:                  # the plain one-column lookup keeps its old params
        params["width"] = width
    return table_lookup_p.bind(x, **params)


def bits_of(table: tuple, width: int = 1) -> int:
    """n for a table of 2^n entries (of `width` columns each)."""
    return (len(table) // width).bit_length() - 1
