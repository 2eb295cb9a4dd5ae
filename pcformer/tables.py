"""Plain-text tables for reports: what `pcformer run` prints (no dependency beyond the stdlib)."""

from __future__ import annotations

from typing import Sequence

PHASES = ("setup", "offline", "online")


def human_bytes(n: float) -> str:
    """1234567 -> '1.23 MB' (decimal units, as network figures are quoted)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000.0
    raise AssertionError


def human_seconds(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def render(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A table with one space-padded column per header; `align` is 'l'/'r' per column."""
    cols = len(header)
    align = align or "l" + "r" * (cols - 1)
    widths = [max(len(str(x)) for x in [header[i], *[r[i] for r in rows]]) for i in range(cols)]

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            c = str(c)
            out.append(c.ljust(widths[i]) if align[i] == "l" else c.rjust(widths[i]))
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *[line(r) for r in rows]])


def cost_rows(rows: Sequence[dict], name_header: str, limit: int | None = None) -> str:
    """A report's by_op()/by_scope() rows as a table: bytes per party and rounds per phase."""
    header = [name_header]
    for ph in PHASES:
        header += [f"{ph} P0", f"{ph} P1", f"{ph} rnd"]
    body = []
    shown = rows if limit is None else rows[:limit]
    for r in shown:
        cells = [r["name"] or "(top level)"]
        for ph in PHASES:
            p = r[ph]
            cells += [human_bytes(p["bytes"][0]), human_bytes(p["bytes"][1]), str(p["rounds"])]
        body.append(cells)
    text = render(header, body)
    if limit is not None and len(rows) > limit:
        text += f"\n  ... {len(rows) - limit} more rows (see --report)"
    return text


def totals_table(totals: dict) -> str:
    """The three phases' totals: bytes per party, critical-path rounds, communication steps."""
    body = [[ph, human_bytes(totals[ph]["bytes"][0]), human_bytes(totals[ph]["bytes"][1]),
             str(totals[ph]["rounds"]), str(totals[ph]["steps"])] for ph in PHASES]
    return render(["phase", "sent by P0", "sent by P1", "rounds", "steps"], body)
