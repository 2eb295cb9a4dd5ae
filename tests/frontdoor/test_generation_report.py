"""Private generation is a sequence of programs (prefill, then one per token): its report adds
their rounds and latencies instead of taking the deepest program's."""
import pytest

from pcformer import models
from pcformer.config import NETWORKS
from pcformer.inference import private_generation
from pcformer.report import Report, sequential
from pcformer.runtime.ledger import Entry


def test_sequential_reports_add_rounds_and_latency():
    a = [Entry("mul", "mul", "x", "online", (64, 64), 1), Entry("mul", "mul", "x", "online", (64, 64), 2)]
    b = [Entry("mul", "mul", "y", "online", (640, 0), 1), Entry("d", "d", "y", "offline", (0, 64), 1)]
    rep = sequential([a, b, b])
    t = rep.totals()
    assert t["online"]["rounds"] == 2 + 1 + 1 and t["offline"]["rounds"] == 2
    assert t["online"]["bytes"] == [8 + 8 + 80 + 80, 8 + 8]
    for net in NETWORKS.values():
        parts = [Report(p).estimate(net) for p in (a, b, b)]
        assert rep.estimate(net)["online"] == pytest.approx(sum(p["online"] for p in parts))
    # a single program is unchanged by being "sequential"
    assert sequential([a]).totals() == Report(a).totals()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("gen") / "gpt2"
    models.make_tiny_gpt2(ckpt, n_layer=1, n_embd=32, n_head=2, vocab_size=300, n_positions=32)
    return private_generation(models.load(ckpt), "Once upon a time", 3, policy="mpcformer",
                              seq_len=16)


@pytest.mark.slow
def test_generation_report_adds_prefill_and_every_token(job):
    pre = job.prefill_program.cost.totals()
    steps = [r.totals() for r in job.step_reports]
    assert len(steps) == 2
    total = job.report.totals()
    for ph in ("online", "offline"):
        assert total[ph]["rounds"] == pre[ph]["rounds"] + sum(s[ph]["rounds"] for s in steps)
        # more than any single program: the old report took the maximum depth
        assert total[ph]["rounds"] > max([pre[ph]["rounds"]] + [s[ph]["rounds"] for s in steps])
    assert job.static_report.to_json()["totals"] == job.report.to_json()["totals"]
    ph = job.phases()
    assert ph["prefill"]["online_rounds"] == pre["online"]["rounds"]
    assert ph["per_token"]["online_rounds"] == steps[0]["online"]["rounds"]
    assert ph["total"]["online"]["rounds"] == total["online"]["rounds"]
    wan = job.report.estimate("wan")["online"]
    per_program = [Report(job.prefill_program.cost.entries).estimate("wan")["online"]] + \
                  [Report(r.entries).estimate("wan")["online"] for r in job.step_reports]
    assert wan == pytest.approx(sum(per_program))
