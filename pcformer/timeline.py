"""A private inference trace: both parties' communication steps on a timeline, as Chrome trace JSON.

The file opens without conversion in Perfetto (ui.perfetto.dev) and chrome://tracing.

What the time means. The timeline draws the network model of `Report.estimate`: local compute
is taken as free, and each phase (setup, offline, online) runs its communication rounds one after
another along the critical path. A phase lasts `rounds * rtt + max(bytes_P0, bytes_P1) * 8 /
bandwidth`, exactly the estimate (full duplex: the busier direction bounds the transfer). Each
round gets one RTT; the phase's transfer time is shared among its steps in proportion to the bytes
each step moves. Independent steps at the same depth share their round: inside it they are laid
side by side (each an equal share of the RTT plus its transfer share), so module scopes nest
cleanly (one slice per module path component: encoder -> layer_0 -> attention -> ...).

Tracks: one process per party (party 0 is the server, party 1 the client) and one for the dealer
(offline material). A fourth track marks the phases. Every step's slice carries its op, scope,
bytes sent by each party and its depth (round) in `args`.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Iterable, Sequence

from pcformer.runtime.ledger import PHASES, Entry

from .config import Network
from .config import network as as_network

US = 1e6  # trace-event timestamps are in microseconds

PARTY_NAMES = ("party 0 (server)", "party 1 (client)", "dealer", "phases")
DEALER, PHASE_TRACK = 2, 3


def _natural_key(path: str):
    """Sort `layer_10` after `layer_9`."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path)]


def step_bytes(entry: Entry) -> int:
    """Bytes a step puts on the wire, both directions together."""
    return entry.bytes[0] + entry.bytes[1]


def _layout_phase(entries: Sequence[Entry], start: float, net: Network):
    """(step, t0, t1) for each entry of one phase, rounds in depth order; returns end time too."""
    by_depth: dict[int, list[Entry]] = defaultdict(list)
    for e in entries:
        by_depth[e.depth].append(e)
    sent = (sum(e.bytes[0] for e in entries), sum(e.bytes[1] for e in entries))
    transfer = max(sent, default=0) * 8.0 / net.bandwidth
    moved = sum(sent)
    placed, t = [], start
    for depth in sorted(by_depth):
        steps = sorted(by_depth[depth], key=lambda e: (_natural_key(e.scope), e.op, e.detail))
        share = net.rtt / len(steps)
        for e in steps:
            dt = share + (transfer * step_bytes(e) / moved if moved else 0.0)
            placed.append((e, t, t + dt))
            t += dt
    return placed, t


def _scope_slices(placed, pid: int) -> list[dict]:
    """Nested module slices over a time-ordered run of steps (a flame-graph-style stack walk)."""
    events, stack = [], []  # stack of (name, t_open)

    def close_to(n, t):
        while len(stack) > n:
            name, t0 = stack.pop()
            events.append(_slice(name, t0, t, pid, cat="scope", args={"scope": "/".join(
                [s for s, _ in stack] + [name])}))

    last_t = None
    for e, t0, t1 in placed:
        parts = [p for p in e.scope.split("/") if p] if e.scope else []
        common = 0
        while common < min(len(stack), len(parts)) and stack[common][0] == parts[common]:
            common += 1
        close_to(common, last_t if last_t is not None else t0)
        # A gap (another track's step) between two steps closes nothing: steps are contiguous
        # within a track by construction.
        for p in parts[common:]:
            stack.append((p, t0))
        last_t = t1
    if last_t is not None:
        close_to(0, last_t)
    return events


def _slice(name, t0, t1, pid, cat, args):
    return {"name": name, "cat": cat, "ph": "X", "ts": t0 * US, "dur": (t1 - t0) * US,
            "pid": pid, "tid": 0, "args": args}


def _step_args(e: Entry) -> dict:
    return {"op": e.op, "detail": e.detail, "scope": e.scope, "op_class": e.op_class,
            "phase": e.phase,
            "bytes_sent": {"party0": e.bytes[0], "party1": e.bytes[1]}, "depth": e.depth}


def chrome_trace(entries: Iterable[Entry], network: str | Network = "lan", *,
                 title: str = "pcformer private inference") -> dict:
    """The trace-event JSON object for `entries` under `network` (a preset name or a Network).

    Returns {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}; the last event
    ends at the total latency estimate (the sum over phases of `Report.estimate`).
    """
    entries, net = list(entries), as_network(network)
    events = [{"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}}
              for pid, name in enumerate(PARTY_NAMES)]
    events += [{"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                "args": {"sort_index": pid}} for pid in range(len(PARTY_NAMES))]
    t = 0.0
    phase_times = {}
    for phase in PHASES:
        es = [e for e in entries if e.phase == phase]
        placed, end = _layout_phase(es, t, net)
        phase_times[phase] = (t, end)
        if end > t:
            events.append(_slice(phase, t, end, PHASE_TRACK, cat="phase", args={
                "rounds": max(e.depth for e in es), "steps": len(es),
                "bytes": [sum(e.bytes[0] for e in es), sum(e.bytes[1] for e in es)]}))
        pids = (DEALER,) if phase == "offline" else (0, 1)
        for pid in pids:
            events += _scope_slices(placed, pid)
            events += [_slice(e.op, t0, t1, pid, cat="step", args=_step_args(e)) for e, t0, t1 in placed]
        t = end
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {"title": title, "network": net.name, "bandwidth_bits_per_s": net.bandwidth,
                      "rtt_s": net.rtt,
                      "total_s": t, "phases_s": {p: b - a for p, (a, b) in phase_times.items()}},
    }


def write_chrome_trace(path, entries: Iterable[Entry], network: str | Network = "lan", **kw) -> dict:
    """Write `chrome_trace(...)` to `path` (JSON); returns the object written."""
    obj = chrome_trace(entries, network, **kw)
    with open(path, "w") as f:
        json.dump(obj, f)
    return obj
