"""Lowering decisions, read off the IR without running anything: locality, protocol choice,
lazy truncation, embedding lookup, control flow and the error messages."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler.lower import LoweringError, LOWER_RULES

X = jnp.ones((2, 4), jnp.float32)
W = jnp.ones((4, 3), jnp.float32)


def _ops(prog, kind=None):
    return [op.name for op in prog.ir.ops if kind is None or op.kind == kind]


def test_single_party_work_stays_local_and_free():
    # exp is heavy, but the server computes it on its own data in plaintext: no protocol
    f = lambda w: jnp.exp(w) @ w.T
    prog = pcformer.compile(f, W, owners=0, policy=None, config=pcformer.MPCConfig(reveal_to=0))
    assert _ops(prog, "protocol") == []
    assert all(op.party in (0, None) for op in prog.ir.ops if op.kind == "local")
    assert prog.cost.totals()["online"]["steps"] == 0
    # revealed to the client instead: the server's result is shared, then opened to it
    assert _ops(pcformer.compile(f, W, owners=0, policy=None), "protocol") == ["share", "reveal"]


def test_cheapest_protocol_per_visibility():
    prog = pcformer.compile(lambda x, w: x @ w, X, W, owners=(1, 0), policy=None)
    protos = _ops(prog, "protocol")
    # the client's input is shared, the server's weight stays private to it
    assert protos == ["share", "dot_general_private", "truncate", "reveal"]
    def sq_fn(x, w):
        y = x @ w
        return y * y
    sq = pcformer.compile(sq_fn, X, W, owners=(1, 0), policy=None)
    assert "square" in _ops(sq) and "mul" not in _ops(sq)
    def both_fn(x, w):
        y = x @ w
        return y @ y.T
    both = pcformer.compile(both_fn, X, W, owners=(1, 0), policy=None)
    assert "dot_general" in _ops(both, "protocol")
    pub = pcformer.compile(lambda x, w: (x @ w) * 0.5 + 1.0, X, W, owners=(1, 0), policy=None)
    assert "mul_public" in _ops(pub, "share_local")
    assert "add" in _ops(pub, "share_local")


def test_client_values_are_shared_not_masked_once():
    # a client mask times a secret: shared and multiplied with a Beaver triple, because the
    # once-per-deployment mask of mul_private would leak differences of per-run values
    f = lambda x, w, m: (x @ w) * m
    prog = pcformer.compile(f, X, W, jnp.ones((2, 3)), owners=(1, 0, 1), policy=None)
    protos = _ops(prog, "protocol")
    assert "mul" in protos and "mul_private" not in protos


def test_lazy_truncation_sums_and_integer_constants():
    f = lambda x, w: x @ w + x @ w * 3.0 + (x @ w) * 2
    prog = pcformer.compile(f, X, W, owners=(1, 0), policy=None)
    assert _ops(prog, "protocol").count("truncate") == 1   # one truncation, before the output
    g = lambda x, w: (x @ w) * 0.5
    prog = pcformer.compile(g, X, W, owners=(1, 0), policy=None)
    assert _ops(prog, "protocol").count("truncate") == 2  # product at 2f feeds another product
    h = lambda x, w: ((x @ w) ** 3)
    prog = pcformer.compile(h, X, W, owners=(1, 0), policy=None)
    assert [n for n in _ops(prog, "protocol") if n in ("square", "mul")] == ["square", "mul"]


def test_embedding_is_client_one_hot_then_private_product():
    table = jnp.ones((10, 4), jnp.float32)
    ids = jnp.array([[1, 2, 3]], jnp.int32)
    prog = pcformer.compile(lambda t, i: jnp.take(t, i, axis=0), table, ids, owners=(0, 1),
                            policy=None)
    one_hot = [op for op in prog.ir.ops if op.name == "one_hot"]
    assert len(one_hot) == 1 and one_hot[0].kind == "local" and one_hot[0].party == 1
    protos = _ops(prog, "protocol")
    assert protos[:2] == ["share", "dot_general_private"] and "gather" not in protos


def test_cond_public_constant_and_secret_predicate():
    def f(x, w):
        y = x @ w
        return jax.lax.cond(True, lambda v: v * 2.0, lambda v: v * v, y)
    prog = pcformer.compile(f, X, W, owners=(1, 0), policy=None)
    assert "square" not in _ops(prog)              # only the taken branch is lowered

    def g(x, w):
        y = x @ w
        return jax.lax.cond(y.sum() > 0, lambda v: v + 1.0, lambda v: v - 1.0, y)
    prog = pcformer.compile(g, X, W, owners=(1, 0), policy=None)
    protos = _ops(prog, "protocol")
    assert "drelu" in protos and "mul" in protos   # both branches + a select by the secret bit


def _raises(fn, *args, owners, match):
    with pytest.raises(LoweringError, match=match) as info:
        pcformer.compile(fn, *args, owners=owners, policy=None)
    return str(info.value)


def test_errors_name_primitive_line_and_scope():
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return jnp.nextafter(nn.Dense(3, name="proj")(x), 1.0)

    model = Block()
    params = model.init(jax.random.PRNGKey(0), X)
    msg = _raises(model.apply, params, X, owners=(0, 1), match="primitive 'nextafter' at ")
    assert "test_lower.py:" in msg


def test_error_secret_control_flow_gather_and_heavy_ops():
    def loop(x, w):
        return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * 2.0),
                                  (0, x @ w))[1]
    _raises(loop, X, W, owners=(1, 0), match="secret-dependent control flow")

    def secret_gather(x, w):
        i = jnp.argmax(x @ w, axis=1)
        return jnp.take(w, i, axis=0)
    _raises(secret_gather, X, W, owners=(1, 0), match="gather with secret indices")
    _raises(lambda x, w: jnp.exp(x @ w), X, W, owners=(1, 0),
            match="'exp' on a secret: the policy does not approximate it")
    _raises(lambda x, w: x / (x @ w).sum(), X, W, owners=(1, 0), match="division by a secret")
    ints = jnp.ones((2, 3), jnp.int32)
    _raises(lambda a, b: (a + b) // 2, ints, ints, owners=(1, 0),
            match="secret integer division")


def test_public_loop_is_local():
    def f(x, w):
        n = jax.lax.fori_loop(0, 3, lambda i, c: c * 2.0, jnp.ones(3))
        return x @ w + n
    prog = pcformer.compile(f, X, W, owners=(1, 0), policy=None)
    assert any(op.kind == "local" and op.name in ("while", "const") for op in prog.ir.ops)


def test_owners_prefix_and_printer():
    class Lin(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3, name="query")(x)

    model = Lin()
    params = model.init(jax.random.PRNGKey(0), X)
    prog = pcformer.compile(model.apply, params, X, owners=(0, 1), policy=None)
    text = str(prog.ir)
    line = next(l for l in text.splitlines() if "dot_general_private" in l)
    assert "secret<2x4 @f0>" in line or "secret<2x4 @f16>" in line
    assert "-> secret<2x3 @f32>" in line and line.rstrip().endswith("# query")
    assert all(v.vis.is_private and v.vis.party == 0 for v in prog.ir.inputs[:2])
    with pytest.raises(LoweringError, match="owner must be"):
        pcformer.compile(model.apply, params, X, owners=(2, 1), policy=None)


def test_registry_covers_the_documented_primitives():
    for name in ("add", "sub", "mul", "dot_general", "integer_pow", "div", "max", "min",
                 "select_n", "gather", "reduce_sum", "reduce_max", "argmax", "concatenate",
                 "pad", "dynamic_slice", "cumsum", "clamp", "cond", "lt", "gt", "ge", "le",
                 "reshape", "transpose", "broadcast_in_dim", "convert_element_type"):
        assert name in LOWER_RULES, name


def test_scaled_square_is_a_square():
    # MPCFormer's Quad GeLU traces as (0.125 * h) * h: lowered as 0.125 * square(h)
    def f(x, w):
        h = x @ w
        return (0.125 * h) * h + 0.25 * h
    prog = pcformer.compile(f, X, W, owners=(1, 0), policy=None)
    protos = _ops(prog, "protocol")
    assert "square" in protos and "mul" not in protos


def test_independent_comparisons_are_batched():
    def f(x, w):
        h = x @ w
        return sum(((h >= 2.0 ** k).astype(jnp.float32) * k for k in range(6)), jnp.zeros(()))
    prog = pcformer.compile(f, X, W, owners=(1, 0), policy=None)
    drelus = [op for op in prog.ir.ops if op.name == "drelu"]
    assert len(drelus) == 1 and drelus[0].operands[0].shape == (6 * 2 * 3,)
