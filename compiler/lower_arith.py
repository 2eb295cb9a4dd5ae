"""Lowering rules: arithmetic (add, mul, square, integer_pow, div), max/min/clamp/abs, the
order comparisons (lt, gt, le, ge), boolean not/and/or and select_n.

Registered into `lower_base.LOWER_RULES` on import (compiler/lower.py imports this module)."""
from __future__ import annotations

import numpy as np

from .lower_base import LOWER_RULES, _out, rule


@rule("add", "add_any")
def _add(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.add(a, b, shape=shape, dtype=dtype)]


@rule("sub")
def _sub(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.add(a, b, sub=True, shape=shape, dtype=dtype)]


@rule("neg")
def _neg(L, eqn, x):
    shape, dtype = _out(eqn)
    return [L.per_share("neg", [x], shape, dtype, x.scale)]


@rule("mul")
def _mul(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.mul(a, b, shape=shape, dtype=dtype)]


@rule("square")
def _square(L, eqn, x):
    shape, dtype = _out(eqn)
    return [L.mul(x, x, shape=shape, dtype=dtype)]


@rule("integer_pow")
def _integer_pow(L, eqn, x):
    shape, dtype = _out(eqn)
    y = int(eqn.params["y"])
    if y < 1:
        L.fail(f"integer_pow with exponent {y} on a secret needs a reciprocal")
    result, base = None, x
    while True:      # square-and-multiply, truncating lazily between products
        if y & 1:
            result = base if result is None else L.mul(result, base, shape=shape, dtype=dtype)
        y >>= 1
        if not y:
            break
        base = L.mul(base, base, shape=shape, dtype=dtype)
    return [result]


@rule("div")
def _div(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        L.fail("secret integer division is not supported (it needs a secret quotient "
               "and remainder); divide by a public value in floating point instead")
    if b.vis.is_secret:
        L.fail("division by a secret: the policy does not approximate it (use a policy with a "
               "reciprocal approximation)")
    if not a.vis.is_secret and not (a.vis.is_private and b.vis.is_private):
        L.fail("unexpected division of a public value")  # pragma: no cover
    # the divisor's holder computes 1/b locally, then a product
    recip = L.new(b.shape, b.dtype, b.vis, L.frac_bits if b.const is None else
                  L.plain_scale(b.dtype, 1.0 / np.asarray(b.const)),
                  None if b.const is None else (1.0 / np.asarray(b.const)).astype(b.dtype))
    L.emit("reciprocal", [b], [recip], kind="local", party=b.vis.party, fn="reciprocal")
    return [L.mul(a, recip, shape=shape, dtype=dtype)]


def _maximum(L, a, b, shape, dtype, minimum=False):
    # max(a, b) = b + relu(a - b);  min(a, b) = a - relu(a - b): one relu either way
    if b.vis.is_secret and not a.vis.is_secret:
        a, b = b, a
    zero = b.const is not None and np.all(np.asarray(b.const) == 0)
    if zero:
        r = L.relu(a if a.vis.is_secret else L.to_secret(a))
        if minimum:
            return L.add(a, r, sub=True, shape=shape, dtype=dtype)
        return r
    d = L.add(a, b, sub=True, shape=shape, dtype=dtype)
    r = L.relu(d if d.vis.is_secret else L.to_secret(d))
    if minimum:
        return L.add(a, r, sub=True, shape=shape, dtype=dtype)
    return L.add(b, r, shape=shape, dtype=dtype)


@rule("max")
def _max(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [_maximum(L, a, b, shape, dtype)]


@rule("min")
def _min(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [_maximum(L, a, b, shape, dtype, minimum=True)]


@rule("clamp")
def _clamp(L, eqn, lo, x, hi):
    shape, dtype = _out(eqn)
    return [_maximum(L, _maximum(L, x, lo, shape, dtype), hi, shape, dtype, minimum=True)]


@rule("abs")
def _abs(L, eqn, x):
    shape, dtype = _out(eqn)
    # |x| = 2 relu(x) - x: one relu
    x = L.for_compare(x)
    r = L.relu(x)
    two_r = L.add(r, r, shape=shape, dtype=dtype)
    return [L.add(two_r, x, sub=True, shape=shape, dtype=dtype)]


def _compare(L, eqn, a, b, kind):
    shape, _ = _out(eqn)
    # a >= b  <=>  drelu(a - b);  a < b = 1 - [a >= b];  a <= b <=> drelu(b - a)
    if kind in ("ge", "lt"):
        d = L.add(a, b, sub=True, shape=np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
    else:
        d = L.add(b, a, sub=True, shape=np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
    if not d.vis.is_secret:
        d = L.to_secret(d)
    bit = L.ge_zero(d, shape)
    return [bit if kind in ("ge", "le") else L.one_minus(bit)]


for _k in ("lt", "gt", "le", "ge"):
    LOWER_RULES[_k] = (lambda k: lambda L, eqn, a, b: _compare(L, eqn, a, b, k))(_k)


@rule("not")
def _not(L, eqn, x):
    if eqn.outvars[0].aval.dtype != np.bool_:
        L.fail("bitwise not of a secret integer is not supported")
    return [L.one_minus(x)]


@rule("and")
def _and(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if dtype != "bool":
        L.fail("bitwise and of secret integers is not supported")
    return [L.mul(a, b, shape=shape, dtype=dtype)]


@rule("or")
def _or(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if dtype != "bool":
        L.fail("bitwise or of secret integers is not supported")
    ab = L.mul(a, b, shape=shape, dtype=dtype)
    return [L.add(L.add(a, b, shape=shape, dtype=dtype), ab, sub=True, shape=shape, dtype=dtype)]


@rule("select_n")
def _select_n(L, eqn, pred, *cases):
    shape, dtype = _out(eqn)
    if len(cases) == 1:
        return [cases[0]]
    if len(cases) != 2 and not pred.vis.is_public:
        L.fail("select_n with more than two cases and a non-public index")
    if pred.vis.is_public:
        if len(cases) != 2:
            L.fail("select_n with more than two cases on secrets")
    return [L.select(pred, cases[1], cases[0], shape, dtype)]
