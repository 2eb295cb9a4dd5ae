"""Trace stage: pytrees, inlining of call primitives, kept source lines and module paths."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.compiler import compat
from pcformer.compiler import trace as T


def _prims(traced):
    return [e.primitive.name for e in traced.eqns]


@jax.custom_vjp
def _cube(x):
    return x * x * x


_cube.defvjp(lambda x: (x * x * x, x), lambda x, g: (3 * x * x * g,))


def test_pytrees_and_evaluation():
    def fn(tree, y):
        return {"s": tree["a"] * 2.0 + tree["b"][0], "t": (y.sum(), y @ y.T)}

    args = ({"a": jnp.ones((2, 3)), "b": [jnp.arange(3.0)]}, jnp.ones((2, 4)))
    tr = T.trace(fn, *args)
    assert tr.in_tree == jax.tree_util.tree_structure(args)
    assert [a.shape for a in tr.in_avals] == [(2, 3), (3,), (2, 4)]
    assert [a.shape for a in tr.out_avals] == [(2, 3), (), (2, 2)]
    out, ref = tr(*args), fn(*args)
    assert jax.tree_util.tree_structure(out) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(a, b)
    # shape-only example arguments work too
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
    assert T.trace(fn, *spec).in_avals == tr.in_avals


def test_call_primitives_are_inlined():
    @jax.jit
    def inner(x):
        return jax.nn.relu(x) + 1.0  # relu is a custom_jvp function

    def fn(x):
        y = inner(x)
        y = jax.checkpoint(lambda z: jnp.sin(z) * 2.0)(y)
        y = _cube(y)
        return jax.jit(lambda z: z - 1.0)(y)

    raw = jax.make_jaxpr(fn)(jnp.ones(3))
    raw_prims = {e.primitive.name for e in raw.jaxpr.eqns}
    assert raw_prims & compat.CALL_PRIMITIVES  # the test really exercises call primitives
    tr = T.trace(fn, jnp.ones(3))
    assert not set(_prims(tr)) & compat.CALL_PRIMITIVES
    assert {"max", "sin", "mul", "sub"} <= set(_prims(tr))
    x = jnp.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(tr(x), fn(x), rtol=1e-6)


def test_control_flow_is_kept():
    def fn(x):
        return jax.lax.cond(x.sum() > 0, lambda z: z * 2.0, lambda z: z - 1.0, x)

    tr = T.trace(fn, jnp.ones(3))
    assert "cond" in _prims(tr)
    np.testing.assert_allclose(tr(-jnp.ones(3)), fn(-jnp.ones(3)))


class _Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.Dense(4, name="query")(x)
        h = jax.jit(lambda z: z * 3.0)(h)  # inlined: the outer module path must stay a prefix
        return nn.LayerNorm(name="ln")(h)


class _Model(nn.Module):
    @nn.compact
    def __call__(self, x):
        return _Block(name="layer_0")(x)


def test_name_stacks_survive_inlining():
    x = jnp.ones((2, 4))
    m = _Model()
    params = m.init(jax.random.PRNGKey(0), x)
    tr = T.trace(m.apply, params, x)
    assert tr.root == "_Model"
    scopes = [(e.primitive.name, T.scope_of(e, tr.root)) for e in tr.eqns]
    assert ("dot_general", "layer_0/query") in scopes
    assert ("rsqrt", "layer_0/ln") in scopes
    # the jitted multiply sits in layer_0 (outer stack kept as prefix of the inlined eqn)
    muls = [e for e in tr.eqns if e.primitive.name == "mul"
            and any(compat.is_literal(v) and float(v.val) == 3.0 for v in e.invars)]
    assert len(muls) == 1 and T.scope_of(muls[0], tr.root) == "layer_0"
    np.testing.assert_allclose(tr(params, x), m.apply(params, x), rtol=1e-6)


def test_where_points_at_user_source():
    x = jnp.ones((2, 4))
    m = _Model()
    params = m.init(jax.random.PRNGKey(0), x)
    tr = T.trace(m.apply, params, x)
    dot = next(e for e in tr.eqns if e.primitive.name == "dot_general")
    loc = T.where(dot, tr.root)
    assert loc.startswith("test_trace.py:") and loc.endswith("(layer_0/query)")
    line = int(loc.split(":")[1].split()[0])
    src = open(__file__).read().splitlines()[line - 1]
    assert 'nn.Dense(4, name="query")' in src


@pytest.mark.parametrize("stack,root,expected", [
    ("BertModel/encoder/layer_0/attention/self/query", None,
     "encoder/layer_0/attention/self/query"),
    ("transpose(jvp(BertModel))/encoder/layer_0", None, "encoder/layer_0"),
    ("M/query", "M", "query"),
    ("Dense_0/kernel", None, "Dense_0/kernel"),       # auto-named submodule, not a root
    ("encoder/layer_1", None, "encoder/layer_1"),
    ("Other/x", "M", "Other/x"),                      # root given and different: kept
    ("", None, ""),
])
def test_clean_scope_rule(stack, root, expected):
    assert T.clean_scope(stack, root) == expected


def test_partial_of_apply_keeps_root():
    m = _Model()
    x = jnp.ones((1, 4))
    params = m.init(jax.random.PRNGKey(0), x)
    tr = T.trace(functools.partial(m.apply, params), x)
    assert tr.root == "_Model"
