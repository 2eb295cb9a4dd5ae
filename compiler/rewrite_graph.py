"""Rewrite, part 1: a read-only view of one jaxpr for pattern matching (who produces and who
uses each variable, which atoms are constants) and the `Match` a pattern yields.

The pass (compiler/rewrite.py) builds one `Graph` per program; the patterns
(compiler/rewrite_patterns.py) only read it.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Optional

import numpy as np

from . import compat


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


def near(a: Optional[float], b: float, rel: float = 1e-5) -> bool:
    """a (a constant read by `Graph.const`, maybe None) equals b to a relative 1e-5."""
    return a is not None and abs(a - b) <= rel * max(abs(b), 1e-12)


@dataclasses.dataclass(frozen=True)
class Match:
    """One recognised pattern: replace eqns `eqns` by the rule's approximation at `anchor`."""
    rule: str
    anchor: int
    eqns: frozenset
    inputs: tuple                    # jaxpr atoms passed to the rule's build function
    attrs: tuple = ()                # static (key, value) pairs


# shape-only, cast and stop_gradient primitives: a value passes through them unchanged
PASS_THROUGH = ("broadcast_in_dim", "reshape", "convert_element_type", "stop_gradient",
                "expand_dims")


def through(g: Graph, atom, idxs: set):
    """Follow shape-only/cast/stop_gradient producers backwards, collecting their indices."""
    p = g.prod(atom, *PASS_THROUGH)
    while p:
        idxs.add(p[0])
        atom = p[1].invars[0]
        p = g.prod(atom, *PASS_THROUGH)
    return atom
