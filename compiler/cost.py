"""Static cost: the ledger a program WILL write, computed from the IR alone.

Walk the IR in order, tracking each secret's round depth. For each protocol op,
``runtime.costs.COSTS[name](*shapes, config=config, **kw)`` lists its messages with depth offsets (the
same shapes and kwargs the executor passes to the protocol: ``execute.protocol_call``); online
messages land at max(input depths) + offset, offline and setup ones at depth 1; the op's result
is available at max(input depths) + its last online offset. Local and share-local ops send
nothing and carry the max of their inputs' depths. No protocol ever runs here.
"""
from __future__ import annotations

from pcformer.runtime import costs as _costs
from pcformer.runtime.ledger import Entry

from . import ir
from .execute import protocol_call

__all__ = ["static_cost", "op_messages"]


def op_messages(op: ir.Op, config) -> list:
    """The runtime's cost messages (Msg) of one protocol op."""
    name, shapes, kw = protocol_call(op)
    rule = _costs.COSTS.get(name)
    if rule is None:
        raise KeyError(f"runtime.costs.COSTS has no rule for protocol {name!r}")
    return list(rule(*shapes, config=config, **kw))


def static_cost(prog: ir.Program, config) -> list[Entry]:
    """The list of ledger Entries (op, detail, scope, phase, bits, depth) of one run."""
    depth: dict[int, int] = {}
    entries: list[Entry] = []
    for op in prog.ops:
        d_in = max((depth.get(v.id, 0) for v in op.operands if v.vis.is_secret), default=0)
        d_out = d_in
        if op.kind == "protocol":
            for m in op_messages(op, config):
                if m.phase == "online":
                    d = d_in + m.depth_offset
                    d_out = max(d_out, d)
                else:
                    d = 1
                entries.append(Entry(op=op.name, detail=m.detail, scope=op.scope,
                                     phase=m.phase, bits=tuple(m.bits), depth=d))
            if op.name == "share":
                d_out = 0
        for r in op.results:
            depth[r.id] = d_out
    return entries
