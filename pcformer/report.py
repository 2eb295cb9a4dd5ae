"""Communication reports: totals, per-op and per-scope rows, JSON, latency estimates.

One class for both kinds: ``Report(entries, time=None, static=False)``. ``Program.cost`` is a
Report built from the static entries (``static=True``, computed from the IR and the per-op cost
formulas); ``Program.run`` returns one built from the measured ledger, with wall times. Because
the two carry the same entries (tests hold them equal), their JSON ``totals`` are identical.

Conventions (also in docs/compiler.md):
- bytes of an entry = ceil(bits / 8) per party; a phase's bytes are the sums per party.
- rounds of a phase = its critical-path depth (max entry depth); steps = number of entries.
- a row's rounds = number of distinct depth levels its messages occupy in that phase.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Iterable

from pcformer.runtime.ledger import PHASES, Entry

from .config import Network, network as _network

__all__ = ["Report", "phase_summary", "sequential"]


def phase_summary(entries: Iterable[Entry], phase: str, rounds: str = "max") -> dict:
    """{"bytes": [b0, b1], "rounds": r, "steps": n} of the entries in one phase.

    rounds="max": the critical-path depth (totals); rounds="levels": distinct depths (rows).
    """
    es = [e for e in entries if e.phase == phase]
    b0 = sum(-(-e.bits[0] // 8) for e in es)
    b1 = sum(-(-e.bits[1] // 8) for e in es)
    if rounds == "max":
        r = max((e.depth for e in es), default=0)
    else:
        r = len({e.depth for e in es})
    return {"bytes": [b0, b1], "rounds": r, "steps": len(es)}


def _prefix(scope: str, depth: int | None) -> str:
    if depth is None:
        return scope
    return "/".join(scope.split("/")[:depth]) if scope else ""


def chain(parts: Iterable[Iterable[Entry]]) -> tuple[list[Entry], tuple[int, ...]]:
    """Entries of programs that run one after another (a prefill, then one program per token).

    Each part's depths start, per phase, where the previous part's ended, so the rounds of
    sequential programs ADD (a plain concatenation would count only the deepest one: its rounds
    are a max). Returns the entries and the length of each part.
    """
    out, sizes, offset = [], [], dict.fromkeys(PHASES, 0)
    for part in parts:
        part = list(part)
        out += [dataclasses.replace(e, depth=e.depth + offset[e.phase]) for e in part]
        sizes.append(len(part))
        for ph in PHASES:
            offset[ph] += max((e.depth for e in part if e.phase == ph), default=0)
    return out, tuple(sizes)


def sequential(parts: Iterable[Iterable[Entry]], time: dict | None = None,
               static: bool = False) -> "Report":
    """One Report over programs run one after another: rounds add (see `chain`), and so do the
    latency estimates (each program waits for the one before it)."""
    entries, sizes = chain(parts)
    return Report(entries, time=time, static=static, segments=sizes)


@dataclasses.dataclass
class Report:
    """A communication report over ledger entries (static or measured).

    segments: for a report over sequential programs (`sequential`), the number of entries of
    each program, in order; `estimate` then adds the programs' latencies.
    """

    entries: list
    time: dict | None = None
    static: bool = False
    # security: the seed of the reproducible (insecure) mode, None when keys were fresh; and every
    # value opened in plaintext, to whom (docs/security.md)
    reproducible_seed: int | None = None
    revealed: list | None = None

    segments: tuple | None = None

    @property
    def security_warning(self) -> str | None:
        """One line for the CLI / logs when the run used the reproducible mode, else None."""
        if self.reproducible_seed is None:
            return None
        return (f"reproducible mode (seed={self.reproducible_seed}): masks repeat across runs, "
                f"processes and Programs; this run is NOT secure (testing and debugging only)")

    def __post_init__(self):
        self.entries = list(self.entries)
        if self.segments is not None and sum(self.segments) != len(self.entries):
            raise ValueError(f"segments {self.segments} do not cover {len(self.entries)} entries")

    def parts(self) -> list["Report"]:
        """One Report per sequential program, depths as that program counted them (just this
        one when not sequential)."""
        if not self.segments:
            return [self]
        out, start, offset = [], 0, dict.fromkeys(PHASES, 0)
        for n in self.segments:
            part = self.entries[start:start + n]
            out.append(Report([dataclasses.replace(e, depth=e.depth - offset[e.phase])
                               for e in part], static=self.static))
            for ph in PHASES:  # chain() started the next part after this one's deepest entry
                offset[ph] = max([offset[ph]] + [e.depth for e in part if e.phase == ph])
            start += n
        return out

    # ------------------------------------------------------------------ aggregates
    def totals(self) -> dict:
        """{phase: {"bytes": [b0, b1], "rounds": critical path depth, "steps": entries}}."""
        return {ph: phase_summary(self.entries, ph) for ph in PHASES}

    def _rows(self, key) -> list[dict]:
        groups: dict[str, list] = {}
        for e in self.entries:
            groups.setdefault(key(e), []).append(e)
        rows = []
        for name, es in groups.items():
            row = {"name": name}
            for ph in PHASES:
                row[ph] = phase_summary(es, ph, rounds="levels")
            rows.append(row)
        rows.sort(key=lambda r: (-sum(r["online"]["bytes"]) - sum(r["offline"]["bytes"]),
                                 r["name"]))
        return rows

    def by_op(self) -> list[dict]:
        """One row per protocol op name."""
        return self._rows(lambda e: e.op)

    def by_scope(self, depth: int | None = None) -> list[dict]:
        """One row per module path, cut to its first ``depth`` components when given."""
        return self._rows(lambda e: _prefix(e.scope, depth))

    # ------------------------------------------------------------------ outputs
    def to_json(self, scope_depth: int | None = None) -> dict:
        """Plain JSON (see docs/compiler.md for the schema)."""
        out = {
            "kind": "static" if self.static else "measured",
            "totals": self.totals(),
            "by_op": self.by_op(),
            "by_scope": self.by_scope(scope_depth),
        }
        if self.time is not None:
            out["time"] = dict(self.time)
        out["reproducible_seed"] = self.reproducible_seed
        if self.security_warning:
            out["warnings"] = [self.security_warning]
        if self.revealed is not None:
            out["revealed"] = list(self.revealed)
        return out

    def dumps(self, **kw) -> str:
        return json.dumps(self.to_json(), **kw)

    def estimate(self, network: str | Network = "lan") -> dict:
        """Estimated seconds per phase on a network: rounds * rtt + max(b0, b1) * 8 / bandwidth
        (full duplex: the busier direction bounds transfer time), plus "per_run" =
        offline + online (setup is paid once per deployment)."""
        net = _network(network)
        if self.segments:  # sequential programs: each waits for the one before it
            ests = [p.estimate(net) for p in self.parts()]
            return {k: sum(e[k] for e in ests) for k in ests[0]}
        out = {}
        for ph, p in self.totals().items():
            out[ph] = p["rounds"] * net.rtt + max(p["bytes"]) * 8.0 / net.bandwidth
        out["per_run"] = out["offline"] + out["online"]
        return out

    def trace(self, network: str | Network = "lan", path=None, title: str = "pcformer") -> dict:
        """This report as a Chrome trace-event timeline (Perfetto, chrome://tracing) on `network`;
        written to `path` too when given. See pcformer/timeline.py for what its time means."""
        from .timeline import chrome_trace, write_chrome_trace
        if path is not None:
            return write_chrome_trace(path, self.entries, network, title=title)
        return chrome_trace(self.entries, network, title=title)

    def __str__(self) -> str:
        t = self.totals()
        lines = [f"{'static cost' if self.static else 'measured'}:"]
        for ph in PHASES:
            p = t[ph]
            lines.append(f"  {ph:8s} bytes P0={p['bytes'][0]:,} P1={p['bytes'][1]:,} "
                         f"rounds={p['rounds']} steps={p['steps']}")
        if self.time:
            lines.append("  time " + ", ".join(f"{k}={v:.3f}s" for k, v in self.time.items()))
        if self.security_warning:
            lines.append("  WARNING: " + self.security_warning)
        return "\n".join(lines)
