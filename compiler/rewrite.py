"""Stage 2: replace heavy operators by a policy's MPC-friendly approximations.

One registry (`RULES`) of rewrite rules. Each rule recognises a pattern in the inlined jaxpr,
anchored at the pattern's LAST equation (whose output the replacement defines):

  composite rules (pass 1)            single-primitive rules (pass 2, on what pass 1 left)
  gelu_erf   0.5 x erfc(-x/sqrt2)      exp, tanh, logistic, erf, erfc, rsqrt, sqrt,
             or 0.5 x (1 + erf(x/sqrt2))  div by a non-constant, integer_pow with y < 0
  gelu_tanh  0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
  softmax    [where] -> max -> sub -> exp -> [where] -> sum -> div [-> where]  (mask recovered)
  div_sqrt   a / sqrt(v)  ->  a * rsqrt(v)   (LayerNorm written with 1/sqrt)

A match is applied only if the policy's field for its operator class is not None and every
equation it swallows (other than the anchor) has all its uses inside the match. Everything else
is re-bound untouched inside `compat.user_context(traceback, name_stack)`, so source lines and
module paths survive; the approximation's equations get the matched equation's traceback and
name stack plus a suffix `<class>[<method>]` (e.g. `.../intermediate/gelu[quad]`), so costs
attribute to the right module. The result is re-inlined and dead code is removed.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from . import compat
from . import policies as P
from . import trace as T


# ---------------------------------------------------------------------------------------------
# A read-only view of a jaxpr for matching.

class Graph:
    """Producers and users of every variable of one jaxpr (jaxpr outputs count as user -1)."""

    def __init__(self, closed):
        jaxpr = closed.jaxpr
        self.eqns = list(jaxpr.eqns)
        self.consts = dict(zip(jaxpr.constvars, closed.consts))
        self.producer: dict = {}
        self.users: dict = defaultdict(list)
        for i, eqn in enumerate(self.eqns):
            for v in eqn.invars:
                if compat.is_var(v):
                    self.users[v].append(i)
            for v in eqn.outvars:
                if compat.is_var(v):
                    self.producer[v] = i
        for v in jaxpr.outvars:
            if compat.is_var(v):
                self.users[v].append(-1)

    def prod(self, atom, *names: str):
        """(index, eqn) producing `atom` if its primitive is one of `names` (any if none)."""
        if not compat.is_var(atom) or atom not in self.producer:
            return None
        i = self.producer[atom]
        eqn = self.eqns[i]
        if names and eqn.primitive.name not in names:
            return None
        return i, eqn

    def const(self, atom) -> Optional[float]:
        """The scalar value of a literal / scalar constant / broadcast or cast of one, else None."""
        if compat.is_literal(atom):
            val = np.asarray(compat.literal_value(atom))
            return float(val.reshape(-1)[0]) if val.size == 1 or np.all(val == val.flat[0]) \
                else None
        if compat.is_var(atom) and atom in self.consts:
            val = np.asarray(self.consts[atom])
            if val.size >= 1 and np.all(val == val.reshape(-1)[0]):
                return float(val.reshape(-1)[0])
            return None
        p = self.prod(atom, "broadcast_in_dim", "convert_element_type", "reshape")
        return self.const(p[1].invars[0]) if p else None

    def const_idxs(self, atom) -> set:
        """Indices of the broadcast/cast equations that build a constant operand."""
        out = set()
        p = self.prod(atom, "broadcast_in_dim", "convert_element_type", "reshape")
        while p:
            out.add(p[0])
            p = self.prod(p[1].invars[0], "broadcast_in_dim", "convert_element_type", "reshape")
        return out

    def is_const(self, atom) -> bool:
        if compat.is_literal(atom) or (compat.is_var(atom) and atom in self.consts):
            return True
        p = self.prod(atom, "broadcast_in_dim", "convert_element_type", "reshape")
        return bool(p) and self.is_const(p[1].invars[0])

    def single_use(self, atom) -> bool:
        return compat.is_var(atom) and len(self.users.get(atom, [])) == 1


def _close(a: float, b: float, rel: float = 1e-5) -> bool:
    return a is not None and abs(a - b) <= rel * max(abs(b), 1e-12)


@dataclasses.dataclass(frozen=True)
class Match:
    """One recognised pattern: replace eqns `eqns` by the rule's approximation at `anchor`."""
    rule: str
    anchor: int
    eqns: frozenset
    inputs: tuple                    # jaxpr atoms passed to the rule's build function
    attrs: tuple = ()                # static (key, value) pairs


# ---------------------------------------------------------------------------------------------
# Pattern helpers.

def _mul_leaves(g: Graph, atoms, depth: int = 2):
    """Flatten a tree of single-use `mul`s: (leaf atoms, indices of the muls flattened)."""
    leaves, idxs = [], set()
    for a in atoms:
        p = g.prod(a, "mul")
        if p and depth > 0 and g.single_use(a):
            sub_leaves, sub_idxs = _mul_leaves(g, p[1].invars, depth - 1)
            leaves += sub_leaves
            idxs |= sub_idxs | {p[0]}
        else:
            leaves.append(a)
    return leaves, idxs


def _scaled(g: Graph, atom, factor: float):
    """If atom == x * factor (mul by const either side, or div by 1/factor): (x, idxs)."""
    p = g.prod(atom, "mul")
    if p:
        a, b = p[1].invars
        if _close(g.const(b), factor):
            return a, {p[0]} | g.const_idxs(b)
        if _close(g.const(a), factor):
            return b, {p[0]} | g.const_idxs(a)
    p = g.prod(atom, "div")
    if p:
        a, b = p[1].invars
        if _close(g.const(b), 1.0 / factor):
            return a, {p[0]} | g.const_idxs(b)
    return None


def _neg_scaled(g: Graph, atom, factor: float):
    """atom == -(x * factor) in any of the forms neg(x)*f, neg(x*f), x*(-f): (x, idxs)."""
    r = _scaled(g, atom, -factor)
    if r:
        return r
    p = g.prod(atom, "neg")
    if p:
        r = _scaled(g, p[1].invars[0], factor)
        if r:
            return r[0], r[1] | {p[0]}
    r = _scaled(g, atom, factor)
    if r:
        q = g.prod(r[0], "neg")
        if q:
            return q[1].invars[0], r[1] | {q[0]}
    return None


def _one_plus(g: Graph, atom, prim: str):
    """atom == 1 + prim(z): (z, idxs)."""
    p = g.prod(atom, "add")
    if not p:
        return None
    a, b = p[1].invars
    for one, other in ((a, b), (b, a)):
        if _close(g.const(one), 1.0):
            q = g.prod(other, prim)
            if q:
                return q[1].invars[0], {p[0], q[0]} | g.const_idxs(one)
    return None


def _one_plus_erf(g: Graph, s):
    """s == 1 + erf(x / sqrt 2) (also as erfc(-x / sqrt 2), JAX's form): (x, idxs)."""
    p = g.prod(s, "erfc")
    if p:
        r = _neg_scaled(g, p[1].invars[0], 1 / math.sqrt(2))
        if r:
            return r[0], r[1] | {p[0]}
    r = _one_plus(g, s, "erf")
    if r:
        z, idxs = r
        q = _scaled(g, z, 1 / math.sqrt(2))
        if q:
            return q[0], idxs | q[1]
    return None


def _cube_of(g: Graph, atom):
    p = g.prod(atom, "integer_pow")
    if p and p[1].params.get("y") == 3:
        return p[1].invars[0], {p[0]}
    p = g.prod(atom, "mul")
    if p:
        for a, b in (p[1].invars, p[1].invars[::-1]):
            q = g.prod(b, "mul", "square", "integer_pow")
            if q is None:
                continue
            ins = q[1].invars
            sq = (q[1].primitive.name == "mul" and ins[0] is a and ins[1] is a) or \
                 (q[1].primitive.name == "square" and ins[0] is a) or \
                 (q[1].primitive.name == "integer_pow" and q[1].params.get("y") == 2
                  and ins[0] is a)
            if sq:
                return a, {p[0], q[0]}
    return None


def _one_plus_tanh(g: Graph, s):
    """s == 1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)): (x, idxs)."""
    r = _one_plus(g, s, "tanh")
    if not r:
        return None
    q, idxs = r
    r = _scaled(g, q, math.sqrt(2 / math.pi))
    if not r:
        return None
    inner, more = r
    p = g.prod(inner, "add")
    if not p:
        return None
    for x, w in (p[1].invars, p[1].invars[::-1]):
        c = _scaled(g, w, 0.044715)
        if c:
            cube = _cube_of(g, c[0])
            if cube and cube[0] is x:
                return x, idxs | more | {p[0]} | c[1] | cube[1]
    return None


def _match_gelu(g: Graph, i: int, core: Callable, rule: str):
    eqn = g.eqns[i]
    if eqn.primitive.name != "mul":
        return None
    leaves, idxs = _mul_leaves(g, eqn.invars)
    if len(leaves) != 3:
        return None
    halves = [a for a in leaves if _close(g.const(a), 0.5)]
    if len(halves) != 1:
        return None
    rest = [a for a in leaves if a is not halves[0]]
    for s, x in (rest, rest[::-1]):
        r = core(g, s)
        if r and r[0] is x:
            return Match(rule, i, frozenset(idxs | r[1] | {i} | g.const_idxs(halves[0])), (x,))
    return None


def match_gelu_erf(g: Graph, i: int):
    return _match_gelu(g, i, _one_plus_erf, "gelu_erf")


def match_gelu_tanh(g: Graph, i: int):
    return _match_gelu(g, i, _one_plus_tanh, "gelu_tanh")


_PASS = ("broadcast_in_dim", "reshape", "convert_element_type", "stop_gradient", "expand_dims")


def _through(g: Graph, atom, idxs: set):
    """Follow shape-only/cast/stop_gradient producers backwards, collecting their indices."""
    p = g.prod(atom, *_PASS)
    while p:
        idxs.add(p[0])
        atom = p[1].invars[0]
        p = g.prod(atom, *_PASS)
    return atom


def _mask_select(g: Graph, atom, fill_ok: Callable[[float], bool]):
    """atom == select_n(mask, fill, y) (i.e. where(mask, y, fill)): (mask, y, idxs)."""
    p = g.prod(atom, "select_n")
    if not p or len(p[1].invars) != 3:
        return None
    mask, fill, y = p[1].invars
    if not (hasattr(mask, "aval") and mask.aval.dtype == jnp.bool_):
        return None
    f = g.const(fill)
    if f is None or not fill_ok(f):
        return None
    return mask, y, {p[0]} | g.const_idxs(fill)


def _single_axis(eqn) -> Optional[int]:
    axes = eqn.params.get("axes")
    return axes[0] if axes is not None and len(axes) == 1 else None


def match_softmax(g: Graph, i: int):
    """exp(x - max x) / sum exp(...) with optional masks; anchor = the div (or its outer where)."""
    eqn = g.eqns[i]
    anchor, div_i = i, i
    outer_mask = None
    if eqn.primitive.name == "select_n":
        r = _mask_select(g, eqn.outvars[0], lambda f: f == 0.0)
        if not r:
            return None
        outer_mask, inner, idxs0 = r
        p = g.prod(inner, "div")
        if not p or not g.single_use(inner):
            return None
        div_i = p[0]
    elif eqn.primitive.name == "div":
        idxs0 = set()
    else:
        return None
    idxs = set(idxs0) | {anchor, div_i}
    num, den = g.eqns[div_i].invars
    pe = g.prod(num, "exp")
    if not pe:
        return None
    idxs.add(pe[0])
    red = _through(g, den, idxs)
    pr = g.prod(red, "reduce_sum")
    if not pr or _single_axis(pr[1]) is None:
        return None
    idxs.add(pr[0])
    axis = _single_axis(pr[1])
    summed = pr[1].invars[0]
    mask = None
    if summed is not num:
        r = _mask_select(g, summed, lambda f: f == 0.0)
        if not r or r[1] is not num:
            return None
        mask, _, more = r
        idxs |= more
    z = pe[1].invars[0]
    x = z
    found_masks = []
    ps = g.prod(z, "sub")
    if ps:
        xm, t = ps[1].invars
        sub_idxs = {ps[0]}
        t = _through(g, t, sub_idxs)
        pm = g.prod(t, "max")  # max(-inf, reduce_max(...)) as JAX writes it
        if pm:
            a, b = pm[1].invars
            if g.is_const(a) and not g.is_const(b):
                sub_idxs |= {pm[0]} | g.const_idxs(a)
                t = b
            elif g.is_const(b):
                sub_idxs |= {pm[0]} | g.const_idxs(b)
                t = a
        prm = g.prod(t, "reduce_max")
        if prm and _single_axis(prm[1]) == axis:
            sub_idxs.add(prm[0])
            v = prm[1].invars[0]
            roots = {id(v)}
            r = _mask_select(g, v, lambda f: f <= -1e4)
            if r:
                sub_idxs |= r[2]
                roots = {id(r[1])}
                found_masks.append(r[0])
            rx = _mask_select(g, xm, lambda f: f <= -1e4)
            if rx:
                sub_idxs |= rx[2]
                xm_base = rx[1]
                found_masks.append(rx[0])
            else:
                xm_base = xm
            if id(xm_base) in roots or xm_base is v:
                idxs |= sub_idxs
                x = xm_base
                mask = mask if mask is not None else (found_masks or [None])[0]
            else:
                found_masks = []
    masks = [m for m in (mask, outer_mask, *found_masks) if m is not None]
    if len({id(_through(g, m, set())) for m in masks}) > 1:
        return None  # different masks (modulo broadcasting): not one softmax
    mask = mask if mask is not None else outer_mask
    ndim = len(x.aval.shape) if hasattr(x, "aval") else 1
    axis = axis % ndim
    inputs = (x,) if mask is None else (x, mask)
    return Match("softmax", anchor, frozenset(idxs), inputs, (("axis", axis),))


def match_div_sqrt(g: Graph, i: int):
    eqn = g.eqns[i]
    if eqn.primitive.name != "div":
        return None
    a, b = eqn.invars
    p = g.prod(b, "sqrt")
    if not p or not g.single_use(b):
        return None
    return Match("div_sqrt", i, frozenset({i, p[0]}), (a, p[1].invars[0]))


def _single(prim: str, rule: str, pred: Callable = lambda g, e: True):
    def match(g: Graph, i: int):
        eqn = g.eqns[i]
        if eqn.primitive.name != prim or not pred(g, eqn):
            return None
        if all(g.is_const(v) for v in eqn.invars):  # public constant: nothing to hide
            return None
        if not jnp.issubdtype(eqn.outvars[0].aval.dtype, jnp.floating):
            return None
        return Match(rule, i, frozenset({i}), tuple(eqn.invars),
                     tuple(sorted((k, v) for k, v in eqn.params.items() if k == "y")))
    return match


# ---------------------------------------------------------------------------------------------
# Builders: (policy, input values, attrs) -> replacement value.

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


def match_signbit(g: Graph, i: int):
    """shift_right_arithmetic(bitcast_convert_type(x float -> int), bits - 1): jnp.signbit's
    (and copysign's) read of the IEEE sign bit, which a fixed-point secret lacks; replaced by
    -[x < 0] (one comparison)."""
    eqn = g.eqns[i]
    if eqn.primitive.name != "shift_right_arithmetic":
        return None
    p = g.prod(eqn.invars[0], "bitcast_convert_type")
    if not p or not g.single_use(eqn.invars[0]):
        return None
    x = p[1].invars[0]
    bits = np.dtype(eqn.outvars[0].aval.dtype).itemsize * 8
    if not (hasattr(x, "aval") and jnp.issubdtype(x.aval.dtype, jnp.floating)
            and np.dtype(x.aval.dtype).itemsize * 8 == bits and g.const(eqn.invars[1]) == bits - 1):
        return None
    return Match("signbit", i, frozenset({i, p[0]} | g.const_idxs(eqn.invars[1])), (x,))


def _math(prim: str, build: Callable):
    """A single-primitive rule of the `math` class (compiler/approximations_math.py)."""
    return Rule(prim, "math", _single(prim, prim), build, False)


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


@dataclasses.dataclass(frozen=True)
class Rule:
    """A rewrite rule: its operator class (a Policy field), matcher, builder and pass."""
    name: str
    op_class: str
    match: Callable
    build: Callable
    composite: bool


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
    Rule("exp", "exp", _single("exp", "exp"), lambda pol, v, a: pol.exp_fn()(v[0]), False),
    Rule("tanh", "tanh", _single("tanh", "tanh"), lambda pol, v, a: pol.tanh_fn()(v[0]), False),
    Rule("logistic", "logistic", _single("logistic", "logistic"),
         lambda pol, v, a: pol.logistic_fn()(v[0]), False),
    Rule("erf", "erf", _single("erf", "erf"), lambda pol, v, a: pol.erf_fn()(v[0]), False),
    Rule("erfc", "erf", _single("erfc", "erfc"),
         lambda pol, v, a: 1.0 - pol.erf_fn()(v[0]), False),
    Rule("rsqrt", "rsqrt", _single("rsqrt", "rsqrt"),
         lambda pol, v, a: pol.rsqrt_fn()(v[0]), False),
    Rule("sqrt", "rsqrt", _single("sqrt", "sqrt"),
         lambda pol, v, a: v[0] * pol.rsqrt_fn()(v[0]), False),
    Rule("div", "reciprocal",
         _single("div", "div", lambda g, e: not g.is_const(e.invars[1])),
         lambda pol, v, a: v[0] * _signed_recip(pol)(v[1]), False),
    Rule("integer_pow", "reciprocal",
         _single("integer_pow", "integer_pow", lambda g, e: e.params["y"] < 0),
         _build_int_pow, False),
    Rule("rem", "reciprocal",
         _single("rem", "rem", lambda g, e: not g.is_const(e.invars[1])),
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


# ---------------------------------------------------------------------------------------------
# Planning and applying.

def plan(closed, policy: P.Policy) -> list[Match]:
    """All matches to apply, composite rules first, no equation claimed twice."""
    g = Graph(closed)
    claimed: set = set()
    found: list[Match] = []
    for composite in (True, False):
        for i in range(len(g.eqns)):
            if i in claimed:
                continue
            for rule in RULES.values():
                if rule.composite != composite or method_of(policy, rule) is None:
                    continue
                m = rule.match(g, i)
                if m is None or (m.eqns & claimed) or not _closed_over(g, m):
                    continue
                found.append(m)
                claimed |= m.eqns
                break
    return sorted(found, key=lambda m: m.anchor)


def _closed_over(g: Graph, m: Match) -> bool:
    """Every swallowed equation's outputs are used only inside the match (anchor excepted)."""
    for j in m.eqns:
        if j == m.anchor:
            continue
        for v in g.eqns[j].outvars:
            if compat.is_var(v) and any(u not in m.eqns for u in g.users.get(v, [])):
                return False
    return True


def _interpret(closed, matches: list[Match], policy: P.Policy, args):
    jaxpr = closed.jaxpr
    by_anchor = {m.anchor: m for m in matches}
    skip = set().union(*[m.eqns for m in matches]) if matches else set()
    env: dict = {}

    def read(v):
        return compat.literal_value(v) if compat.is_literal(v) else env[v]

    for v, x in zip(jaxpr.constvars, closed.consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    for i, eqn in enumerate(jaxpr.eqns):
        if i in by_anchor:
            m = by_anchor[i]
            rule = RULES[m.rule]
            stack = compat.extend_name_stack(compat.name_stack_of(eqn),
                                             f"{rule.op_class}[{method_of(policy, rule)}]")
            out_aval = eqn.outvars[0].aval
            with compat.user_context(compat.traceback_of(eqn), stack):
                out = rule.build(policy, [read(a) for a in m.inputs], m.attrs)
                out = jnp.asarray(out, out_aval.dtype)
                if out.shape != out_aval.shape:
                    out = jnp.broadcast_to(out, out_aval.shape)
            env[eqn.outvars[0]] = out
            continue
        if i in skip:
            continue
        with compat.user_context(compat.traceback_of(eqn), compat.name_stack_of(eqn)):
            outs = compat.bind_folding(eqn, [read(v) for v in eqn.invars])
        for v, o in zip(eqn.outvars, outs):
            if compat.is_var(v):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def rewrite(traced: T.Traced, policy="exact") -> T.Traced:
    """The same program with the policy's approximations in place of heavy operators."""
    policy = P.get(policy)
    matches = plan(traced.closed_jaxpr, policy)
    specs = [compat.shape_dtype_of(a) for a in traced.in_avals]
    raw = jax.make_jaxpr(
        lambda *a: _interpret(traced.closed_jaxpr, matches, policy, a))(*specs)
    closed = jax.make_jaxpr(lambda *a: T.eval_inlined(raw.jaxpr, raw.consts, a))(*specs)
    closed = compat.dce(closed)
    return dataclasses.replace(traced, closed_jaxpr=closed, in_avals=tuple(closed.in_avals),
                               out_avals=tuple(closed.out_avals))


@dataclasses.dataclass(frozen=True)
class Replacement:
    """A report row: what was replaced, by which method, where."""
    op_class: str       # policy field: gelu, softmax, rsqrt, exp, reciprocal, ...
    rule: str           # the rule that matched: gelu_erf, softmax, div, ...
    method: str         # the policy's approximation name
    scope: str          # module path of the anchor equation
    where: str          # "file.py:LINE (scope)"
    masked: bool = False  # softmax only: a boolean mask was recovered


def matches(traced: T.Traced, policy="exact") -> list[Replacement]:
    """What `rewrite(traced, policy)` replaces, where (for tests and the CLI)."""
    policy = P.get(policy)
    eqns = traced.closed_jaxpr.jaxpr.eqns
    rows = []
    for m in plan(traced.closed_jaxpr, policy):
        rule = RULES[m.rule]
        eqn = eqns[m.anchor]
        rows.append(Replacement(rule.op_class, m.rule, method_of(policy, rule),
                                T.scope_of(eqn, traced.root), T.where(eqn, traced.root),
                                masked=len(m.inputs) > 1 and m.rule == "softmax"))
    return rows


def friendly(fn: Callable, policy="exact") -> Callable:
    """`fn` with heavy operators replaced: plain float JAX, jit-able and differentiable.

    Traces `fn` once per input structure and shapes (cached), then evaluates the rewritten
    equations directly on the arguments (arrays or tracers).
    """
    policy = P.get(policy)
    cache: dict = {}

    def wrapped(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        specs = [T.abstract(x) for x in flat]
        key = (tree, tuple((s.shape, str(s.dtype), s.weak_type) for s in specs))
        if key not in cache:
            traced = T.trace(fn, *jax.tree_util.tree_unflatten(tree, specs))
            cache[key] = (traced, plan(traced.closed_jaxpr, policy))
        traced, found = cache[key]
        outs = _interpret(traced.closed_jaxpr, found, policy, flat)
        return jax.tree_util.tree_unflatten(traced.out_tree, outs)

    wrapped.policy = policy
    wrapped.__wrapped__ = fn
    return wrapped


__all__ = ["rewrite", "friendly", "matches", "plan", "RULES", "Rule", "Match", "Replacement",
           "Graph"]
