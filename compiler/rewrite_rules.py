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
    recip = policy.reciprocal_fn()

    def f(b):
        s = jnp.where(b < 0, -1.0, 1.0).astype(b.dtype)
        return s * recip(s * b)
    return f


def _build_int_pow(policy, vals, attrs):
    y = dict(attrs)["y"]
    r = _signed_recip(policy)(vals[0])
    return r if y == -1 else jax.lax.integer_pow(r, -y)


def _math(prim: str, build: Callable):
    """A single-primitive rule of the `math` class (compiler/approximations_math.py)."""
    return Rule(prim, "math", single(prim, prim), build, False)


def _math_rules():
    from . import approximations_math as M
    exp = lambda pol: pol.exp_fn()
    return [
        _math("log", lambda pol, v, a: M.log_poly(v[0])),
        _math("log1p", lambda pol, v, a: M.log1p_poly(v[0])),
        _math("exp2", lambda pol, v, a: M.exp2_via(v[0], exp(pol))),
        _math("expm1", lambda pol, v, a: M.expm1_via(v[0], exp(pol))),
        _math("pow", lambda pol, v, a: M.pow_via(v[0], v[1], exp(pol))),
        _math("cbrt", lambda pol, v, a: M.cbrt_via(v[0], exp(pol))),
        _math("sin", lambda pol, v, a: M.sin_poly(v[0])),
        _math("cos", lambda pol, v, a: M.cos_poly(v[0])),
        _math("tan", lambda pol, v, a: M.tan_via(v[0], pol.reciprocal_fn())),
        _math("atan", lambda pol, v, a: M.atan_via(v[0], pol.reciprocal_fn())),
        _math("atan2", lambda pol, v, a: M.atan2_via(v[0], v[1], pol.reciprocal_fn())),
        _math("asin", lambda pol, v, a: M.asin_via(v[0], pol.rsqrt_fn(), pol.reciprocal_fn())),
        _math("acos", lambda pol, v, a: M.acos_via(v[0], pol.rsqrt_fn(), pol.reciprocal_fn())),
        _math("sinh", lambda pol, v, a: M.sinh_via(v[0], exp(pol))),
        _math("cosh", lambda pol, v, a: M.cosh_via(v[0], exp(pol))),
        _math("asinh", lambda pol, v, a: M.asinh_via(v[0], pol.rsqrt_fn())),
        _math("acosh", lambda pol, v, a: M.acosh_via(v[0], pol.rsqrt_fn())),
        _math("atanh", lambda pol, v, a: M.atanh_via(v[0])),
    ]


MATH_RULES = _math_rules()

RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("gelu_erf", "gelu", match_gelu_erf,
         lambda pol, v, a: pol.gelu_fn("erf")(v[0]), True),
    Rule("gelu_tanh", "gelu", match_gelu_tanh,
         lambda pol, v, a: pol.gelu_fn("tanh")(v[0]), True),
    Rule("softmax", "softmax", match_softmax,
         lambda pol, v, a: pol.softmax_fn()(v[0], v[1] if len(v) > 1 else None,
                                            dict(a)["axis"]), True),
    Rule("div_sqrt", "rsqrt", match_div_sqrt,
         lambda pol, v, a: v[0] * pol.rsqrt_fn()(v[1]), True),
    Rule("exp", "exp", single("exp", "exp"), lambda pol, v, a: pol.exp_fn()(v[0]), False),
    Rule("tanh", "tanh", single("tanh", "tanh"), lambda pol, v, a: pol.tanh_fn()(v[0]), False),
    Rule("logistic", "logistic", single("logistic", "logistic"),
         lambda pol, v, a: pol.logistic_fn()(v[0]), False),
    Rule("erf", "erf", single("erf", "erf"), lambda pol, v, a: pol.erf_fn()(v[0]), False),
    Rule("erfc", "erf", single("erfc", "erfc"),
         lambda pol, v, a: 1.0 - pol.erf_fn()(v[0]), False),
    Rule("rsqrt", "rsqrt", single("rsqrt", "rsqrt"),
         lambda pol, v, a: pol.rsqrt_fn()(v[0]), False),
    Rule("sqrt", "rsqrt", single("sqrt", "sqrt"),
         lambda pol, v, a: v[0] * pol.rsqrt_fn()(v[0]), False),
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
