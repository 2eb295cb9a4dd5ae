"""Approximations: accuracy over each stated range, masked softmax, friendly primitives only."""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.compiler import approximation_table as table
from pcformer.compiler import approximations as A
from pcformer.compiler import approximations_gelu_softmax as GS
from pcformer.compiler import policies as P
from pcformer.compiler import trace as T
from pcformer.compiler.rewrite import Graph


def _geom(lo, hi, n=20001):
    return jnp.exp(jnp.linspace(math.log(lo), math.log(hi), n))


gelu_ref = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731
gelu_tanh_ref = lambda x: jax.nn.gelu(x, approximate=True)  # noqa: E731

# Claims beyond the table's own (tests below hold every table entry to its claim): other ranges,
# degrees and forms. The bounds are docs/approximations.md's figures rounded up.
CASES = [
    ("exp_taylor_rel", A.exp_taylor, jnp.exp, jnp.linspace(-14, 0, 20001), "rel", 5e-5),
    ("erf_poly_17", A.erf_poly, jax.scipy.special.erf, jnp.linspace(-10, 10, 20001), "abs",
     2e-4),
    ("gelu_tanh", GS.gelu_tanh, gelu_tanh_ref, jnp.linspace(-20, 20, 20001), "abs", 1e-5),
    # the 12-bit seeds `exact` reads under protocols="fss" (one step each)
    ("rsqrt_lut_12", lambda x: A.rsqrt_lut(x, 1, -8, 8, table_bits=12),
     lambda x: 1.0 / jnp.sqrt(x), _geom(4.0 ** -8, 4.0 ** 8 * 0.999), "rel", 3e-7),
    ("reciprocal_lut_12", lambda x: A.reciprocal_lut(x, 1, -12, 17, table_bits=12),
     jnp.reciprocal, _geom(2.0 ** -12, 2.0 ** 17 * 0.999), "rel", 2e-7),
]


def max_error(approx, ref, xs, kind):
    a, r = np.asarray(approx(xs), np.float64), np.asarray(ref(xs), np.float64)
    err = np.abs(a - r)
    if kind == "rel":
        err = err / np.abs(r)
    return float(err.max())


@pytest.mark.parametrize("name,approx,ref,xs,kind,bound", CASES, ids=[c[0] for c in CASES])
def test_accuracy_over_stated_range(name, approx, ref, xs, kind, bound):
    err = max_error(approx, ref, xs, kind)
    assert np.isfinite(err) and err <= bound, f"{name}: max {kind} error {err:.3g} > {bound}"


CLAIMED = [e for e in table.entries() if e.reference is not None]


def _grid(lo, hi, n=20001):
    """Geometric over a positive range of many octaves, else even."""
    return _geom(lo, hi, n) if lo > 0 and hi / lo > 1e3 else jnp.linspace(lo, hi, n)


@pytest.mark.parametrize("entry", CLAIMED, ids=[f"{e.op_class}={e.name}" for e in CLAIMED])
def test_each_table_entry_holds_its_claim(entry):
    """The approximation table's stated error over its stated range, with the policy parameters
    the claim names: a regression in any approximation, or a claim that drifts, fails here."""
    fn = entry.bind(P.Policy(**dict(entry.measured_with)))
    kind, bound = entry.error
    err = max_error(fn, lambda x: entry.reference(np.asarray(x, np.float64)), _grid(*entry.valid),
                    kind)
    assert np.isfinite(err) and err <= bound, f"{entry}: max {kind} error {err:.3g} > {bound}"


def test_every_policy_choice_is_a_table_entry():
    for op_class in table.TABLE:
        assert op_class in {f.name for f in dataclasses.fields(P.Policy)}
        for name in table.names(op_class):
            entry = table.lookup(op_class, name)
            assert entry.doc and set(entry.params) <= {f.name for f in dataclasses.fields(P.Policy)}
            bound = P.Policy(**{op_class: name}).fn(op_class)
            assert callable(bound) or all(map(callable, bound.values()))   # math: a family
    with pytest.raises(ValueError, match="not one of"):
        P.Policy(gelu="cubic")


def test_a_new_approximation_is_one_table_entry(monkeypatch):
    """docs/architecture.md's worked example: declare an entry, and a policy (a name, a dict or a
    file) can choose it; the rewrite uses it with no other change."""
    from pcformer.compiler import rewrite
    monkeypatch.setitem(table.TABLE, "gelu", dict(table.TABLE["gelu"]))

    @table.approximation("gelu", "cubic", params=())
    def _cubic(pol):
        """x^3 / 8 + x / 2 (a toy replacement)."""
        return lambda x, form="erf": 0.125 * x ** 3 + 0.5 * x

    pol = P.from_dict({"base": "mpcformer", "gelu": "cubic"})
    x = jnp.linspace(-2.0, 2.0, 9)
    out = rewrite.friendly(lambda v: jax.nn.gelu(v, approximate=False), pol)(x)
    np.testing.assert_allclose(out, 0.125 * x ** 3 + 0.5 * x, rtol=1e-6)


def test_reciprocal_newton_fails_outside_its_range():
    # documented limitation of CrypTen's initial guess; the normalised one holds
    x = jnp.array([1000.0])
    assert abs(float(A.reciprocal_newton(x)[0]) * 1000.0 - 1) > 0.5
    assert abs(float(A.reciprocal_goldschmidt(x)[0]) * 1000.0 - 1) < 1e-5


def test_quad_and_relu_are_the_published_formulas():
    x = jnp.linspace(-5, 5, 11)
    np.testing.assert_allclose(GS.gelu_quad(x), 0.125 * x ** 2 + 0.25 * x + 0.5, rtol=1e-6)
    np.testing.assert_allclose(GS.gelu_relu(x), np.maximum(x, 0))


def test_puma_gelu_pieces():
    x = jnp.array([-5.0, -3.0, 0.0, 2.0, 4.0])
    y = GS.gelu_puma(x)
    assert float(y[0]) == 0.0 and float(y[4]) == 4.0
    np.testing.assert_allclose(y[1:4], gelu_ref(x[1:4]), atol=2.5e-2)


@pytest.fixture(scope="module")
def logits():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = 4.0 * jax.random.normal(k1, (16, 12))
    mask = jax.random.bernoulli(k2, 0.6, (16, 12)).at[:, 0].set(True)
    return x, mask


def softmax_of(name: str):
    """The table's softmax `name` with its policy's parameters (puma's: 8 squarings)."""
    fn = (P.PUMA if name == "puma" else P.Policy(softmax=name)).fn("softmax")
    return lambda x, where=None, axis=-1: fn(x, where, axis)


@pytest.mark.parametrize("name", table.names("softmax"))
@pytest.mark.slow
def test_softmax_mask_and_normalisation(name, logits):
    x, mask = logits
    y = softmax_of(name)(x, where=mask, axis=-1)
    assert float(jnp.abs(jnp.where(mask, 0.0, y)).max()) == 0.0  # masked: exactly 0
    assert float(y.min()) >= 0.0
    tol = 2e-3 if name in ("2quad", "relu") else 1e-5  # eps in the denominator
    np.testing.assert_allclose(y.sum(-1)[(mask * (y > 0)).any(-1)], 1.0, atol=tol)
    # masked entries do not enter the sum: changing them changes nothing
    y2 = softmax_of(name)(jnp.where(mask, x, 100.0), where=mask, axis=-1)
    np.testing.assert_allclose(y, y2, atol=1e-6)


@pytest.mark.parametrize("name,bound", [("puma", 5e-3), ("exact", 2e-5), ("sigma", 1e-4)])
def test_exp_softmaxes_are_close(name, bound, logits):
    x, mask = logits
    ref = jax.nn.softmax(x, where=mask)
    ref = jnp.where(mask, ref, 0.0)
    assert float(jnp.abs(softmax_of(name)(x, where=mask) - ref).max()) < bound


def test_softmax_other_axis():
    x = jax.random.normal(jax.random.PRNGKey(3), (5, 7))
    np.testing.assert_allclose(GS.softmax_exact(x, axis=0), jax.nn.softmax(x, axis=0), atol=5e-3)


# --- only MPC-friendly primitives -------------------------------------------------------------

FRIENDLY = {"add", "sub", "mul", "neg", "integer_pow", "square", "dot_general", "lt", "le", "gt",
            "ge", "eq", "ne", "select_n", "max", "min", "clamp", "reduce_sum", "reduce_max",
            "broadcast_in_dim", "reshape", "convert_element_type", "squeeze", "expand_dims",
            "copy", "div", "slice",
            "table_lookup"}   # a public table at a secret position: the FSS family's `lut`


def _all_fns():
    """Every table entry (gelu and softmax under their own policy), and the tanh GeLU form."""
    fns = {}
    for e in table.entries():
        if e.op_class == "math":
            continue          # one function per primitive: tests/compiler/test_ops_math.py
        fn = e.bind(P.Policy(**dict(e.measured_with)))
        fns[f"{e.op_class}_{e.name}"] = ((lambda f: lambda x: f(x, x > 0, -1))(fn)
                                         if e.op_class == "softmax" else fn)
    fns["gelu_tanh"] = GS.gelu_tanh
    return fns


@pytest.mark.parametrize("name", sorted(_all_fns()))
def test_only_friendly_primitives(name):
    fn = _all_fns()[name]
    tr = T.trace(fn, jnp.ones((3, 4)))
    graph = Graph(tr.closed_jaxpr)
    for e in tr.eqns:
        p = e.primitive.name
        assert p in FRIENDLY, f"{name} uses {p}"
        if p == "integer_pow":
            assert e.params["y"] > 0
        if p == "div":  # division only by a constant
            assert graph.is_const(e.invars[1]), f"{name} divides by an array"


@pytest.mark.parametrize("name", sorted(_all_fns()))
@pytest.mark.slow
def test_gradients_finite_and_nonzero(name):
    fn = _all_fns()[name]
    x = jnp.linspace(0.3, 3.0, 12).reshape(3, 4)
    g = jax.grad(lambda z: jnp.sum(fn(z) * jnp.arange(12.0).reshape(3, 4)))(x)
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).sum()) > 0
