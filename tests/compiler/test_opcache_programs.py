"""Fewer op programs to compile: elementwise ops run flat and a truncation's shift is traced.

The op executor (compiler/opcache.py) compiles one program per op signature. An elementwise
protocol op (the registry's `elementwise`) runs on flattened operands, so ops of one element
count share a program whatever their shapes; the Beaver truncation's shift is a run-time
argument (`traced_attrs`), so one program serves every shift. Neither may change a result or the
ledger: the traced shift computes what the static one does, bit for bit, and a program whose
truncations differ in shift and shape still meets the plaintext and its static cost.
"""
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler import opcache
from pcformer.compiler.opcache_plan import program_op
from pcformer.runtime import AShare, Context, MPCConfig, encode, x64
from pcformer.runtime.protocols import arith, registry

rng = np.random.default_rng(11)
X = jnp.asarray(rng.uniform(-2, 2, size=(4, 6)), jnp.float32)      # the client's
W = jnp.asarray(rng.uniform(-1, 1, size=(6, 6)), jnp.float32)      # the server's


def two_shapes(x, w):
    """The same 24 elements as [4, 6] and [2, 3, 4]: GeLU on one, softmax on the other (their
    approximations truncate by several shifts)."""
    h = x @ w
    return jax.nn.gelu(h), jax.nn.softmax(h.reshape(2, 3, 4), axis=-1)


def ledger_key(entries):
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


@pytest.mark.parametrize("mode", ["dealer", "local"])
@pytest.mark.parametrize("ideal", [False, True])
def test_a_traced_truncation_shift_computes_what_the_static_one_does(mode, ideal):
    cfg = MPCConfig(trunc_mode=mode, mode="ideal" if ideal else "protocol")
    with x64():
        v = jnp.asarray(encode(rng.uniform(-50, 50, size=(3, 5)), 32, 64))
        r = jnp.asarray(rng.integers(0, 2 ** 63, size=(3, 5), dtype=np.uint64))
        data = jnp.stack([r, v - r])
        key = jax.random.PRNGKey(5)

        def static(f):
            return jax.jit(lambda k, d: arith.truncate(Context(cfg, k), AShare(d), f).data)

        traced = jax.jit(lambda k, d, f: arith.truncate(Context(cfg, k), AShare(d), f).data)
        for f in (3, 12, 16, 29):
            want = np.asarray(static(f)(key, data))
            got = np.asarray(traced(key, data, np.int32(f)))
            np.testing.assert_array_equal(got, want)


def test_program_op_flattens_elementwise_ops_and_drops_traced_attributes():
    prog = pcformer.compile(two_shapes, X, W, owners=(1, 0), policy="exact")
    truncs = [op for op in prog.ir.ops if op.name == "truncate"]
    kinds = {(tuple(op.results[0].shape), op.attrs["shift"]) for op in truncs}
    # the case this test is about: several shapes of 24 elements and several shifts
    assert len({s for s, _ in kinds}) > 1 and len({f for _, f in kinds}) > 1
    entry = registry.lookup("truncate")
    programs = [program_op(op, entry.elementwise, entry.traced_attrs).op for op in truncs
                if op.results[0].size == 24]
    assert len({repr(p) for p in programs}) == 1
    assert programs[0].results[0].shape == (24,) and "shift" not in programs[0].attrs
    # a product is not elementwise: its shapes stay, and so does a mul with a broadcast operand
    dot = next(op for op in prog.ir.ops if op.name in ("dot_general", "dot_general_private"))
    d = registry.lookup(dot.name)
    assert program_op(dot, d.elementwise, d.traced_attrs).op.results[0].shape == \
        dot.results[0].shape
    for op in prog.ir.ops:
        if op.name == "mul" and len({tuple(v.shape) for v in op.operands}) > 1:
            assert not program_op(op, True).flat


@pytest.mark.slow
def test_one_program_per_element_count_keeps_results_and_ledger():
    prog = pcformer.compile(two_shapes, X, W, owners=(1, 0), policy="exact")
    out, rep = prog.run(X, W)
    ref = prog.plaintext(X, W)
    for o, r in zip(out, ref):
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), atol=5e-3)
    assert ledger_key(rep.entries) == ledger_key(prog.cost.entries)
    exe = prog._exe
    used = Counter(sig[1][0] for sig in exe._used)
    steps = [k for k, op in enumerate(prog.ir.ops) if op.name == "truncate"]
    counts = {prog.ir.ops[k].results[0].size for k in steps}
    # one program per element count, or fewer where a count runs as calls of a smaller one
    # (tests/compiler/test_opcache_chunks.py)
    sizes = {exe._chunk_plan().get(k, prog.ir.ops[k].results[0].size) for k in steps}
    assert used["truncate"] == len(sizes) <= len(counts)
    # a second run (fresh randomness) reuses every program and writes the same ledger
    before = len(opcache._TEMPLATES)
    out2, rep2 = prog.run(X, W)
    assert len(opcache._TEMPLATES) == before
    assert ledger_key(rep2.entries) == ledger_key(rep.entries)
    for o, r in zip(out2, ref):
        np.testing.assert_allclose(np.asarray(o), np.asarray(r), atol=5e-3)
