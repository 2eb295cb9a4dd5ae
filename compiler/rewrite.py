"""Stage 2: replace heavy operators by a policy's MPC-friendly approximations.

One registry (`RULES`, compiler/rewrite_rules.py) of rewrite rules. Each rule recognises a pattern
(compiler/rewrite_patterns.py) in the inlined jaxpr (compiler/rewrite_graph.py), anchored at the
pattern's LAST equation (whose output the replacement defines):

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
name stack plus a marker `<class>[<method>]` (e.g. `.../intermediate/gelu[quad]`), so costs
attribute to the right module. The result is re-inlined and dead code is removed.

The marker's format has one owner: `marker` writes it and `approximation_of` reads it back, both
below; the lowering calls `approximation_of` once per equation to set `ir.Op.op_class`
(compiler/op_classes.py), and nothing downstream parses scope strings for a class.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable

import jax
import jax.numpy as jnp

from . import compat
from . import policies as P
from . import trace as T
from .rewrite_graph import Graph, Match
from .rewrite_rules import RULES, Rule, method_of


# ---------------------------------------------------------------------------------------------
# The approximation marker: the one writer and the one reader of its format.

_MARKER = re.compile(r"^([a-z_]+)\[([^\[\]/]+)\]$")


def marker(op_class: str, method: str) -> str:
    """The name-stack component that marks an approximation's equations: `softmax[2quad]`."""
    return f"{op_class}[{method}]"


@functools.lru_cache(maxsize=None)
def _approximated_classes() -> frozenset:
    return frozenset(r.op_class for r in RULES.values())


@functools.lru_cache(maxsize=4096)
def approximation_of(scope: str) -> tuple[str, str] | None:
    """(operator class, method) of the innermost approximation marker in a module path, or None.

    Only a whole path component of the form `<class>[<method>]` whose class is a rewrite rule's
    counts: a user's module named `softmax_proj` (or even `softmax`) is not a marker. Innermost,
    because an approximation's own helpers may push further components below the marker.
    """
    for part in reversed(scope.split("/")):
        m = _MARKER.match(part)
        if m is not None and m.group(1) in _approximated_classes():
            return m.group(1), m.group(2)
    return None


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

    def step(i, eqn, read):
        if i in by_anchor:
            m = by_anchor[i]
            rule = RULES[m.rule]
            stack = compat.extend_name_stack(compat.name_stack_of(eqn),
                                             marker(rule.op_class, method_of(policy, rule)))
            out_aval = eqn.outvars[0].aval
            with compat.user_context(compat.traceback_of(eqn), stack):
                out = rule.build(policy, [read(a) for a in m.inputs], m.attrs)
                out = jnp.asarray(out, out_aval.dtype)
                if out.shape != out_aval.shape:
                    out = jnp.broadcast_to(out, out_aval.shape)
            return [out]
        if i in skip:
            return None
        with compat.user_context(compat.traceback_of(eqn), compat.name_stack_of(eqn)):
            return compat.bind_folding(eqn, [read(v) for v in eqn.invars])

    return compat.walk(jaxpr, closed.consts, args, step)


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


__all__ = ["rewrite", "friendly", "matches", "plan", "marker", "approximation_of", "RULES", "Rule",
           "Match", "Replacement", "Graph"]
