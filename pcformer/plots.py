"""Cost plots: bytes and rounds by layer and by operator class, one bar per policy.

matplotlib is an optional extra (`pip install -e ".[plot]"`); everything else in pcformer works
without it. The grouping functions are plain Python so they are tested without matplotlib.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable, Sequence

OP_CLASSES = ("linear", "softmax", "gelu", "layernorm", "other")
_LAYER = re.compile(r"(?:^|/)(?:layer|h|block|layers)_(\d+)(?:/|$)")
# An entry's structured operator class (set at lowering, compiler/op_classes.py) -> its panel.
# rsqrt is LayerNorm's one heavy operator, so its approximation counts as layernorm; the other
# approximated operators (exp, reciprocal, tanh, ...) and unclassed steps are "other".
_PANEL = {"linear": "linear", "softmax": "softmax", "gelu": "gelu", "layernorm": "layernorm",
          "rsqrt": "layernorm"}


def op_class(entry) -> str:
    """The plots' operator class (one of OP_CLASSES) of a ledger entry, from its `op_class`."""
    return _PANEL.get(entry.op_class, "other")


def layer_of(scope: str) -> str:
    """'layer 3' for a scope inside encoder/layer_3 (or h_3), else its first path component."""
    m = _LAYER.search(scope)
    if m:
        return f"layer {int(m.group(1))}"
    return scope.split("/")[0] if scope else "(top)"


def group_online(entries: Iterable, key) -> dict[str, dict]:
    """Online bytes (both parties) and rounds (distinct depth levels) per group."""
    groups: dict[str, dict] = defaultdict(lambda: {"bytes": 0, "depths": set()})
    for e in entries:
        if e.phase != "online":
            continue
        g = groups[key(e)]
        g["bytes"] += e.bytes[0] + e.bytes[1]
        g["depths"].add(e.depth)
    return {k: {"bytes": v["bytes"], "rounds": len(v["depths"])} for k, v in groups.items()}


def _layer_sort(name: str):
    m = re.match(r"layer (\d+)$", name)
    return (1, int(m.group(1)), "") if m else (0 if name.startswith("emb") else 2, 0, name)


def plot_policies(runs: Sequence[tuple[str, object]], path: str, title: str | None = None) -> None:
    """Write a PNG: online bytes and rounds by layer and by operator class, a bar per policy.

    `runs` is a list of (policy name, Report); `title` (e.g. model, seq_len, protocol) heads the
    figure. The by-layer axis holds the transformer layers only (embeddings, pooler and other
    top-level scopes still count in the by-class panels).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # the optional extra is missing
        raise ValueError("--plot needs matplotlib: pip install -e \".[plot]\"") from e
    import numpy as np

    heading = title  # (the loop below names each panel's title)
    by_layer = {p: group_online(r.entries, lambda e: layer_of(e.scope)) for p, r in runs}
    by_class = {p: group_online(r.entries, op_class) for p, r in runs}
    layers = sorted({k for g in by_layer.values() for k in g if k.startswith("layer ")},
                    key=_layer_sort)
    classes = [c for c in OP_CLASSES if any(c in g for g in by_class.values())]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    width = 0.8 / max(len(runs), 1)
    for col, (groups, names, title) in enumerate(((by_layer, layers, "by layer"),
                                                  (by_class, classes, "by operator class"))):
        x = np.arange(len(names))
        for i, (policy, _) in enumerate(runs):
            g = groups[policy]
            mb = [g.get(n, {}).get("bytes", 0) / 1e6 for n in names]
            rd = [g.get(n, {}).get("rounds", 0) for n in names]
            axes[0, col].bar(x + i * width, mb, width, label=policy)
            axes[1, col].bar(x + i * width, rd, width, label=policy)
        for row, ylabel in ((0, "online MB (both parties)"), (1, "online rounds")):
            ax = axes[row, col]
            ax.set_xticks(x + width * (len(runs) - 1) / 2)
            ax.set_xticklabels(names, rotation=30, ha="right")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel} {title}")
            ax.legend()
    if heading:
        fig.suptitle(heading)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_trace(trace: dict, path: str, scope: str | None = None, phase: str = "online") -> None:
    """Draw a Chrome trace (pcformer.timeline) as a PNG: one band per party, nested slices.

    `scope` (e.g. "encoder/layer_0") restricts the picture to that module's time span, so one
    layer's protocol steps can be seen; Perfetto (ui.perfetto.dev) shows the same file
    interactively. Slices of depth d sit d rows down within their party's band.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ValueError("plotting needs matplotlib: pip install -e \".[plot]\"") from e

    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    marks = [e for e in events if e["cat"] == "phase" and e["name"] == phase]
    if not marks:
        raise ValueError(f"the trace has no {phase} phase")
    p0, p1 = marks[0]["ts"], marks[0]["ts"] + marks[0]["dur"]
    xs = [e for e in events if e["pid"] in (0, 1) and e["cat"] in ("scope", "step")
          and e["ts"] >= p0 - 1e-6 and e["ts"] + e["dur"] <= p1 + 1e-6]
    if scope is not None:
        span = [e for e in xs if e["cat"] == "scope" and e["args"]["scope"] == scope]
        if not span:
            raise ValueError(f"no scope {scope!r} in the trace")
        t0 = min(e["ts"] for e in span)
        t1 = max(e["ts"] + e["dur"] for e in span)
        xs = [e for e in xs if e["ts"] >= t0 - 1e-6 and e["ts"] + e["dur"] <= t1 + 1e-6]
    else:
        t0 = min(e["ts"] for e in xs)
        t1 = max(e["ts"] + e["dur"] for e in xs)

    base = scope.count("/") if scope else 0

    def level(e):   # a scope a/b/c sits at row 2 (minus the picture's base), its steps below it
        if e["cat"] == "scope":
            return e["args"]["scope"].count("/") - base
        return (e["args"]["scope"].count("/") + 1 if e["args"]["scope"] else 0) - base

    rows = max(level(e) for e in xs) + 1
    fig, ax = plt.subplots(figsize=(14, 1.2 + 0.55 * rows * 2))
    colors = plt.get_cmap("tab20")
    names = sorted({e["name"] for e in xs})
    for e in xs:
        band = e["pid"] * (rows + 1)
        y = band + level(e)
        c = colors(names.index(e["name"]) % 20) if e["cat"] == "step" else (0.85, 0.88, 0.95)
        ax.broken_barh([((e["ts"] - t0) / 1e3, e["dur"] / 1e3)], (y, 0.9), facecolors=c,
                       edgecolors="white", linewidth=0.3)
        if e["dur"] / max(t1 - t0, 1e-9) > 0.04:
            ax.text((e["ts"] - t0 + e["dur"] / 2) / 1e3, y + 0.45, e["name"], ha="center",
                    va="center", fontsize=7, clip_on=True)
    from matplotlib.patches import Patch
    steps = sorted({e["name"] for e in xs if e["cat"] == "step"})
    ax.legend(handles=[Patch(color=colors(names.index(n) % 20), label=n) for n in steps],
              loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, title="protocol op")
    ax.set_yticks([0.45 + p * (rows + 1) for p in (0, 1)])
    ax.set_yticklabels(["party 0 (server)", "party 1 (client)"])
    ax.invert_yaxis()
    ax.set_xlabel("time (ms) on the trace's network model")
    net = trace.get("otherData", {}).get("network", "")
    ax.set_title(f"{scope or 'whole run'}: {phase} steps, network {net}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
