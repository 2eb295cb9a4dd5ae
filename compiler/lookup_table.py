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


def _impl(x, *, table: tuple, frac: int, nonneg: bool, wrap: bool):
    t = jnp.asarray(np.asarray(table, dtype=np.float64), dtype=x.dtype)
    return t[_index(x, frac, len(table), wrap)]


def _slope(x, *, table: tuple, frac: int, nonneg: bool, wrap: bool):
    t = np.asarray(table, dtype=np.float64)
    step = np.append(np.diff(t), 0.0) * float(2 ** frac)
    slope = jnp.asarray(step, dtype=x.dtype)[_index(x, frac, len(table), wrap)]
    if wrap:
        return slope
    inside = (x >= 0) & (x < len(table) / float(2 ** frac))     # the clipped ends are flat
    return jnp.where(inside, slope, 0)


table_lookup_p = define_elementwise_primitive("table_lookup", _impl, _slope)


def table_lookup(x, table, frac: int, nonneg: bool = False, wrap: bool = False):
    """table[clip(floor(x * 2^frac), 0, len(table) - 1)] for a public table of 2^n floats
    (wrap=True: table[floor(x * 2^frac) mod len(table)])."""
    table = tuple(float(v) for v in np.asarray(table, dtype=np.float64).ravel())
    n = bits_of(table)
    if len(table) != 1 << n or not 1 <= n <= MAX_BITS:
        raise ValueError(f"a lookup table needs 2^n entries with 1 <= n <= {MAX_BITS}, "
                         f"got {len(table)}")
    if frac < 0:
        raise ValueError(f"frac must be >= 0, got {frac}")
    return table_lookup_p.bind(x, table=table, frac=int(frac), nonneg=bool(nonneg),
                              wrap=bool(wrap))


def bits_of(table: tuple) -> int:
    """n for a table of 2^n entries."""
    return len(table).bit_length() - 1
