"""The communication ledger: one `Entry` per communication step, written only by `channel`.

Recording happens at trace time from static shapes, so it is free at run time and works under
`jax.jit` (the entries are plain Python values collected while tracing).
"""
from __future__ import annotations

import dataclasses

PHASES = ("setup", "offline", "online")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One communication step.

    op: protocol op the caller invoked (outermost `ctx.op` label).
    detail: full op path, e.g. "relu/msb/and"; informational.
    scope: module path pushed by the caller, e.g. "encoder/layer_0/attention".
    phase: "setup" | "offline" | "online".
    bits: bits sent by party 0 and by party 1 (offline: bits received by each from the dealer).
    depth: round depth at which the message arrives (critical path).
    op_class: the operator class the step serves ("softmax", "gelu", "layernorm", "linear", ...
        or ""), pushed by the caller with the scope; the compiler decides it at lowering.
    """

    op: str
    detail: str
    scope: str
    phase: str
    bits: tuple[int, int]
    depth: int
    op_class: str = ""

    @property
    def bytes(self) -> tuple[int, int]:
        """Bytes per party: ceil(bits / 8) for this entry."""
        return (-(-self.bits[0] // 8), -(-self.bits[1] // 8))


def totals_of(entries) -> dict:
    """Per phase: bits and bytes per party, steps (entries) and rounds (max depth)."""
    out = {}
    for phase in PHASES:
        es = [e for e in entries if e.phase == phase]
        out[phase] = {
            "bits": (sum(e.bits[0] for e in es), sum(e.bits[1] for e in es)),
            "bytes": (sum(e.bytes[0] for e in es), sum(e.bytes[1] for e in es)),
            "steps": len(es),
            "rounds": max((e.depth for e in es), default=0),
        }
    return out


@dataclasses.dataclass
class Ledger:
    """Append-only list of entries; `totals()` summarises them per phase."""

    entries: list = dataclasses.field(default_factory=list)

    def record(self, entry: Entry) -> None:
        self.entries.append(entry)

    def totals(self) -> dict:
        return totals_of(self.entries)

    def clear(self) -> None:
        self.entries.clear()
