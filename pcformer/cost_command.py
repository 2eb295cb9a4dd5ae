"""`pcformer cost`: a model's static cost from its config alone (no weights, no simulation).

    pcformer cost --model=gpt2-xl --seq_len=128 --new_tokens=8 --policy=mpcformer --report=out.json

`main(...)` takes plain values, so any command-line front end can call it (cli.py passes its
flags). It prints the per-module table of the whole job, the totals, and for decoders the prompt
(prefill), one decoding step and the total, each with its LAN and WAN latency estimate.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from . import tables


def _natural(name: str):
    """Module paths in reading order: embeddings, h_0 ... h_10, then the rest."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name or "~")]


def _human_count(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def summary_rows(parts: list[tuple[str, object]], nets: dict) -> str:
    """One row per part (prefill, per token, total): bytes both parties send per phase, online
    rounds, and the per-run latency (offline + online) on each network; setup is listed apart
    (paid once per deployment)."""
    header = ["part", "setup", "offline", "online", "online rnd"] + [
        f"{n} per run" for n in nets]
    rows = []
    for label, rep in parts:
        t = rep.totals()
        cells = [label] + [tables.human_bytes(sum(t[ph]["bytes"])) for ph in tables.PHASES]
        cells.append(str(t["online"]["rounds"]))
        cells += [tables.human_seconds(rep.estimate(net)["per_run"]) for net in nets.values()]
        rows.append(cells)
    return tables.render(header, rows)


# what each family is, in a few words (a family registered elsewhere prints without a note)
FAMILY_NOTES = {"beaver": "dealer-assisted 2PC",
                "fss": "dealer-assisted 2PC, FSS comparisons and truncation"}


def format_cost(mc, nets: dict, scope_depth: int = 2, max_rows: int = 40) -> str:
    """The text `pcformer cost` prints for a ModelCost."""
    out = []
    from .presets import DECODERS
    kind = "decoder" if mc.kind in DECODERS else "encoder"
    out.append(f"model     {mc.name} ({mc.kind}, {_human_count(mc.params)} parameters, shapes only)")
    out.append(f"policy    {mc.policy}, protocols {mc.protocols} "
               f"({FAMILY_NOTES.get(mc.protocols, 'registered family')})")
    if kind == "decoder":
        out.append(f"job       prompt of {mc.seq_len} tokens, {mc.new_tokens} new token(s): "
                   f"prefill + {mc.steps} decoding step(s)")
    elif mc.kind == "vit":
        out.append(f"job       one image, {mc.tokens} tokens (patches + CLS; --seq_len does not apply)")
    else:
        out.append(f"job       one forward pass over {mc.seq_len} tokens")
    j = mc.total.to_json(scope_depth)
    out.append("\nCost by module (bytes sent by each party; rounds = depth levels the module occupies)")
    out.append(tables.cost_rows(sorted(j["by_scope"], key=lambda r: _natural(r["name"])),
                                "module", max_rows))
    out.append("\nTotals (rounds = critical-path depth; sequential programs add their online rounds)")
    out.append(tables.totals_table(j["totals"]))
    parts = [("prefill" if kind == "decoder" else "forward", mc.prefill)]
    if mc.step is not None:
        parts += [("per token (decode step)", mc.step), (f"total ({mc.new_tokens} tokens)", mc.total)]
    out.append("\nBy part (bytes both parties send; latency = rounds x RTT + busier direction / "
               "bandwidth, offline + online)")
    out.append(summary_rows(parts, nets))
    out.append("networks  " + ", ".join(f"{n}: {net.bandwidth / 1e9:g} Gbps, {net.rtt * 1e3:g} ms RTT"
                                        for n, net in nets.items()))
    out.append("wall time " + ", ".join(f"{k} {v:.2f} s" for k, v in mc.times.items()))
    return "\n".join(out)


def main(model: str, seq_len: int, new_tokens: int = 1, policy: str = "mpcformer", config=None,
         nets: dict | None = None, report: str | None = None, scope_depth: int = 2,
         max_rows: int = 40, protocols: str | None = None, out=print) -> int:
    """Run `pcformer cost` with plain values; returns the exit status."""
    from . import costing
    from .config import NETWORKS, MPCConfig
    from .inference import load_policy
    nets = dict(NETWORKS) if nets is None else nets
    pol = load_policy(policy)  # a name or a JSON/YAML policy file, as `pcformer run`
    from pcformer.compiler.lower import LoweringError
    from .presets import CostError
    try:
        mc = costing.model_cost(model, seq_len, new_tokens, policy=pol,
                                config=config or MPCConfig(), protocols=protocols)
    except LoweringError as e:  # the policy leaves an operator of this model on secrets, or
        # chose approximations (table lookups) the protocol family has no protocol for
        hint = ("" if "has no protocol in family" in str(e)
                else " (--policy=exact approximates every operator)")
        raise CostError(f"--policy={policy} cannot cost {model}: {e}{hint}") from None
    mc.policy = policy
    out(format_cost(mc, nets, scope_depth, max_rows))
    if report:
        Path(report).write_text(json.dumps(mc.to_json(networks=nets), indent=1))
        out(f"report    {report}")
    return 0
