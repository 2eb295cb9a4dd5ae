"""Per-primitive execution: the MPC result equals the rewritten plaintext program within the
fixed-point tolerance, and the static cost equals the measured ledger message by message.

Tolerance (documented in docs/compiler.md): with f = 16 fraction bits, encoding rounds to 2^-17,
each truncation adds at most 1 LSB (2^-16); for inputs of magnitude <= 4 and a handful of
products per output, |mpc - plaintext| <= 1e-3 absolutely.
"""
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer

TOL = 1e-3
rng = np.random.default_rng(0)
X = jnp.asarray(rng.uniform(-2, 2, size=(2, 4)), jnp.float32)      # the client's
W = jnp.asarray(rng.uniform(-1, 1, size=(4, 4)), jnp.float32)      # the server's


def ledger_key(entries):
    return Counter((e.op, e.scope, e.op_class, e.phase, tuple(e.bits), e.depth) for e in entries)


def check(fn, *args, owners=(1, 0), tol=TOL, policy=None, config=pcformer.MPCConfig()):
    prog = pcformer.compile(fn, *args, owners=owners, policy=policy, config=config)
    outs, report = prog.run(*args)
    ref = prog.plaintext(*args)
    for o, r in zip(jax.tree_util.tree_leaves(outs), jax.tree_util.tree_leaves(ref)):
        assert o.shape == r.shape
        np.testing.assert_allclose(np.asarray(o, np.float64), np.asarray(r, np.float64),
                                   atol=tol, rtol=0)
    assert ledger_key(prog.cost.entries) == ledger_key(report.entries)
    assert prog.cost.to_json()["totals"] == report.to_json()["totals"]
    return prog, outs, report


def _h(x, w):
    return x @ w                      # a secret at scale 2f to start from


PROGRAMS = {
    "add_sub_neg": lambda x, w: -(_h(x, w) + x) - (x - 1.5),
    "mul_private": lambda x, w: x * w[:2],
    "mul_secret": lambda x, w: _h(x, w) * (x + 1.0),
    "square_integer_pow": lambda x, w: _h(x, w) ** 2 + x ** 3,
    "scaled_square": lambda x, w: (0.125 * _h(x, w)) * _h(x, w) + 0.5,
    "div_by_public": lambda x, w: _h(x, w) / 4.0 + x / w[:2],
    "dot_general_secret": lambda x, w: _h(x, w) @ _h(x, w).T,
    "reduce_sum_cumsum": lambda x, w: (_h(x, w).sum(axis=0), jnp.cumsum(x, axis=1)),
    "structural": lambda x, w: jnp.concatenate(
        [_h(x, w).T.reshape(2, 4)[:, ::-1], jnp.pad(x, ((0, 0), (1, 1)), constant_values=0.5)[:, 1:5],
         w[:2]], 0),
    "broadcast_expand": lambda x, w: (x[:, None, :] * jnp.ones((1, 3, 1))).sum(1) + w[0],
    "dynamic_slice_public": lambda x, w: jax.lax.dynamic_slice(_h(x, w), (1, 1), (1, 2)),
    "select_public_pred": lambda x, w: jnp.where(jnp.arange(4) < 2, _h(x, w), x),
    "gather_public_idx": lambda x, w: _h(x, w)[:, jnp.array([3, 0])],
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
@pytest.mark.slow
def test_primitive_matches_plaintext_and_static_cost(name):
    check(PROGRAMS[name], X, W)


def test_embedding_lookup():
    table = jnp.asarray(rng.normal(size=(12, 4)), jnp.float32)
    ids = jnp.array([[0, 5, 11]], jnp.int32)
    _, outs, rep = check(lambda t, i: jnp.take(t, i, axis=0) * 2.0, table, ids, owners=(0, 1))
    np.testing.assert_allclose(outs, np.asarray(table)[np.asarray(ids)] * 2, atol=TOL)
    assert rep.totals()["setup"]["bytes"][0] == 12 * 4 * 8   # the table's mask, once


@pytest.mark.slow
def test_relu_comparisons_and_secret_cond():
    # comparisons are the costliest circuits to compile: one program covers relu (max with 0),
    # a secret comparison used as a 0/1 value, and a cond on a secret predicate (a select)
    def f(x, w):
        h = _h(x, w)
        c = jax.lax.cond(h.sum() > 0, lambda v: v * 2.0, lambda v: v - 1.0, x)
        return jnp.maximum(h, 0.0), (h[0] > x[1]).astype(jnp.float32), c
    _, outs, _ = check(f, X, W)
    assert set(np.unique(np.asarray(outs[1]))) <= {0.0, 1.0}


@pytest.mark.slow
def test_max_and_argmax_tree():
    v = jnp.asarray([[0.5, -1.0, 2.0], [1.5, 1.5, -0.5]], jnp.float32)
    _, outs, _ = check(lambda a, w: (jnp.max(a * w[0, 0], axis=1), jnp.argmax(a, axis=1)),
                       v, W)
    assert list(np.asarray(outs[1])) == list(np.argmax(np.asarray(v), axis=1))


@pytest.mark.parametrize("executor", ["op", "program"])
@pytest.mark.slow
def test_repeated_runs_do_not_retrace(executor):
    # shapes no other test uses: compiled op programs are shared within the process
    x = jnp.asarray(rng.uniform(-2, 2, size=(3, 7)), jnp.float32)
    w = jnp.asarray(rng.uniform(-1, 1, size=(7, 5)), jnp.float32)
    prog = pcformer.compile(lambda x, w: _h(x, w) * 0.5, x, w, owners=(1, 0), policy=None,
                            executor=executor)
    _, r1 = prog.run(x, w)
    traces = prog.trace_count
    # "program": one trace; "op": one per distinct protocol-op signature
    assert traces == 1 if executor == "program" else 1 <= traces <= len(prog.ir.protocol_ops())
    _, r2 = prog.run(x * 0.5, w)
    assert prog.trace_count == traces
    assert r1.time["compile_s"] > 0 and r2.time["compile_s"] == 0.0
    assert ledger_key(r1.entries) == ledger_key(r2.entries)


@pytest.mark.slow
def test_op_executor_matches_the_whole_program_jit():
    """The op-cached executor writes the same ledger and computes what ONE jit computes."""
    fn = lambda x, w: jax.nn.relu(_h(x, w)) * _h(x, w)
    outs = {}
    for executor in ("op", "program"):
        prog = pcformer.compile(fn, X, W, owners=(1, 0), policy=None, executor=executor)
        out, rep = prog.run(X, W)
        outs[executor] = (np.asarray(out), ledger_key(rep.entries), ledger_key(prog.cost.entries))
    assert outs["op"][1] == outs["program"][1] == outs["op"][2]
    np.testing.assert_allclose(outs["op"][0], outs["program"][0], atol=2e-3)


def test_ring32_config():
    cfg = pcformer.MPCConfig(ring_bits=32, frac_bits=12)
    check(lambda x, w: _h(x, w) * 0.5 + x, X, W, config=cfg, tol=1e-2)


def test_overflow_check_reports_scope():
    big = lambda x, w: (_h(x, w) * float(2 ** 40)) * 0.5
    cfg = pcformer.MPCConfig(check_overflow=True)
    prog = pcformer.compile(big, X, W, owners=(1, 0), policy=None, config=cfg)
    with pytest.warns(RuntimeWarning, match="fixed-point overflow"):
        _, rep = prog.run(X, W)
    assert rep.overflow is not None and rep.overflow.max_abs >= rep.overflow.bound
    assert "test_compile.py" in rep.overflow.where
    ok = pcformer.compile(lambda x, w: _h(x, w), X, W, owners=(1, 0), policy=None, config=cfg)
    _, rep = ok.run(X, W)
    assert rep.overflow is None
    # the oracle is outside the ledger: same messages with and without the check
    plain = pcformer.compile(lambda x, w: _h(x, w), X, W, owners=(1, 0), policy=None)
    assert ledger_key(plain.run(X, W)[1].entries) == ledger_key(rep.entries)


def test_batched_comparisons_match():
    def f(x, w):
        h = x @ w
        return sum(((h >= 0.5 * k).astype(jnp.float32) * (k + 1) for k in range(-2, 3)),
                   jnp.zeros(()))
    check(f, X, W)
