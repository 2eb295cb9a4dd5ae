"""What `pcformer run` prints and writes: cost tables, generation phases, fidelity, summary, JSON.

Plain functions of finished jobs (pcformer/inference.py); flag values come in as arguments.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from . import tables

# wall_time keys (the front end's own times; distinct from the measured report's "time", which
# holds the simulator's XLA compile and run seconds): see docs/compiler.md.
TIME_LABELS = {"frontend_s": "front end (trace, rewrite, lower)", "xla_compile_s": "XLA compile",
               "simulate_s": "simulate", "exact_s": "exact model"}


def _natural(name: str):
    """Module paths in reading order: embeddings, layer_0 ... layer_10, then the rest."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name or "~")]


def print_report(report, cost, nets, scope_depth: int, max_rows: int, out=print) -> bool:
    """The cost tables, totals and latency estimate; returns static cost == measured ledger."""
    j = report.to_json(scope_depth=scope_depth)
    out("\nCost by module (bytes sent by each party; rounds = depth levels the module occupies)")
    by_module = sorted(j["by_scope"], key=lambda r: _natural(r["name"]))
    out(tables.cost_rows(by_module, "module", max_rows))
    out("\nCost by protocol op")
    out(tables.cost_rows(j["by_op"], "op", max_rows))
    same = cost.to_json()["totals"] == j["totals"]
    out(f"\nTotals (rounds = critical-path depth; static cost == measured ledger: {'yes' if same else 'NO'})")
    out(tables.totals_table(j["totals"]))
    if report.security_warning:
        out(f"WARNING: {report.security_warning}")
    seq = " (sequential programs: rounds and latencies add up)" if report.segments else ""
    out(f"\nLatency estimate (rounds x RTT + bytes of the busier direction / bandwidth){seq}")
    rows = []
    for name, net in nets.items():
        e = report.estimate(net)
        rows.append([f"{name} ({net.bandwidth / 1e9:g} Gbps, {net.rtt * 1e3:g} ms RTT)",
                     tables.human_seconds(e["setup"]), tables.human_seconds(e["offline"]),
                     tables.human_seconds(e["online"]), tables.human_seconds(e["per_run"])])
    out(tables.render(["network", "setup (once)", "offline", "online", "per run"], rows))
    return same


def print_generation(job, nets, out=print) -> None:
    """Private generation: the tokens, and the cost of the prefill, of one token, and in total."""
    out(f"\nGenerated privately: {job.text!r}  (token ids {job.token_ids})")
    out(f"  plaintext greedy:  {job.plaintext_text!r}  agreement {job.agreement:.0%}")
    ph = job.phases()
    total = ph["total"]
    rows = []
    for label, p in (("prefill (prompt)", ph["prefill"]), ("per generated token", ph["per_token"])):
        rows.append([label, tables.human_bytes(p["online_bytes"][0]), tables.human_bytes(p["online_bytes"][1]),
                     str(p["online_rounds"]), tables.human_bytes(max(p["offline_bytes"])),
                     *(tables.human_seconds(p["estimate_s"][n]) for n in ("lan", "wan"))])
    rows.append([f"total ({len(job.token_ids)} tokens)", tables.human_bytes(total["online"]["bytes"][0]),
                 tables.human_bytes(total["online"]["bytes"][1]), str(total["online"]["rounds"]),
                 tables.human_bytes(max(total["offline"]["bytes"])),
                 *(tables.human_seconds(total["estimate"][n]["per_run"]) for n in ("lan", "wan"))])
    out("\nGeneration cost (online bytes per party; latency per run, setup excluded)")
    out(tables.render(["", "online P0", "online P1", "online rounds", "offline (max party)",
                       "LAN", "WAN"], rows))


def fidelity_lines(fid: dict) -> list[str]:
    lines = []
    for key, label in (("vs_plaintext", "vs plaintext rewritten program"), ("vs_exact", "vs exact model")):
        f = fid[key]
        if "reference" in f:
            label = f"vs exact ({f['reference']})"
        lines.append(f"  {label:32s} max abs {f['max_abs']:.3g}  mean abs {f['mean_abs']:.3g}  "
                     f"cosine {f['cosine_mean']:.6f}")
    if "top1_agrees_with_exact" in fid:
        lines.append(f"  top-1 class same as the exact model: {'yes' if fid['top1_agrees_with_exact'] else 'NO'}")
    return lines


def not_distilled_note(model, policy, fidelity: dict) -> str | None:
    """A non-exact policy on a checkpoint not distilled for it: a low cosine to the exact model
    is expected, and `pcformer distill` is the remedy. Said on the spot."""
    import json
    from pathlib import Path
    if policy.name == "exact":
        return None
    meta = Path(model.folder or "") / "pcformer_policy.json"
    if model.folder is not None and meta.is_file():
        try:
            if json.loads(meta.read_text()).get("policy") == policy.name:
                return None
        except ValueError:
            pass
    cos = fidelity["vs_exact"]["cosine_mean"]
    if cos > 0.99:
        return None
    return (f"  note: this checkpoint was not distilled for {policy.name}: a low cosine to the exact "
            f"model ({cos:.2f}) is expected before distillation. Run `pcformer distill "
            f"--model=... --policy={policy.name} --out=DIR`, then `pcformer run --model=DIR` "
            f"(the cosine above to the plaintext rewritten program is the MPC protocol's own error).")


def wall_time_line(times: dict, since_start: float) -> str:
    parts = [f"{TIME_LABELS.get(k, k)} {v:.2f} s" for k, v in times.items()]
    return f"Wall time: {', '.join(parts)}; {since_start:.1f} s since pcformer started (imports, model load)"


def summary_table(jobs, nets) -> str:
    """Several policies side by side: bytes, rounds, LAN/WAN latency, fidelity."""
    rows = []
    for j in jobs:
        t = j.report.totals()
        est = {n: j.report.estimate(net)["per_run"] for n, net in nets.items()}
        rows.append([j.policy, tables.human_bytes(max(t["online"]["bytes"])),
                     tables.human_bytes(max(t["offline"]["bytes"])), str(t["online"]["rounds"]),
                     *(tables.human_seconds(est[n]) for n in nets),
                     f"{j.fidelity['vs_plaintext']['cosine_mean']:.4f}",
                     f"{j.fidelity['vs_exact']['cosine_mean']:.4f}"])
    return tables.render(["policy", "online bytes", "offline bytes", "online rounds",
                          *(f"{n} per run" for n in nets), "cos vs plaintext", "cos vs exact"], rows)


def job_to_json(job, nets, static_equals_measured: bool, model_name: str) -> dict:
    """The full JSON report: the measured report's to_json() plus run settings and fidelity
    (every key listed in docs/compiler.md)."""
    j = job.report.to_json()
    j["static_totals"] = job.static_report.to_json()["totals"]
    j["static_equals_measured"] = static_equals_measured
    j["model"] = model_name
    j["policy"] = job.policy
    j["config"] = dataclasses.asdict(job.config)
    j["seq_len"] = job.seq_len
    j["estimate"] = {name: job.report.estimate(net) for name, net in nets.items()}
    j["fidelity"] = job.fidelity
    j["wall_time"] = job.times
    if hasattr(job, "labels"):
        j["classification"] = {"logits": np.asarray(job.private).tolist(), "label": job.label(),
                               "exact_label": job.label(job.exact)}
    if hasattr(job, "token_ids"):
        j["generated"] = {"token_ids": list(map(int, job.token_ids)), "text": job.text,
                          "plaintext_token_ids": list(map(int, job.plaintext_ids)),
                          "agreement": job.agreement, "per_token": job.per_token,
                          "prefill": job.prefill}
    return j
