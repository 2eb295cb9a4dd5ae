"""Message formulas of the Beaver family's protocols (docs/protocols.md as code) and the shared
message helpers (`Msg`, `rounds`, `place`) every family's formulas use.

One formula per protocol, each a pure function of static shapes, attributes and the MPCConfig
returning the messages the protocol sends, as `Msg`s. Formulas never call a protocol: tests hold
the two equal message by message, which checks both. Which op uses which formula is said by the
op's registry entry (`ProtocolOp.cost`, in the table at the bottom of its protocol module).

Placement: an online Msg arrives at depth max(secret input depths) + depth_offset; offline
(dealer) and setup Msgs are placed at depth 1 (their depth_offset is 1). `place` does this.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .config import MPCConfig


@dataclasses.dataclass(frozen=True)
class Msg:
    phase: str                 # "setup" | "offline" | "online"
    bits: tuple[int, int]      # bits sent by party 0 / party 1 (offline: received from the dealer)
    depth_offset: int          # online: rounds after the inputs are available; else 1
    detail: str = ""


def n_elems(shape) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def log2(l: int) -> int:
    return l.bit_length() - 1


def shift(msgs, off: int, prefix: str = ""):
    """Messages of a sub-protocol whose inputs are ready `off` rounds later."""
    return [dataclasses.replace(m, depth_offset=m.depth_offset + (off if m.phase == "online" else 0),
                                detail=f"{prefix}/{m.detail}" if prefix else m.detail)
            for m in msgs]


def rounds(msgs) -> int:
    """Online rounds of an op (its output depth minus its input depth)."""
    return max((m.depth_offset for m in msgs if m.phase == "online"), default=0)


def place(op: str, msgs, input_depth: int):
    """(op, phase, bits, depth) tuples, comparable with ledger entries."""
    return [(op, m.phase, tuple(m.bits),
             input_depth + m.depth_offset if m.phase == "online" else 1) for m in msgs]


def offline(bits_p1: int, detail: str):
    return Msg("offline", (0, bits_p1), 1, detail)


def both(bits: int, off: int, detail: str):
    return Msg("online", (bits, bits), off, detail)


def free(*shapes, config: MPCConfig = MPCConfig(), **attrs):
    """Local ops: share (PRG seeds), add, sub, neg, add/mul by public, xor, not: no messages."""
    return []


def __getattr__(name: str):
    """`COSTS`: a read-only alias, op name -> cost formula of the default family, built from the
    protocol registry (runtime/protocols/registry.py), which owns the op -> formula mapping."""
    if name == "COSTS":
        from .protocols import registry
        return {n: registry.lookup(n).cost for n in registry.names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
