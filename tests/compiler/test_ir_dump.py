"""The IR dump (`Program.ir_text`, what `pcformer run --dump_ir` writes): inputs by their argument
path, constants by value, and a per-op cost column whose bytes add up to the report's totals."""
import re

import jax
import jax.numpy as jnp

import pcformer


def _tiny():
    params = {"params": {"dense": {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}}}

    def f(variables, x):
        d = variables["params"]["dense"]
        return jax.nn.relu(x @ d["kernel"] + d["bias"]) * 0.125

    return pcformer.compile(f, params, jnp.ones((2, 4)), owners=(0, 1), policy="mpcformer")


def test_dump_names_inputs_shows_constants_and_costs_adding_up():
    prog = _tiny()
    plain = str(prog.ir)
    assert "%params/dense/kernel: private0<4x4>" in plain and "%x: private1<2x4>" in plain
    assert re.search(r"dot_general_private\{party=0\} %\d+, %params/dense/kernel", plain)
    assert "const 0.125 : public<>" in plain and re.search(r"mul_public \(local\) %\d+, %\d+=0.125", plain)
    text = prog.ir_text()
    rows = [l for l in text.splitlines() if re.match(r"^\s+\d+\s+\d+\s+\d+\s+\d+\s+\d+ \|  %", l)]
    assert len(rows) == len(prog.ir.protocol_ops())
    cols = [list(map(int, l.split("|")[0].split())) for l in rows]
    tot = prog.cost.totals()
    assert [sum(c[0] for c in cols), sum(c[1] for c in cols)] == tot["online"]["bytes"]
    assert sum(c[3] for c in cols) == sum(tot["offline"]["bytes"])
    assert sum(c[4] for c in cols) == sum(tot["setup"]["bytes"])
    relu = next(c for c, l in zip(cols, rows) if " = relu " in l)
    assert relu[2] > 1                  # a comparison takes several rounds
    assert f"{tot['online']['rounds']} rounds (critical path)" in text
