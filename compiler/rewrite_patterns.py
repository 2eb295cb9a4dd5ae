"""Rewrite, part 2: the patterns. Each `match_*(g, i)` recognises one composite operator (GeLU
in its erf and tanh forms, softmax with its masks, a / sqrt(v), the IEEE sign-bit read) or one
heavy primitive anchored at equation i of a `Graph`, and returns a `Match` or None.

Which pattern serves which operator class of a policy is compiler/rewrite_rules.py.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from .rewrite_graph import Graph, Match, near, through


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
        if near(g.const(b), factor):
            return a, {p[0]} | g.const_idxs(b)
        if near(g.const(a), factor):
            return b, {p[0]} | g.const_idxs(a)
    p = g.prod(atom, "div")
    if p:
        a, b = p[1].invars
        if near(g.const(b), 1.0 / factor):
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
        if near(g.const(one), 1.0):
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
    halves = [a for a in leaves if near(g.const(a), 0.5)]
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
    red = through(g, den, idxs)
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
        t = through(g, t, sub_idxs)
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
    if len({id(through(g, m, set())) for m in masks}) > 1:
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


def single(prim: str, rule: str, pred: Callable = lambda g, e: True):
    """A matcher of one floating `prim` equation with a secret operand (and `pred`)."""
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
