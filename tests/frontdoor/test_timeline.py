"""The Chrome trace timeline and the cost plots' grouping, on hand-made ledger entries.

End-to-end checks on a real compiled program live in tests/frontdoor/test_cli.py.
"""

import json
import random

import pytest

from pcformer.config import Network
from pcformer.plots import group_online, layer_of, op_class
from pcformer.report import Report
from pcformer.runtime.ledger import Entry
from pcformer.timeline import chrome_trace, write_chrome_trace

SCOPES = ["embeddings", "encoder/layer_0/attention/self/query", "encoder/layer_0/attention/self/key",
          "encoder/layer_0/attention/self/softmax[2quad]", "encoder/layer_0/intermediate/gelu[quad]",
          "encoder/layer_1/attention/output/LayerNorm", "encoder/layer_10/output/dense", ""]


def random_entries(seed: int, n: int = 60) -> list[Entry]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        phase = rng.choice(["setup", "offline", "online", "online"])
        depth = 1 if phase != "online" else rng.randint(1, 12)
        out.append(Entry(rng.choice(["mul", "truncate", "dot_general_private", "msb"]), "",
                         rng.choice(SCOPES), phase, (rng.randint(0, 9000), rng.randint(1, 9000)), depth))
    # online depths must be contiguous from 1 (a message at depth d needs a value of depth d-1)
    out += [Entry("mul", "", "x", "online", (64, 64), d) for d in range(1, 13)]
    return out


def slices(trace):
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("net", ["lan", "wan", Network(bandwidth=1e6, rtt=0.02)])
def test_total_time_equals_the_estimate_and_bytes_add_up(seed, net):
    entries = random_entries(seed)
    trace = chrome_trace(entries, net)
    est = Report(entries).estimate(net)
    end = max(e["ts"] + e["dur"] for e in slices(trace))
    assert end == pytest.approx((est["setup"] + est["offline"] + est["online"]) * 1e6, abs=1.0)
    # every phase slice lasts exactly its estimate
    for e in slices(trace):
        if e["cat"] == "phase":
            assert e["dur"] == pytest.approx(est[e["name"]] * 1e6, abs=1.0)
    totals = Report(entries).totals()
    for phase in ("setup", "offline", "online"):
        steps = [e for e in slices(trace) if e["cat"] == "step" and e["args"]["phase"] == phase]
        # each step is drawn once per party track (online/setup) or once on the dealer's (offline)
        copies = 1 if phase == "offline" else 2
        assert len(steps) == copies * totals[phase]["steps"]
        for p in (0, 1):
            got = sum(s["args"]["bytes_sent"][f"party{p}"] for s in steps) // copies
            assert got == totals[phase]["bytes"][p]


@pytest.mark.parametrize("seed", [3, 4])
def test_slices_nest_within_their_parents(seed):
    trace = chrome_trace(random_entries(seed), "lan")
    by_track = {}
    for e in slices(trace):
        by_track.setdefault(e["pid"], []).append(e)
    for track in by_track.values():
        # Chrome trace semantics: on one track, slices must nest or be disjoint (no partial overlap)
        track.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in track:
            t0, t1 = e["ts"], e["ts"] + e["dur"]
            while stack and stack[-1] <= t0 + 1e-6:
                stack.pop()
            if stack:
                assert t1 <= stack[-1] + 1e-6, f"{e['name']} crosses its parent's end"
            stack.append(t1)
    # every step of a scoped entry lies inside a slice of each of its scope's components
    for e in slices(trace):
        if e["cat"] != "step" or not e["args"]["scope"]:
            continue
        parts = e["args"]["scope"].split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            assert any(s["cat"] == "scope" and s["pid"] == e["pid"] and s["args"]["scope"] == prefix
                       and s["ts"] - 1e-6 <= e["ts"] and e["ts"] + e["dur"] <= s["ts"] + s["dur"] + 1e-6
                       for s in slices(trace)), (prefix, e["name"])


def test_trace_file_is_plain_json_with_named_tracks(tmp_path):
    path = tmp_path / "t.json"
    write_chrome_trace(path, random_entries(5), "wan")
    trace = json.loads(path.read_text())
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "process_name"}
    assert {"party 0 (server)", "party 1 (client)", "dealer"} <= names
    assert trace["otherData"]["network"] == "wan"


def test_operator_classes_and_layers():
    def entry(op, scope, cls):
        return Entry(op, "", scope, "online", (8, 8), 1, op_class=cls)
    # the plots read the structured class set at lowering (compiler/op_classes.py), never the scope
    assert op_class(entry("mul", "encoder/layer_0/attention/self/softmax[2quad]", "softmax")) == "softmax"
    assert op_class(entry("square", "h_3/mlp/gelu[quad]", "gelu")) == "gelu"
    assert op_class(entry("mul", "encoder/layer_1/output/LayerNorm", "layernorm")) == "layernorm"
    assert op_class(entry("mul", "encoder/layer_1/output/LayerNorm/rsqrt[newton]", "rsqrt")) == "layernorm"
    assert op_class(entry("dot_general_private", "encoder/layer_0/attention/self/query", "linear")) == "linear"
    assert op_class(entry("truncate", "encoder/layer_0/attention/self/query", "")) == "other"
    assert op_class(entry("mul", "reciprocal[goldschmidt]", "reciprocal")) == "other"
    assert op_class(entry("mul", "encoder/softmax_gate", "")) == "other"   # a name is not a class
    assert layer_of("encoder/layer_10/output/dense") == "layer 10"
    assert layer_of("transformer/h_2/attn") == "layer 2"
    assert layer_of("embeddings/word") == "embeddings"
    g = group_online([Entry("mul", "", "a/layer_1/x", "online", (8, 16), 3),
                      Entry("mul", "", "a/layer_1/y", "online", (8, 8), 3),
                      Entry("mul", "", "a/layer_1/y", "offline", (8, 8), 1)], lambda e: layer_of(e.scope))
    assert g == {"layer 1": {"bytes": 5, "rounds": 1}}


def test_pictures_are_drawn(tmp_path):
    from pcformer.plots import plot_policies, plot_trace
    entries = random_entries(6)
    trace = chrome_trace(entries, "lan")
    plot_trace(trace, str(tmp_path / "t.png"), scope="encoder/layer_0")
    plot_trace(trace, str(tmp_path / "all.png"))
    plot_policies([("a", Report(entries)), ("b", Report(random_entries(7)))], str(tmp_path / "p.png"))
    for name in ("t.png", "all.png", "p.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="no scope"):
        plot_trace(trace, str(tmp_path / "x.png"), scope="nowhere")


def test_report_trace_is_the_timeline(tmp_path):
    entries = random_entries(8)
    rep = Report(entries)
    obj = rep.trace("wan", path=tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(obj))
    est = rep.estimate("wan")
    assert obj["otherData"]["total_s"] == pytest.approx(est["setup"] + est["offline"] + est["online"])
