"""The ledger, counted at the message door, equals the static cost rules of runtime/costs.py.

Programs are only traced (jax.make_jaxpr): the ledger is recorded at trace time, so no compile is
needed; one program is also run under jit to check that jit records the same entries.
"""
import collections

import jax
import numpy as np
import pytest

from pcformer.runtime import AShare, BShare, Context, Ledger, MPCConfig, costs, encode, x64
from pcformer.runtime import protocols as P


def _trace(cfg, body, *args):
    """Trace body(ctx, *args) and return the ledger entries recorded."""
    holder = {}

    def fn(key, *a):
        ctx = Context(cfg, key)
        holder["ctx"] = ctx
        return jax.tree_util.tree_leaves(body(ctx, *a))

    with x64():
        jax.make_jaxpr(fn)(jax.random.PRNGKey(0), *args)
    return holder["ctx"].ledger.entries


def _ms(entries):
    return collections.Counter((e.op, e.phase, tuple(e.bits), e.depth) for e in entries)


def _share(ctx, shape, owner=0, depth=0):
    s = P.share(ctx, np.zeros(shape, np.uint64) if ctx.ring_bits == 64
                else np.zeros(shape, np.uint32), owner)
    return AShare(s.data, depth)


def _z(ctx, shape):
    return np.zeros(shape, np.uint64 if ctx.ring_bits == 64 else np.uint32)


X, Y = (3, 4), (4, 5)
CASES = [
    # (op, protocol call on shares at input depth d, shapes for the rule, attrs for the rule)
    ("reveal", lambda c, d: P.reveal(c, _share(c, X, 0, d)), (X,), {}),
    ("reveal", lambda c, d: P.reveal(c, _share(c, X, 0, d), to=0), (X,), {"to": 0}),
    ("add", lambda c, d: P.add(c, _share(c, X, 0, d), _share(c, X, 1)), (X, X), {}),
    ("mul", lambda c, d: P.mul(c, _share(c, X, 0, d), _share(c, X, 1)), (X, X), {}),
    ("square", lambda c, d: P.square(c, _share(c, X, 0, d)), (X,), {}),
    ("dot_general", lambda c, d: P.dot_general(c, _share(c, X, 0, d), _share(c, Y, 1)), (X, Y),
     {}),
    ("dot_general", lambda c, d: P.dot_general(c, _share(c, (2, 3, 4), 0, d),
                                               _share(c, (2, 5, 4), 1),
                                               (((2,), (2,)), ((0,), (0,)))),
     ((2, 3, 4), (2, 5, 4)), {"dimension_numbers": (((2,), (2,)), ((0,), (0,)))}),
    ("dot_general_private", lambda c, d: P.dot_general_private(
        c, _share(c, X, 0, d), _z(c, Y), party=0), (X, Y), {"party": 0}),
    ("dot_general_private", lambda c, d: P.dot_general_private(
        c, _share(c, Y, 0, d), _z(c, X), party=1, w_on_left=True), (Y, X),
     {"party": 1, "w_on_left": True}),
    ("mul_private", lambda c, d: P.mul_private(c, _share(c, X, 0, d), _z(c, X),
                                               party=1), (X, X), {"party": 1}),
    ("truncate", lambda c, d: P.truncate(c, _share(c, X, 0, d)), (X,), {}),
    ("truncate", lambda c, d: P.truncate(c, _share(c, X, 0, d), mode="local"), (X,),
     {"mode": "local"}),
    ("a2b", lambda c, d: P.a2b(c, _share(c, X, 0, d)), (X,), {}),
    ("msb", lambda c, d: P.msb(c, _share(c, X, 0, d)), (X,), {}),
    ("b2a", lambda c, d: P.b2a(c, BShare(_share(c, X, 0, d).data & 1, d, 1)), (X,),
     {}),
    ("and", lambda c, d: P.and_(c, BShare(_share(c, X, 0, d).data, d, c.ring_bits),
                                BShare(_share(c, X).data, 0, c.ring_bits)), (X, X), {}),
    ("drelu", lambda c, d: P.drelu(c, _share(c, X, 0, d)), (X,), {}),
    ("relu", lambda c, d: P.relu(c, _share(c, X, 0, d)), (X,), {}),
    ("less", lambda c, d: P.less(c, _share(c, X, 0, d), _share(c, X, 1)), (X, X), {}),
    ("less_public", lambda c, d: P.less_public(c, _share(c, X, 0, d), 5), (X,), {}),
    ("select", lambda c, d: P.select(c, _share(c, X, 0, d), _share(c, X, 1), _share(c, X)),
     (X, X, X), {}),
    ("max", lambda c, d: P.max(c, _share(c, (3, 7), 0, d), axis=1), ((3, 7),), {"axis": 1}),
    ("max", lambda c, d: P.max(c, _share(c, (5, 2), 0, d), axis=0), ((5, 2),), {"axis": 0}),
    ("argmax", lambda c, d: P.argmax(c, _share(c, (2, 6), 0, d)), ((2, 6),), {}),
    ("argmax", lambda c, d: P.argmax(c, _share(c, (2, 5), 0, d)), ((2, 5),), {}),
]


@pytest.mark.parametrize("cfg", [MPCConfig(), MPCConfig(ring_bits=32, frac_bits=12)],
                         ids=["l64", "l32"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.slow
def test_each_op_ledger_equals_cost_rule(cfg, case):
    op, call, shapes, attrs = case
    d = 2  # inputs available at depth 2: rule depths are offsets from it
    entries = _trace(cfg, lambda ctx: call(ctx, d))
    want = costs.place(op, costs.COSTS[op](*shapes, config=cfg, **attrs), d)
    assert _ms(entries) == collections.Counter(want)
    assert all(e.op == op for e in entries)


def test_composed_program_matches_rules_and_totals():
    """One private matmul, one truncation, one ReLU, one mul: messages, bytes and both rounds."""
    cfg = MPCConfig()
    x = encode(np.ones((2, 4)))
    w = encode(np.ones((4, 3)))

    def body(ctx, x, w):
        sx = P.share(ctx, x, 1)
        h = P.truncate(ctx, P.dot_general_private(ctx, sx, w, party=0))
        r = P.relu(ctx, h)
        return P.reveal(ctx, P.mul(ctx, r, h), to=1)

    entries = _trace(cfg, body, x, w)
    want = []
    d = 0
    for op, shapes, attrs in [("dot_general_private", ((2, 4), (4, 3)), {"party": 0}),
                              ("truncate", ((2, 3),), {}), ("relu", ((2, 3),), {}),
                              ("mul", ((2, 3), (2, 3)), {}), ("reveal", ((2, 3),), {"to": 1})]:
        msgs = costs.COSTS[op](*shapes, config=cfg, **attrs)
        want += costs.place(op, msgs, d)
        d += costs.rounds(msgs)
    assert _ms(entries) == collections.Counter(want)
    t = Ledger(entries).totals()
    l, n_o = 64, 6
    # online bits per party, by formula: E (8l from party 1), truncate n*l, relu: msb
    # (2nl + 5*4nl + 2nl) + b2a n + mul 2nl, final mul 2nl, reveal to 1: n*l from party 0
    msb_bits = 2 * n_o * l + 5 * 4 * n_o * l + 2 * n_o * l
    p0 = 0 + n_o * l + msb_bits + n_o + 2 * n_o * l + 2 * n_o * l + n_o * l
    p1 = 8 * l + n_o * l + msb_bits + n_o + 2 * n_o * l + 2 * n_o * l
    assert t["online"]["bits"] == (p0, p1)
    assert t["online"]["bytes"] == (sum(-(-e.bits[0] // 8) for e in entries if e.phase == "online"),
                                    sum(-(-e.bits[1] // 8) for e in entries if e.phase == "online"))
    assert t["online"]["rounds"] == 1 + 1 + (7 + 1 + 1) + 1 + 1 == d
    assert t["online"]["steps"] == 1 + 1 + (7 + 1 + 1) + 1 + 1
    assert t["setup"]["bits"] == (12 * l, 0) and t["setup"]["rounds"] == 1
    assert t["offline"]["rounds"] == 1 and t["offline"]["bits"][0] == 0


def test_two_independent_muls_cost_one_round():
    cfg = MPCConfig()

    def body(ctx):
        a, b, c = (_share(ctx, (4,), i % 2) for i in range(3))
        return P.add(ctx, P.mul(ctx, a, b), P.mul(ctx, b, c))

    t = Ledger(_trace(cfg, body)).totals()["online"]
    assert t["rounds"] == 1 and t["steps"] == 2


def test_labels_scope_and_jit_records_same():
    cfg = MPCConfig()

    def body(ctx):
        a = _share(ctx, (3,))
        with ctx.scope("encoder/layer_0"), ctx.op("gelu"):
            r = P.truncate(ctx, P.square(ctx, a))
        return P.mul(ctx, r, a)

    entries = _trace(cfg, body)
    relu_e = [e for e in entries if e.op == "gelu"]
    assert relu_e and all(e.scope == "encoder/layer_0" for e in relu_e)
    assert {e.detail for e in relu_e} == {"gelu/square", "gelu/truncate"}
    assert [e.op for e in entries if e.scope == ""] and all(
        e.op == "mul" and e.detail == "mul" for e in entries if e.scope == "")
    got = {}

    def fn(key):
        ctx = Context(cfg, key)
        out = body(ctx)
        got["e"] = ctx.ledger.entries
        return out.data

    with x64():
        jax.jit(fn)(jax.random.PRNGKey(0))
    assert got["e"] == entries


def test_the_operator_class_travels_with_the_scope():
    """`ctx.scope(path, op_class)`: the ledger records the innermost class given, "" outside."""
    def body(ctx):
        a = _share(ctx, (3,))
        with ctx.scope("encoder/layer_0/softmax[2quad]", "softmax"), ctx.op("softmax"):
            r = P.square(ctx, a)
            with ctx.scope("inner"):                     # a classless scope keeps the class
                r = P.truncate(ctx, r)
            with ctx.scope("recip", "reciprocal"):       # an inner class wins
                r = P.mul(ctx, r, a)
        return P.mul(ctx, r, a)

    entries = _trace(MPCConfig(), body)
    got = {(e.detail, e.scope, e.op_class) for e in entries if e.phase == "online"}
    assert got == {("softmax/square", "encoder/layer_0/softmax[2quad]", "softmax"),
                   ("softmax/truncate", "encoder/layer_0/softmax[2quad]/inner", "softmax"),
                   ("softmax/mul", "encoder/layer_0/softmax[2quad]/recip", "reciprocal"),
                   ("mul", "", "")}
