"""The operator class travels as structured metadata: set once at lowering (compiler/op_classes.py)
from the rewrite marker (compiler/rewrite.py owns its format) and the module path, carried by
ir.Op, the runtime ledger and the static cost alike, and read by the plots without parsing."""
from collections import Counter

import jax
import numpy as np
import pytest

import pcformer
from pcformer import MPCConfig
from pcformer.compiler import rewrite
from pcformer.compiler.op_classes import op_class_of
from pcformer.plots import group_online, op_class


def full_key(entries):
    """Entries as a multiset, operator class included (the measured order within a depth may
    differ; `detail` is informational and nests differently in the two ledgers)."""
    return Counter((e.op, e.scope, e.op_class, e.phase, tuple(e.bits), e.depth) for e in entries)


# ----------------------------------------------------------------------------- the marker
def test_the_marker_reads_back_what_the_rewrite_writes():
    for rule in rewrite.RULES.values():
        path = "encoder/layer_0/" + rewrite.marker(rule.op_class, "m1")
        assert rewrite.approximation_of(path) == (rule.op_class, "m1")
    # innermost wins: an approximation's helpers may push components below its marker
    assert rewrite.approximation_of("a/softmax[2quad]/reciprocal[newton]") == ("reciprocal", "newton")
    assert rewrite.approximation_of("a/softmax[2quad]/helper") == ("softmax", "2quad")


@pytest.mark.parametrize("scope", ["encoder/softmax", "encoder/softmax_proj/dense", "gelu_gate",
                                   "a/notaclass[quad]", "a/softmax[2quad]x", ""])
def test_module_names_are_not_markers(scope):
    assert rewrite.approximation_of(scope) is None


def test_the_lowering_rule():
    assert op_class_of("encoder/layer_0/intermediate/gelu[quad]", "square") == "gelu"
    assert op_class_of("embeddings/LayerNorm/rsqrt[newton]", "mul") == "rsqrt"
    assert op_class_of("embeddings/LayerNorm", "truncate") == "layernorm"
    assert op_class_of("h_1/ln_2", "mul") == "layernorm"
    assert op_class_of("ln_f", "mul") == "layernorm"
    assert op_class_of("layers_0/input_layernorm", "mul") == "layernorm"
    assert op_class_of("h_1/ln_extra", "mul") == ""
    assert op_class_of("encoder/softmax_proj", "dot_general_private") == "linear"
    assert op_class_of("encoder/softmax_proj", "truncate") == ""


# ----------------------------------------------------------------------------- tiny BERT
def _tiny_bert_program(tiny_bert):
    fn, params, ids, mask = tiny_bert
    return pcformer.compile(fn, params, ids, mask, owners=(0, 1, 1), policy="mpcformer",
                            config=MPCConfig(seed=0))


def _check_classes(entries):
    """Every step inside a softmax/GeLU approximation carries its class, and only those do."""
    for e in entries:
        found = rewrite.approximation_of(e.scope)
        assert (e.op_class == found[0]) if found else (e.op_class in ("", "linear", "layernorm"))
    classes = {e.op_class for e in entries}
    assert {"softmax", "gelu", "rsqrt", "layernorm", "linear"} <= classes
    panels = group_online(entries, op_class)
    assert set(panels) == {"linear", "softmax", "gelu", "layernorm", "other"}
    assert all(g["bytes"] > 0 for g in panels.values())


def test_tiny_bert_static_cost_carries_the_classes(tiny_bert):
    prog = _tiny_bert_program(tiny_bert)
    assert {op.op_class for op in prog.ir.protocol_ops()} >= {"softmax", "gelu", "linear"}
    _check_classes(prog.cost.entries)


@pytest.mark.slow
def test_tiny_bert_ledger_carries_the_classes_like_the_static_cost(tiny_bert):
    fn, params, ids, mask = tiny_bert
    prog = _tiny_bert_program(tiny_bert)
    _, report = prog.run(params, ids, mask)
    _check_classes(report.entries)
    assert full_key(report.entries) == full_key(prog.cost.entries)


# ----------------------------------------------------------------------------- renamed modules
def _renamed_head():
    """A dense layer named `softmax_proj`, a real softmax, a dense layer named `gelu_gate`."""
    import flax.linen as nn

    class Head(nn.Module):
        @nn.compact
        def __call__(self, x):
            scores = nn.Dense(4, name="softmax_proj")(x)
            return nn.Dense(3, name="gelu_gate")(jax.nn.softmax(scores, axis=-1))

    head = Head()
    x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    params = head.init(jax.random.PRNGKey(0), x)["params"]
    prog = pcformer.compile(lambda p, v: head.apply({"params": p}, v), params, x, owners=(0, 1),
                            policy="mpcformer", config=MPCConfig(seed=0))
    return prog, params, x


def _check_renamed(entries):
    named = [e for e in entries if e.scope.split("/")[0] in ("softmax_proj", "gelu_gate")]
    assert named and {e.op_class for e in named} <= {"linear", ""}
    assert {op_class(e) for e in named} == {"linear", "other"}
    real = [e for e in entries if e.op_class == "softmax"]
    assert real and all(e.scope == "softmax[2quad]" for e in real)


def test_a_module_named_softmax_is_not_a_softmax():
    """The bug of the old scope parse: a dense layer named `softmax_proj` counted as softmax."""
    prog, _, _ = _renamed_head()
    _check_renamed(prog.cost.entries)


@pytest.mark.slow
def test_a_module_named_softmax_is_not_a_softmax_in_the_measured_ledger():
    prog, params, x = _renamed_head()
    _, report = prog.run(params, x)
    _check_renamed(report.entries)
    assert full_key(report.entries) == full_key(prog.cost.entries)
