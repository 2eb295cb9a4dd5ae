"""Lowering rules: control flow (cond on a public or secret predicate; loops refused when
their state is secret) and the refusal of heavy operators the rewrite pass should have replaced.

Registered into `lower_base.LOWER_RULES` on import (compiler/lower.py imports this module)."""
from __future__ import annotations

import numpy as np

from .lower_base import HEAVY, LOWER_RULES, _join, _out, rule
from .lower_walk import lower_jaxpr


@rule("cond")
def _cond(L, eqn, index, *args):
    branches = eqn.params["branches"]
    if index.const is not None:   # a compile-time predicate: lower the chosen branch only
        i = int(np.clip(int(np.asarray(index.const)), 0, len(branches) - 1))
        return lower_jaxpr(L, branches[i].jaxpr, list(branches[i].consts), list(args))
    if len(branches) != 2:
        L.fail("cond with more than two branches and a non-constant index")
    for br in branches:
        for e in br.jaxpr.eqns:
            if getattr(e.primitive, "name", "") in ("io_callback", "debug_callback"):
                L.fail("cond with a secret predicate needs pure branches")
    outs = [lower_jaxpr(L, br.jaxpr, list(br.consts), list(args)) for br in branches]
    results = []
    for i, (f_, t_) in enumerate(zip(*outs)):
        L.eqn = eqn
        shape, dtype = _out(eqn, i)
        if f_ is t_:
            results.append(f_)
        elif _join([index, f_, t_]) is not None:
            results.append(L._local_fn("select", [index, f_, t_], shape, dtype))
        else:
            results.append(L.select(index, t_, f_, shape, dtype))
    return results


@rule("while", "scan", "fori_loop")
def _loops(L, eqn, *args):
    L.fail("secret-dependent control flow: a loop whose carried state is secret cannot branch "
           "on it; make the trip count public (e.g. a Python loop or unrolled scan)")


for _h in HEAVY:
    LOWER_RULES[_h] = (lambda h: lambda L, eqn, *a: L.fail(
        f"'{h}' on a secret: the policy does not approximate it (the rewrite pass should have "
        f"replaced it; choose a policy that covers this operator)"))(_h)
