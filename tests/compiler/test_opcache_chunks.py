"""Chunked elementwise ops: an op of n elements runs as n / s calls of the s-element program.

The op executor (compiler/opcache.py) compiles one program per element count of an elementwise
protocol op; `opcache_plan.chunk_sizes` lets a count run as a few calls of a smaller program
that divides it (softmax's max tree: seven ReLU programs -> two for an exact MiniLM layer). A
chunked op must compute what the whole op does, write the same ledger (the calls' entries merge
into the op's), and give every call fresh masks: a party that sees two calls of identical inputs
must see unrelated messages.
"""
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler import execute
from pcformer.compiler.opcache_plan import ProgramOp, chunk_sizes
from pcformer.compiler import ir

rng = np.random.default_rng(5)


def _flat_op(name: str, n: int, shift=None) -> ProgramOp:
    v = ir.Value(id=0, shape=(n,), dtype="float32", vis=ir.SECRET)
    r = ir.Value(id=1, shape=(n,), dtype="float32", vis=ir.SECRET)
    attrs = {} if shift is None else {"shift": shift}
    return ProgramOp(ir.Op(name, (v,), (r,), attrs), True, ())


def test_the_plan_runs_each_count_as_at_most_max_calls_calls_of_a_divisor():
    levels = [1536 * 2 ** j for j in range(8)]          # a max tree over 128-token rows, and more
    ops = {k: _flat_op("relu", n) for k, n in enumerate(levels)}
    plan = chunk_sizes(ops, max_calls=8)
    assert sorted(set(plan.values())) == [1536, 1536 * 16]        # two programs, not eight
    for k, n in enumerate(levels):
        assert n % plan[k] == 0 and n // plan[k] <= 8
    assert chunk_sizes(ops, max_calls=1) == dict(enumerate(levels))   # 1: no chunking
    # counts that share no divisor each keep their own program
    odd = {0: _flat_op("relu", 2176), 1: _flat_op("relu", 47616)}
    assert chunk_sizes(odd, max_calls=8) == {0: 2176, 1: 47616}


def test_ops_of_another_name_or_attribute_never_share_a_program():
    ops = {0: _flat_op("relu", 64), 1: _flat_op("drelu", 128),
           2: _flat_op("truncate", 16, shift=3), 3: _flat_op("truncate", 64, shift=5)}
    assert chunk_sizes(ops, max_calls=8) == {0: 64, 1: 128, 2: 16, 3: 64}


def row_max(x, w):
    """Softmax-like rows: the max over 16 columns is a tree of four ReLU levels (64, 32, 16, 8
    elements), which chunk into calls of the 8-element program."""
    h = x @ w
    return jnp.max(h, axis=-1), jax.nn.relu(h)


def ledger_key(entries):
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth, e.op_class)
                   for e in entries)


@pytest.mark.parametrize("protocols", ["beaver", "fss"])
def test_a_chunked_op_computes_and_costs_what_the_whole_op_does(protocols):
    x = jnp.asarray(rng.uniform(-2, 2, size=(8, 4)), jnp.float32)
    w = jnp.asarray(rng.uniform(-1, 1, size=(4, 16)), jnp.float32)
    cfg = pcformer.MPCConfig(protocols=protocols)
    runs = {}
    for calls in (1, 8):
        prog = pcformer.compile(row_max, x, w, owners=(1, 0), policy="exact", config=cfg)
        prog._exe.chunk_calls = calls
        out, rep = prog.run(x, w)
        for o, r in zip(out, prog.plaintext(x, w)):
            np.testing.assert_allclose(np.asarray(o), np.asarray(r), atol=2e-3)
        assert ledger_key(rep.entries) == ledger_key(prog.cost.entries)
        assert rep.totals() == prog.cost.totals()
        used = Counter(sig[1][0] for sig in prog._exe._used)
        runs[calls] = (ledger_key(rep.entries), used["relu"])
    assert runs[1][0] == runs[8][0]
    assert runs[8][1] < runs[1][1]     # fewer ReLU programs, the same messages


def same_rows_twice(x, y):
    """A ReLU of 16 secret elements, and one of 64 whose four 16-element chunks are copies."""
    s = x + y
    return jax.nn.relu(s), jax.nn.relu(jnp.tile(s, (4, 1)))


def test_calls_of_one_chunked_op_use_fresh_masks():
    """Party 0's view of five calls of one program on identical inputs (the small op and the
    four chunks of the large one): a mask reused by two calls would make their messages equal
    where the inputs are."""
    x = jnp.asarray(rng.uniform(-2, 2, size=(2, 8)), jnp.float32)     # the client's
    y = jnp.asarray(rng.uniform(-2, 2, size=(2, 8)), jnp.float32)     # the server's
    prog = pcformer.compile(same_rows_twice, x, y, owners=(1, 0), policy=None, reveal=False)
    plan = prog._exe._chunk_plan()
    assert sorted(plan.values()) == [16, 16]          # the large ReLU runs as 4 calls
    prog._exe.audit = True
    prog.run(x, y)
    log = prog._exe.audit_log          # the ReLUs' messages only: the input shares are seeded
    assert len(log) % 5 == 0
    per = len(log) // 5
    calls = [np.concatenate([np.asarray(a).ravel()
                             for a in execute.received(log[c * per:(c + 1) * per], 0)])
             for c in range(5)]
    assert len(calls[0]) >= 16
    for a in range(5):
        for b in range(a + 1, 5):
            assert np.mean(calls[a] == calls[b]) < 0.1, (a, b)
