"""Static cost: the ledger a program WILL write, computed from the IR alone.

Walk the IR in order, tracking each secret's round depth. For each protocol op, its registry
entry (runtime/protocols/registry.py, in ``config.protocols``' family) lists its messages with
depth offsets: the entry's cost formula on the shapes and kwargs its IR adapter gives, the same
the executor passes to the protocol; online
messages land at max(input depths) + offset, offline and setup ones at depth 1; the op's result
is available at max(input depths) + its last online offset. Local and share-local ops send
nothing and carry the max of their inputs' depths. No protocol ever runs here.
"""
from __future__ import annotations

import dataclasses

from pcformer.runtime import costs as _costs
from pcformer.runtime.ledger import Entry
from pcformer.runtime.protocols import registry

from . import ir

__all__ = ["static_cost", "op_messages", "op_costs", "annotated"]


def op_messages(op: ir.Op, config) -> list:
    """The runtime's cost messages (Msg) of one protocol op (its registry entry's formula)."""
    return registry.lookup(op.name, config.protocols).messages(op, config)


def static_cost(prog: ir.Program, config) -> list[Entry]:
    """The list of ledger Entries (op, detail, scope, phase, bits, depth, op_class) of one run."""
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
                                     phase=m.phase, bits=tuple(m.bits), depth=d,
                                     op_class=op.op_class))
            if op.name == "share":
                d_out = 0
        for r in op.results:
            depth[r.id] = d_out
    return entries


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One protocol op's static cost, in bytes as the report counts them (ceil(bits / 8) per
    message and party), so the columns of every op add up to the report's totals exactly."""

    online: tuple[int, int]      # bytes sent online by party 0, party 1
    rounds: int                  # the op's own online rounds (output depth - input depth)
    offline: tuple[int, int]     # bytes each party receives from the dealer
    setup: tuple[int, int]       # bytes sent once per deployment (the server's weight masks)


def _bytes(msgs, phase: str) -> tuple[int, int]:
    ms = [m for m in msgs if m.phase == phase]
    return (sum(-(-m.bits[0] // 8) for m in ms), sum(-(-m.bits[1] // 8) for m in ms))


def op_costs(prog: ir.Program, config) -> list:
    """One OpCost per op of `prog.ops` (by index; None for the free local ops)."""
    out = []
    for op in prog.ops:
        if op.kind != "protocol":
            out.append(None)
            continue
        msgs = op_messages(op, config)
        out.append(OpCost(_bytes(msgs, "online"), _costs.rounds(msgs), _bytes(msgs, "offline"),
                          _bytes(msgs, "setup")))
    return out


_HEAD = f"{'online B p0':>12} {'online B p1':>12} {'rounds':>6} {'offline B':>10} {'setup B':>9} |"


def _column(c) -> str:
    if c is None:
        return " " * (len(_HEAD) - 1) + "|"
    return (f"{c.online[0]:>12} {c.online[1]:>12} {c.rounds:>6} {sum(c.offline):>10} "
            f"{sum(c.setup):>9} |")


def annotated(prog: ir.Program, config) -> str:
    """The IR with a cost column to the left of each op and the totals at the end (what
    `pcformer run --dump_ir` writes). Bytes columns add up to the report's totals; `rounds` is
    each op's own, the total is the critical path (ops on parallel branches overlap)."""
    costs = op_costs(prog, config)
    entries = static_cost(prog, config)
    depth = {ph: max((e.depth for e in entries if e.phase == ph), default=0)
             for ph in ("online",)}
    tot = lambda f: tuple(sum(f(c)[i] for c in costs if c is not None) for i in (0, 1))
    on, off, setup = tot(lambda c: c.online), tot(lambda c: c.offline), tot(lambda c: c.setup)
    note = ("# cost per op (static, runtime/costs.py): online bytes sent by party 0 and party 1, "
            "the op's own online rounds,\n# offline bytes from the dealer and setup bytes (once "
            "per deployment), both parties together; blank: free local op.")
    total = (f"# total: online {on[0]} B (p0) + {on[1]} B (p1), {depth['online']} rounds "
             f"(critical path); offline {off[0]} + {off[1]} B; setup {setup[0]} + {setup[1]} B")
    return "\n".join([note, ir.format_program(prog, [_column(c) for c in costs], _HEAD), total])
