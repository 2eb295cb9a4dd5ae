"""Rewrite stage: each approximation replaced where it should be and nowhere else."""
import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.compiler import policies as P
from pcformer.compiler import rewrite as R
from pcformer.compiler import trace as T

HEAVY = {"exp", "log", "tanh", "logistic", "erf", "erfc", "rsqrt", "sqrt"}


class Layer(nn.Module):
    """Dense + masked softmax attention + LayerNorm + erf GeLU, and an unrelated exp."""

    @nn.compact
    def __call__(self, x, mask):
        q = nn.Dense(8, name="query")(x)
        k = nn.Dense(8, name="key")(x)
        probs = jax.nn.softmax(q @ k.T / math.sqrt(8.0), where=mask)
        h = nn.LayerNorm(name="ln")(probs @ x)
        h = nn.Dense(16, name="intermediate")(h)
        h = nn.gelu(h, approximate=False)
        out = nn.Dense(8, name="output")(h)
        gate = jnp.exp(nn.Dense(1, name="gate")(x) * 0.1)  # unrelated exp
        return out * gate


@pytest.fixture(scope="module")
def layer():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (6, 8))
    mask = jnp.tril(jnp.ones((6, 6), bool))
    model = Layer()
    params = model.init(k2, x, mask)
    return model, params, x, mask, T.trace(model.apply, params, x, mask)


def _heavy_scopes(traced):
    return sorted((e.primitive.name, T.scope_of(e, traced.root)) for e in traced.eqns
                  if e.primitive.name in HEAVY)


def _replacements(traced, policy):
    return sorted((r.op_class, r.rule, r.scope) for r in R.matches(traced, policy))


@pytest.mark.slow
def test_original_has_the_heavy_ops(layer):
    *_, tr = layer
    prims = [e.primitive.name for e in tr.eqns]
    assert {"exp", "erfc", "rsqrt", "div"} <= set(prims)
    assert prims.count("exp") == 2


@pytest.mark.parametrize("policy", ["mpcformer", "puma", "paper"])
def test_model_ops_replaced_unrelated_exp_falls_back_to_exact(layer, policy):
    *_, tr = layer
    assert _replacements(tr, policy) == [("exp", "exp", ""), ("gelu", "gelu_erf", ""),
                                         ("rsqrt", "rsqrt", "ln"), ("softmax", "softmax", "")]
    assert all(r.masked for r in R.matches(tr, policy) if r.op_class == "softmax")
    # the policy leaves standalone exp unset: it falls back to exact's method (issue 16)
    assert [r.method for r in R.matches(tr, policy) if r.op_class == "exp"] == ["taylor"]
    out = R.rewrite(tr, policy)
    assert _heavy_scopes(out) == []


@pytest.mark.slow
def test_exact_also_replaces_the_unrelated_exp(layer):
    model, params, x, mask, tr = layer
    assert ("exp", "exp", "") in _replacements(tr, "exact")
    out = R.rewrite(tr, "exact")
    assert _heavy_scopes(out) == []
    np.testing.assert_allclose(out(params, x, mask), model.apply(params, x, mask), atol=5e-3)


def test_none_fields_leave_operators_alone(layer):
    *_, tr = layer
    pol = P.Policy(gelu=None, softmax=None, exp=None, rsqrt=None, erf=None)
    # the softmax's division; both exps (standalone now) fall back to exact's method
    assert _replacements(tr, pol) == [("exp", "exp", ""), ("exp", "exp", ""),
                                      ("reciprocal", "div", "")]
    names = [e.primitive.name for e in R.rewrite(tr, pol).eqns]
    assert names.count("exp") == 0 and names.count("erfc") == 1 and "rsqrt" in names
    # with gelu None but erf set, the erfc alone is approximated
    pol = P.Policy(gelu=None)
    assert ("erf", "erfc", "") in _replacements(tr, pol)


def test_scopes_of_inserted_equations(layer):
    *_, tr = layer
    out = R.rewrite(tr, "mpcformer")
    scopes = {T.scope_of(e, out.root) for e in out.eqns}
    assert {"gelu[quad]", "softmax[2quad]", "ln/rsqrt[newton]"} <= scopes
    # untouched equations keep their module paths and source lines
    dots = [e for e in out.eqns if e.primitive.name == "dot_general"]
    assert "query" in {T.scope_of(e, out.root) for e in dots}
    gelu_eqn = next(e for e in out.eqns if T.scope_of(e, out.root) == "gelu[quad]")
    assert T.where(gelu_eqn, out.root).startswith("test_rewrite.py:")


def test_rewritten_is_the_approximation(layer):
    """Under mpcformer the rewritten program equals a hand-written one with Quad/2Quad."""
    from pcformer.compiler import approximations_gelu_softmax as GS
    model, params, x, mask, tr = layer
    p = params["params"]
    pol = P.MPCFORMER
    dense = lambda name, h: h @ p[name]["kernel"] + p[name]["bias"]  # noqa: E731
    q, k = dense("query", x), dense("key", x)
    probs = GS.softmax_2quad(q @ k.T / math.sqrt(8.0), where=mask, c=pol.quad_c,
                            recip=pol.fn("reciprocal"))
    h = probs @ x
    mu = h.mean(-1, keepdims=True)
    var = jnp.maximum((h * h).mean(-1, keepdims=True) - mu * mu, 0.0)
    h = (h - mu) * pol.fn("rsqrt")(var + 1e-6) * p["ln"]["scale"] + p["ln"]["bias"]
    h = GS.gelu_quad(dense("intermediate", h))
    want = dense("output", h) * jnp.exp(dense("gate", x) * 0.1)
    np.testing.assert_allclose(R.rewrite(tr, pol)(params, x, mask), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("policy", sorted(P.NAMED))
@pytest.mark.slow
def test_friendly_jits_and_differentiates(layer, policy):
    model, params, x, mask, tr = layer
    f = R.friendly(model.apply, policy)
    np.testing.assert_allclose(jax.jit(f)(params, x, mask), R.rewrite(tr, policy)(params, x, mask),
                               rtol=1e-5, atol=1e-5)
    loss = lambda p, x: jnp.sum(f(p, x, mask) ** 2)  # noqa: E731
    gp, gx = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    for leaf in jax.tree_util.tree_leaves(gp) + [gx]:
        assert bool(jnp.all(jnp.isfinite(leaf)))
        assert float(jnp.abs(leaf).sum()) > 0


# --- structural variants -------------------------------------------------------------------

def _rules(fn, *args, policy="exact"):
    return sorted(r.rule for r in R.matches(T.trace(fn, *args), policy))


X = jnp.linspace(-3, 3, 12).reshape(3, 4)


@pytest.mark.parametrize("fn", [
    lambda x: jax.nn.gelu(x, approximate=False),
    lambda x: 0.5 * x * (1.0 + jax.scipy.special.erf(x / math.sqrt(2.0))),
    lambda x: x * 0.5 * (1.0 + jax.lax.erf(x * (1 / math.sqrt(2.0)))),
    lambda x: x * (0.5 * (jax.lax.erf(x / math.sqrt(2.0)) + 1.0)),
], ids=["jax", "hf", "mul-const", "assoc"])
def test_gelu_erf_forms(fn):
    assert _rules(fn, X) == ["gelu_erf"]
    out = R.friendly(fn, "exact")(X)
    np.testing.assert_allclose(out, jax.nn.gelu(X, approximate=False), atol=1e-4)
    np.testing.assert_allclose(R.friendly(fn, "mpcformer")(X), 0.125 * X * X + 0.25 * X + 0.5,
                               rtol=1e-6)


@pytest.mark.parametrize("fn", [
    lambda x: jax.nn.gelu(x, approximate=True),
    lambda x: 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))),
    lambda x: 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * (x * x * x)))),
], ids=["jax", "gpt2", "xxx"])
def test_gelu_tanh_forms(fn):
    assert _rules(fn, X) == ["gelu_tanh"]
    np.testing.assert_allclose(R.friendly(fn, "exact")(X), jax.nn.gelu(X, approximate=True),
                               atol=2e-3)


def test_not_gelu_is_not_matched():
    wrong_const = lambda x: 0.5 * x * jax.lax.erfc(-x * 0.6)  # noqa: E731
    other_var = lambda x, y: 0.5 * y * (1.0 + jax.lax.erf(x / math.sqrt(2.0)))  # noqa: E731
    assert _rules(wrong_const, X) == ["erfc"]
    assert _rules(other_var, X, X) == ["erf"]
    assert _rules(wrong_const, X, policy="mpcformer") == []  # erf None: left alone


@pytest.mark.slow
def test_softmax_forms():
    mask = X > -1.5
    assert _rules(lambda x: jax.nn.softmax(x), X) == ["softmax"]
    assert _rules(lambda x: jax.nn.softmax(x, axis=0), X) == ["softmax"]

    def manual(x):
        e = jnp.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    assert _rules(manual, X) == ["softmax"]
    # Flax-style: where(mask, x, big negative) then softmax: the mask is recovered
    flax_style = lambda x, m: jax.nn.softmax(jnp.where(m, x, -1e10))  # noqa: E731
    ms = R.matches(T.trace(flax_style, X, mask), "mpcformer")
    assert [(m.rule, m.masked) for m in ms] == [("softmax", True)]
    y = R.friendly(flax_style, "mpcformer")(X, mask)
    assert float(jnp.abs(jnp.where(mask, 0.0, y)).max()) == 0.0
    for fn, args in [(lambda x: jax.nn.softmax(x), (X,)),
                     (lambda x: jax.nn.softmax(x, axis=0), (X,)), (manual, (X,)),
                     (flax_style, (X, mask)),
                     (lambda x, m: jax.nn.softmax(x, where=m), (X, mask))]:
        np.testing.assert_allclose(R.friendly(fn, "exact")(*args),
                                   jnp.where(args[-1], fn(*args), 0.0) if len(args) > 1
                                   else fn(*args), atol=5e-3)


def test_layernorm_with_one_over_sqrt_and_divisions():
    def ln(x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5)

    assert _rules(ln, X) == ["div_sqrt"]
    np.testing.assert_allclose(R.friendly(ln, "mpcformer")(X), ln(X), atol=1e-4)
    # division by a secret of either sign and negative powers go through the reciprocal
    f = lambda x, y: x / y + y ** -2  # noqa: E731
    y = X + 0.05
    assert _rules(f, X, y) == ["div", "integer_pow"]
    np.testing.assert_allclose(R.friendly(f, "puma")(X, y), f(X, y), rtol=1e-4)
    # division by a constant is left alone
    assert _rules(lambda x: x / 3.0, X) == []


def test_single_primitives():
    fn = lambda x: (jnp.tanh(x), jax.nn.sigmoid(x), jax.lax.erf(x), jnp.sqrt(x * x + 1),  # noqa
                    jax.lax.rsqrt(x * x + 1))
    assert _rules(fn, X) == ["erf", "logistic", "rsqrt", "sqrt", "tanh"]
    for a, b in zip(R.friendly(fn, "exact")(X), fn(X)):
        np.testing.assert_allclose(a, b, atol=2e-3)
    # mpcformer leaves erf alone; standalone tanh/sigmoid fall back to exact's methods
    assert _rules(fn, X, policy="mpcformer") == ["logistic", "rsqrt", "sqrt", "tanh"]


# --- policies -------------------------------------------------------------------------------

def test_policy_get_forms(tmp_path):
    assert P.get("puma") is P.PUMA
    assert P.get(P.MPCFORMER) is P.MPCFORMER
    assert P.get({"base": "puma", "gelu": "relu"}).gelu == "relu"
    assert P.get({"base": "puma", "gelu": "relu"}).softmax == "puma"
    path = tmp_path / "p.json"
    path.write_text(json.dumps(P.to_dict(P.PAPER)))
    assert P.get(str(path)) == P.PAPER
    assert P.from_dict(json.loads(json.dumps(P.to_dict(P.EXACT)))) == P.EXACT
    with pytest.raises(ValueError, match="exact.*mpcformer.*paper.*puma"):
        P.get("nonsense")
    with pytest.raises(ValueError, match="gelu="):
        P.Policy(gelu="cubic")
    with pytest.raises(ValueError, match="unknown policy field"):
        P.get({"gelu": "quad", "colour": "blue"})


def test_named_policies_say_what_they_are():
    assert (P.MPCFORMER.gelu, P.MPCFORMER.softmax) == ("quad", "2quad")
    assert (P.PUMA.gelu, P.PUMA.softmax) == ("puma", "puma")
    assert (P.PAPER.gelu, P.PAPER.softmax) == ("relu", "2quad")
    assert "INTERPRETATION" in P.PAPER.doc and "2305.18396" in P.PAPER.doc
    assert all(p.doc for p in P.NAMED.values())
    # exact's own fss choices are the one difference (a custom policy keeps its fields as set)
    assert P.Policy() == P.dataclasses.replace(P.EXACT, name="custom", fss=())


def test_exact_under_fss_takes_the_family_lookups_and_nothing_else_does():
    fss = P.EXACT.for_protocols("fss")
    assert (fss.name, fss.gelu, fss.softmax, fss.reciprocal, fss.rsqrt, fss.seed_bits) == \
        ("exact", "spline", "sigma", "lut", "lut", 12)
    assert fss.fss == () and "Under protocols='fss'" in fss.doc
    assert P.EXACT.for_protocols("beaver") is P.EXACT
    for p in (P.MPCFORMER, P.PUMA, P.PAPER, P.SIGMA, P.Policy()):
        assert p.for_protocols("fss") is p
    # a field a derived policy sets wins under fss too (and a class takes its parameters along)
    mine = P.from_dict({"base": "exact", "gelu": "quad", "reciprocal": "goldschmidt"})
    keys = {k for k, _ in mine.fss}
    assert not keys & {"gelu", "reciprocal", "recip_iters", "recip_range"}
    assert mine.for_protocols("fss").gelu == "quad"
    assert mine.for_protocols("fss").softmax == "sigma"
    # the pairs survive JSON, and bad ones are refused when the policy is made
    assert P.from_dict(json.loads(json.dumps(P.to_dict(P.EXACT)))).fss == P.EXACT.fss
    with pytest.raises(ValueError, match="fss names 'colour'"):
        P.Policy(fss=(("colour", "blue"),))
    with pytest.raises(ValueError, match="gelu='cubic'"):
        P.Policy(fss={"gelu": "cubic"})


def test_public_constants_are_not_rewritten():
    def fn(x):
        scale = 1.0 / jnp.sqrt(jnp.float32(8))        # folded to a constant by trace
        return x * scale + jnp.exp(jnp.ones(4))        # exp of a constant: public, left alone

    tr = T.trace(fn, X)
    assert "sqrt" not in {e.primitive.name for e in tr.eqns}
    assert R.matches(tr, "exact") == []
    np.testing.assert_allclose(tr(X), fn(X), rtol=1e-6)


@pytest.mark.slow
def test_softmax_with_broadcast_mask():
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4))
    mask = jnp.array([[[1, 1, 0, 1]], [[1, 0, 0, 1]]], bool)  # [2, 1, 4], broadcast over rows
    fn = lambda x, m: jax.nn.softmax(x, where=m)  # noqa: E731
    ms = R.matches(T.trace(fn, x, mask), "puma")
    assert [(m.rule, m.masked) for m in ms] == [("softmax", True)]
    y = R.friendly(fn, "exact")(x, mask)
    np.testing.assert_allclose(y, jnp.where(mask, fn(x, mask), 0.0), atol=5e-3)
    assert float(jnp.abs(jnp.where(mask, 0.0, y)).max()) == 0.0
