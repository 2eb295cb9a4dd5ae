"""Reports: totals, rows, JSON schema and latency estimates on hand-made ledger entries."""
import json

import pytest

from pcformer import Network, Report
from pcformer.runtime.ledger import Entry


def _entries():
    return [
        Entry("mul", "mul", "encoder/layer_0/attention", "online", (128, 128), 1),
        Entry("mul", "mul", "encoder/layer_0/mlp", "online", (64, 64), 1),
        Entry("truncate", "truncate", "encoder/layer_0/mlp", "online", (9, 9), 2),
        Entry("mul", "mul", "encoder/layer_1/mlp", "offline", (0, 64), 1),
        Entry("dot_general_private", "dot_general_private", "encoder/layer_1/mlp", "setup",
              (800, 0), 1),
        Entry("reveal", "reveal", "", "online", (0, 3), 5),
    ]


def test_totals_bytes_rounds_steps():
    t = Report(_entries()).totals()
    # bytes = sum of ceil(bits/8) per entry: 16 + 8 + 2 (9 bits -> 2 bytes) + 0
    assert t["online"] == {"bytes": [16 + 8 + 2 + 0, 16 + 8 + 2 + 1], "rounds": 5, "steps": 4}
    assert t["offline"] == {"bytes": [0, 8], "rounds": 1, "steps": 1}
    assert t["setup"] == {"bytes": [100, 0], "rounds": 1, "steps": 1}


def test_by_op_and_by_scope_rows():
    r = Report(_entries())
    ops = {row["name"]: row for row in r.by_op()}
    assert set(ops) == {"mul", "truncate", "reveal", "dot_general_private"}
    # the two online muls sit at the same depth: one round level, two steps
    assert ops["mul"]["online"] == {"bytes": [24, 24], "rounds": 1, "steps": 2}
    assert ops["mul"]["offline"]["bytes"] == [0, 8]
    scopes = {row["name"]: row for row in r.by_scope(depth=2)}
    assert set(scopes) == {"encoder/layer_0", "encoder/layer_1", ""}
    assert scopes["encoder/layer_0"]["online"] == {"bytes": [26, 26], "rounds": 2, "steps": 3}
    full = {row["name"] for row in r.by_scope()}
    assert "encoder/layer_0/attention" in full and "encoder/layer_0/mlp" in full


def test_json_schema_and_static_measured_same_totals():
    static = Report(_entries(), static=True)
    measured = Report(_entries(), time={"compile_s": 1.5, "run_s": 0.25})
    js, jm = static.to_json(), measured.to_json()
    json.dumps(js), json.dumps(jm)           # plain JSON
    assert js["totals"] == jm["totals"]
    assert set(js["totals"]) == {"setup", "offline", "online"}
    assert set(js["totals"]["online"]) == {"bytes", "rounds", "steps"}
    assert "time" not in js and jm["time"] == {"compile_s": 1.5, "run_s": 0.25}
    assert js["kind"] == "static" and jm["kind"] == "measured"
    row = js["by_op"][0]
    assert set(row) == {"name", "setup", "offline", "online"}


def test_estimate_lan_wan_and_custom():
    r = Report(_entries())
    lan, wan = r.estimate("lan"), r.estimate("wan")
    # online: 5 rounds * rtt + max(26, 27) bytes * 8 / bandwidth
    assert lan["online"] == pytest.approx(5 * 1e-3 + 27 * 8 / 5e9)
    assert wan["online"] == pytest.approx(5 * 80e-3 + 27 * 8 / 100e6)
    assert wan["per_run"] == pytest.approx(wan["online"] + wan["offline"])
    custom = r.estimate(Network(bandwidth=8.0, rtt=0.0))
    assert custom["setup"] == pytest.approx(100.0)  # 100 bytes at 1 byte/s
    with pytest.raises(ValueError):
        r.estimate("moon")
    with pytest.raises(ValueError):
        Network(bandwidth=0.0)
