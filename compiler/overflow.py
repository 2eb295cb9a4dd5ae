"""The overflow check (``config.check_overflow``): a SIMULATOR-ONLY ORACLE.

It reconstructs every secret intermediate (x0 + x1, no channel, nothing in the ledger) to find
the first value whose magnitude exceeds the safe fixed-point bound 2^(l-2-scale); for a product
it checks the exact result computed from the operands (a wrapped product reconstructs to a small
wrong value). A real party could not do this. Both executors (execute.py, opcache.py) call
`probe` per secret result and `first_overflow` on the maxima; the report names the op, its
source line and module path.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax

from pcformer.runtime import ring
from pcformer.runtime.shares import AShare

from . import ir, ranges

__all__ = ["Overflow", "probe", "first_overflow"]


def _oracle_max(cfg, s: AShare, scale):
    """SIMULATOR-ONLY ORACLE: max |x| of a secret, reconstructed outside the ledger."""
    x = ring.to_signed(s.data[0] + s.data[1]).astype(jnp.float64)
    return jnp.max(jnp.abs(x)) / float(2 ** scale) if x.size else jnp.float64(0)


def _real(v, x):
    """SIMULATOR-ONLY: an operand's real value in float64 (a secret reconstructed), in its IR
    shape (the op executor may store a secret flat: opcache_plan.flat_values)."""
    if isinstance(x, AShare):
        real = ring.to_signed(x.data[0] + x.data[1]).astype(jnp.float64) / float(2 ** v.scale)
        return real.reshape(v.shape)
    return jnp.asarray(x).astype(jnp.float64)


def _dot(op, a, b):
    dn = op.attrs.get("dimension_numbers") or (((a.ndim - 1,), (0,)), ((), ()))
    return lax.dot_general(a, b, dn, preferred_element_type=jnp.float64)


# the exact result of the ops whose ring result can wrap although their operands did not (every
# product, and a scale lift): computed from the operands, so the oracle sees the value the ring
# should have held, not what is left after the wrap
_EXACT = {
    "mul": lambda op, a: a[0] * a[1],
    "square": lambda op, a: a[0] * a[0],
    "mul_private": lambda op, a: a[0] * a[1],
    "mul_public": lambda op, a: a[0] * a[1],
    "lift": lambda op, a: a[0],
    "dot_general": lambda op, a: _dot(op, a[0], a[1]),
    "dot_general_private": lambda op, a: _dot(op, a[0], a[1]),
    "dot_general_public": lambda op, a: _dot(op, a[0], a[1]),
}


def probe(cfg, op: ir.Op, args, out, r: ir.Value):
    """SIMULATOR-ONLY ORACLE: max |x| of a secret result; for a product (or lift), of the exact
    result computed from its operands, which catches a wrap where it happens (a product that
    wraps reconstructs to a small, wrong value that a check after the fact would pass)."""
    got = _oracle_max(cfg, out, r.scale)
    exact = _EXACT.get(op.name)
    if exact is None or len(op.results) != 1 or np.prod(r.shape, dtype=np.int64) == 0:
        return got
    want = exact(op, [_real(v, x) for v, x in zip(op.operands, args)])
    return jnp.maximum(got, jnp.max(jnp.abs(want)))


@dataclasses.dataclass
class Overflow:
    """The first secret whose magnitude reached the safe fixed-point bound."""

    op: str
    value: int
    scope: str
    where: str
    max_abs: float
    bound: float
    why: str = "the ring's safe bound at its scale"

    def __str__(self):
        return (f"fixed-point overflow: %{self.value} = {self.op} reached |x| = {self.max_abs:g} "
                f">= {self.bound:g} ({self.why}) at {self.where} (scope {self.scope or '<top>'})")


def first_overflow(prog, config, meta, maxima):
    """The first probed secret at or past its bound: the ring's safe bound, or, for a value a
    comparison reads, the width `MPCConfig.compare_bits` declares (ranges.value_bound)."""
    compared = ranges.comparison_bounds(prog, config)
    for (k, r), m in zip(meta, maxima):
        bound, why = ranges.value_bound(r, config, compared)
        if not np.isfinite(m) or m >= bound:
            op = prog.ops[k]
            return Overflow(op.name, r.id, op.scope, op.where, m, bound, why)
    return None
