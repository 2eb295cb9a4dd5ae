"""Rewrite, part 3: the registry of rewrite rules. One `Rule` per pattern: the operator class it
serves (a Policy field), its matcher (compiler/rewrite_patterns.py), the builder of its
approximation (a Policy's method, compiler/approximations*.py) and its pass (composite first).

Adding an approximation for a new primitive is one entry here (plus tests and docs).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from . import policies as P
from .rewrite_patterns import (match_div_sqrt, match_gelu_erf, match_gelu_tanh, match_signbit,
                               match_softmax, single)


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rewrite rule: its operator class (a Policy field), matcher, builder and pass."""
    name: str
    op_class: str
    match: Callable
    build: Callable
    composite: bool


def _signed_recip(policy: P.Policy):
    """1/b for b of either sign: sign by one comparison, the positive reciprocal of |b|."""
    recip = policy.fn("reciprocal")

    def f(b):
        s = jnp.where(b < 0, -1.0, 1.0).astype(b.dtype)
        return s * recip(s * b)
    return f


def _build_int_pow(policy, vals, attrs):
    y = dict(attrs)["y"]
    r = _signed_recip(policy)(vals[0])
    return r if y == -1 else jax.lax.integer_pow(r, -y)


def _math(prim: str) -> Rule:
    """A single-primitive rule of the `math` class: the policy's math family's function for it
    (compiler/approximations_math.py)."""
    return Rule(prim, "math", single(prim, prim), lambda pol, v, a: pol.fn("math")[prim](*v),
                False)


MATH_PRIMITIVES = ("log", "log1p", "exp2", "expm1", "pow", "cbrt", "sin", "cos", "tan", "atan",
                   "atan2", "asin", "acos", "sinh", "cosh", "asinh", "acosh", "atanh")


MATH_RULES = [_math(prim) for prim in MATH_PRIMITIVES]

RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("gelu_erf", "gelu", match_gelu_erf,
         lambda pol, v, a: pol.fn("gelu")(v[0], "erf"), True),
    Rule("gelu_tanh", "gelu", match_gelu_tanh,
         lambda pol, v, a: pol.fn("gelu")(v[0], "tanh"), True),
    Rule("softmax", "softmax", match_softmax,
         lambda pol, v, a: pol.fn("softmax")(v[0], v[1] if len(v) > 1 else None,
                                            dict(a)["axis"]), True),
    Rule("div_sqrt", "rsqrt", match_div_sqrt,
         lambda pol, v, a: v[0] * pol.fn("rsqrt")(v[1]), True),
    Rule("exp", "exp", single("exp", "exp"), lambda pol, v, a: pol.fn("exp")(v[0]), False),
    Rule("tanh", "tanh", single("tanh", "tanh"), lambda pol, v, a: pol.fn("tanh")(v[0]), False),
    Rule("logistic", "logistic", single("logistic", "logistic"),
         lambda pol, v, a: pol.fn("logistic")(v[0]), False),
    Rule("erf", "erf", single("erf", "erf"), lambda pol, v, a: pol.fn("erf")(v[0]), False),
    Rule("erfc", "erf", single("erfc", "erfc"),
         lambda pol, v, a: 1.0 - pol.fn("erf")(v[0]), False),
    Rule("rsqrt", "rsqrt", single("rsqrt", "rsqrt"),
         lambda pol, v, a: pol.fn("rsqrt")(v[0]), False),
    Rule("sqrt", "rsqrt", single("sqrt", "sqrt"),
         lambda pol, v, a: v[0] * pol.fn("rsqrt")(v[0]), False),
    Rule("div", "reciprocal",
         single("div", "div", lambda g, e: not g.is_const(e.invars[1])),
         lambda pol, v, a: v[0] * _signed_recip(pol)(v[1]), False),
    Rule("integer_pow", "reciprocal",
         single("integer_pow", "integer_pow", lambda g, e: e.params["y"] < 0),
         _build_int_pow, False),
    Rule("rem", "reciprocal",
         single("rem", "rem", lambda g, e: not g.is_const(e.invars[1])),
         lambda pol, v, a: v[0] - v[1] * jnp.trunc(v[0] * _signed_recip(pol)(v[1])), False),
    *MATH_RULES,
    Rule("signbit", "math", match_signbit,
         lambda pol, v, a: -(v[0] < 0).astype(jnp.int32), True),
]}


# operator classes a policy may leave unset (None) where a standalone occurrence then falls
# back to the `exact` policy's method instead of stopping the compilation: mpcformer/paper
# replace exp/tanh/sigmoid inside softmax/GeLU, but a model may also use them elsewhere
FALLBACK = ("exp", "tanh", "logistic")


def method_of(policy: P.Policy, rule: Rule) -> Optional[str]:
    m = getattr(policy, rule.op_class)
    if m is None and not rule.composite and rule.op_class in FALLBACK:
        m = getattr(P.EXACT, rule.op_class)
    return m
