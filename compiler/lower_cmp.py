"""Lowering rules of equality, sign and rounding on secrets (issue 16), from comparisons and
truncation only.

- zero test: [d == 0] = drelu(d) + drelu(-d) - 1 (both comparisons in one batched call);
  eq = zero test of a - b, ne = 1 - eq;
- sign(x) = drelu(x) - drelu(-x);
- floor(x): t = truncate(x) to scale 0 is floor(x) or floor(x) + 1 (the truncation's carry, in
  either mode, never exceeds 1), so floor(x) = t - 1 + [x - t >= 0]: one truncation, one
  comparison, exact for every input in range;
- ceil(x) = -floor(-x); round half away from zero selects floor(x + 1/2) or -floor(1/2 - x) by
  the sign; round half to even subtracts [tie] * [floor(x + 1/2) odd] from floor(x + 1/2);
- rem(x, y) for a y a party knows (C fmod): x - y * trunc(x * (1/y));
- table_lookup (compiler/lookup_table.py): truncate to the table's fractional bits (scale 0:
  the index), clip to [0, 2^n) with relus (t - relu(t - hi), + relu(-t) unless nonneg, both in
  one round; none with wrap: `lut` reads the index mod 2^n), then the FSS family's one-round
  `lut` on n bits (a 2-D table: one `lut` reads every column at the one index).
Costs are the sums of the protocol ops these emit (drelu, truncate, mul), so static == measured
by construction. Registered into `lower_base.LOWER_RULES` on import.
"""
from __future__ import annotations

import jax
import numpy as np

from .ir import SECRET, Value
from .lookup_table import bits_of
from . import lower_struct  # noqa: F401  (registers convert_element_type, refined below)
from .lower_base import LOWER_RULES, _out, rule


def _secret(L, v: Value) -> Value:
    return v if v.vis.is_secret else L.to_secret(v)


def _one(L):
    return L.const(np.asarray(1, np.int32))


def _neg(L, v: Value) -> Value:
    return L.per_share("neg", [v], v.shape, v.dtype, v.scale)


def is_zero(L, d: Value, shape) -> Value:
    """[d == 0] as a secret 0/1 bool at scale 0: drelu(d) + drelu(-d) - 1."""
    d = L.for_compare(_secret(L, d))
    p, q = L.ge_zero(d, shape), L.ge_zero(_neg(L, d), shape)
    return L.add(L.add(p, q, shape=shape, dtype="bool"), _one(L), sub=True, shape=shape,
                 dtype="bool")


def sign(L, x: Value, shape, dtype) -> Value:
    """drelu(x) - drelu(-x) in {-1, 0, 1}, at scale 0."""
    x = L.for_compare(_secret(L, x))
    p, q = L.ge_zero(x, shape), L.ge_zero(_neg(L, x), shape)
    return L.add(p, q, sub=True, shape=shape, dtype=dtype)


def floor(L, x: Value, shape, dtype) -> Value:
    """floor(x) at scale 0: truncate, then correct the truncation's possible +1 by one
    comparison."""
    x = _secret(L, x)
    if x.scale == 0:
        return x
    x = L.for_compare(x)
    t = L.truncate(x, 0)
    d = L.add(x, L.lift(t, x.scale), sub=True, shape=shape, dtype=dtype)
    c = L.ge_zero(d, shape)
    return L.add(L.add(t, c, shape=shape, dtype=dtype), _one(L), sub=True, shape=shape,
                 dtype=dtype)


def ceil(L, x: Value, shape, dtype) -> Value:
    return _neg(L, floor(L, _neg(L, _secret(L, x)), shape, dtype))


def _plus_half(L, x: Value, shape, dtype) -> Value:
    return L.add(x, L.const(np.asarray(0.5, np.float32)), shape=shape, dtype=dtype)


def rescale(L, v: Value, scale: int) -> Value:
    """The same shares read at another scale (divides by 2^(scale - v.scale)): free."""
    return L.per_share("convert_element_type", [v], v.shape, v.dtype, scale,
                       primitive=jax.lax.convert_element_type_p,
                       params=dict(new_dtype=np.dtype(v.dtype), weak_type=False,
                                   sharding=None))


def round_(L, x: Value, shape, dtype, half_even: bool) -> Value:
    x = L.for_compare(_secret(L, x))
    if x.scale == 0:
        return x
    if not half_even:   # half away from zero: floor(x + 1/2) for x >= 0, -floor(1/2 - x) else
        up = floor(L, _plus_half(L, x, shape, dtype), shape, dtype)
        down = _neg(L, floor(L, _plus_half(L, _neg(L, x), shape, dtype), shape, dtype))
        return L.select(L.ge_zero(x, shape), up, down, shape, dtype)
    y = _plus_half(L, x, shape, dtype)
    r = floor(L, y, shape, dtype)
    tie = is_zero(L, L.add(y, r, sub=True, shape=shape, dtype=dtype), shape)
    half = floor(L, rescale(L, r, 1), shape, dtype)            # floor(r / 2)
    odd = L.add(r, L.add(half, half, shape=shape, dtype=dtype), sub=True, shape=shape,
                dtype=dtype)
    return L.add(r, L.mul(tie, odd, shape=shape, dtype=dtype), sub=True, shape=shape,
                 dtype=dtype)


def trunc(L, x: Value, shape, dtype) -> Value:
    """Round toward zero: floor for x >= 0, ceil below."""
    x = L.for_compare(_secret(L, x))
    if x.scale == 0:
        return x
    return L.select(L.ge_zero(x, shape), floor(L, x, shape, dtype), ceil(L, x, shape, dtype),
                    shape, dtype)


# ------------------------------------------------------------------ the rules
@rule("eq", "ne")
def _eq(L, eqn, a, b):
    shape, _ = _out(eqn)
    name = eqn.primitive.name
    if a is b:   # x == x: shares are never NaN (jnp's isnan is ne(x, x))
        return [L.const(np.full(shape, name == "eq"))]
    if _non_finite(a) or _non_finite(b):   # x == inf: a share is always finite (isinf)
        return [L.const(np.full(shape, name == "ne"))]
    z = is_zero(L, L.add(a, b, sub=True, shape=shape, dtype=_float_or(a, b)), shape)
    return [z if name == "eq" else L.one_minus(z)]


def _non_finite(v: Value) -> bool:
    return v.const is not None and np.issubdtype(np.asarray(v.const).dtype, np.floating) \
        and not np.any(np.isfinite(v.const))


def _float_or(a, b):
    return a.dtype if np.issubdtype(np.dtype(a.dtype), np.floating) else b.dtype


@rule("sign")
def _sign(L, eqn, x):
    shape, dtype = _out(eqn)
    return [sign(L, x, shape, dtype)]


@rule("floor", "ceil", "round")
def _rounding(L, eqn, x):
    shape, dtype = _out(eqn)
    name = eqn.primitive.name
    if name == "floor":
        return [floor(L, x, shape, dtype)]
    if name == "ceil":
        return [ceil(L, x, shape, dtype)]
    half_even = int(eqn.params.get("rounding_method", 0)) == 1
    return [round_(L, x, shape, dtype, half_even)]


@rule("rem")
def _rem(L, eqn, x, y):
    """x - y * trunc(x / y) (C fmod, the sign of x) for a divisor a party knows."""
    shape, dtype = _out(eqn)
    if y.vis.is_secret:
        L.fail("rem by a secret divisor is not supported (it needs a secret reciprocal and "
               "an exact quotient); divide by a public or party-held value")
    if not np.issubdtype(np.dtype(dtype), np.floating):
        L.fail("rem of secret integers is not supported")
    if y.const is not None:
        recip = L.const((1.0 / np.asarray(y.const, np.float64)).astype(y.dtype))
    else:
        recip = L.new(y.shape, y.dtype, y.vis, L.frac_bits)
        L.emit("reciprocal", [y], [recip], kind="local", party=y.vis.party, fn="reciprocal")
    q = L.mul(x, recip, shape=shape, dtype=dtype)
    t = trunc(L, q, shape, dtype)
    return [L.add(x, L.mul(t, y, shape=shape, dtype=dtype), sub=True, shape=shape,
                  dtype=dtype)]


_convert_base = LOWER_RULES["convert_element_type"]


@rule("convert_element_type")
def _convert(L, eqn, x):
    """float -> bool is x != 0 (a zero test); float -> int rounds toward zero (C casts);
    everything else as before (free)."""
    shape, dtype = _out(eqn)
    new, old = np.dtype(eqn.params["new_dtype"]), np.dtype(x.dtype)
    if np.issubdtype(new, np.complexfloating):
        L.fail("complex values of a secret are not supported (fft and complex arithmetic have "
               "no fixed-point protocol here; a DFT by a public matrix is a real matmul)")
    if new == np.bool_ and old != np.bool_:
        return [L.one_minus(is_zero(L, x, shape))]
    if np.issubdtype(new, np.integer) and np.issubdtype(old, np.floating) and x.scale > 0:
        t = trunc(L, x, shape, dtype)
        return [L.per_share("convert_element_type", [t], shape, str(new), 0,
                            primitive=eqn.primitive, params=dict(eqn.params))]
    return _convert_base(L, eqn, x)


@rule("xor")
def _xor(L, eqn, a, b):
    """bools: a + b - 2ab (one product); integers: refused (needs a bit decomposition)."""
    shape, dtype = _out(eqn)
    if dtype != "bool":
        L.fail("'xor' on a secret is not supported: xor of secret integers needs a bit "
               "decomposition (bools: use !=)")
    ab = L.mul(a, b, shape=shape, dtype=dtype)
    s = L.add(a, b, shape=shape, dtype=dtype)
    return [L.add(s, L.add(ab, ab, shape=shape, dtype=dtype), sub=True, shape=shape,
                  dtype=dtype)]


@rule("table_lookup")
def _table_lookup(L, eqn, x):
    """table[clip(floor(x 2^frac), 0, 2^n - 1)]: `truncate` to the index, one or two `relu`s
    (the clip, one round), `lut` on n bits (protocols="fss": a DPF, one round)."""
    shape, dtype = _out(eqn)
    table, frac, nonneg = eqn.params["table"], eqn.params["frac"], eqn.params["nonneg"]
    wrap, width = eqn.params["wrap"], eqn.params.get("width", 1)
    n = bits_of(table, width)
    shape = shape if width == 1 else shape[:-1]        # the index's shape (k columns: out + k)
    # a product at scale 2f truncates straight to the index, in the same round as its own
    # truncation to f (no for_compare first); at or below frac, lift x, then drop the extra bit
    x = _secret(L, x)
    if x.scale <= frac:
        x = L.lift(x, frac + 1)
    t = L.new(shape, "int32", SECRET, 0)
    # always the exact truncation, even under trunc_mode="local": an index one step low at 0
    # would wrap to the table's far end
    L.emit("truncate", [x], [t], shift=x.scale - frac, mode="dealer")
    idx = t                    # wrap: `lut` reads t mod 2^n
    if not wrap:
        hi = L.const(np.asarray((1 << n) - 1, np.int32))
        over = L.relu(L.add(t, hi, sub=True, shape=shape, dtype="int32"))
        idx = L.add(t, over, sub=True, shape=shape, dtype="int32")
        if not nonneg:
            idx = L.add(idx, L.relu(_neg(L, t)), shape=shape, dtype="int32")
    r = L.new(_out(eqn)[0], dtype, SECRET, L.frac_bits)
    columns = {} if width == 1 else {"width": width}
    L.emit("lut", [idx], [r], table=tuple(table), bits=n, enc=L.frac_bits, **columns)
    return [r]
