"""Structural operators on secret-shared inputs (issue 16, part 2): client-owned, server-owned
and already-secret inputs against float64 JAX; static cost == measured ledger (ops_util)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ops_util import check_op

rng = np.random.default_rng(2)
X = rng.uniform(-2, 2, (3, 4)).astype(np.float32)
Y = rng.uniform(0.5, 2, (3, 4)).astype(np.float32)

CASES = {
    "stop_gradient": (lambda a: jax.lax.stop_gradient(a) * 2.0, X),
    "stack_concatenate": (lambda a, b: (jnp.stack([a, b, a * b], 1), jnp.hstack([a, b]),
                                        jnp.vstack([a, b]), jnp.column_stack([a[0], b[0]])),
                          X, Y),
    "integer_pow_0": (lambda a: a ** 0 + a, X),
    "float_to_bool_and_int": (lambda a: (a.astype(bool), a.astype(jnp.int32)),
                              np.round(X * 2) / 2),
    "scatter_set": (lambda a, b: a.at[jnp.array([0, 2])].set(b[:2]), X, Y),
    "scatter_add": (lambda a, b: a.at[jnp.array([0, 2, 0])].add(b), X, Y),
    "take_fill_mode": (lambda a: jnp.take(a, jnp.array([0, 2]), axis=1), X),
    "take_along_axis": (lambda a: jnp.take_along_axis(a, jnp.array([[1], [0], [3]]), axis=1), X),
    "max_min_several_axes": (lambda a: (a.max(), jnp.ptp(a), a.min(axis=(0, 1)),
                                        jnp.max(a[None], axis=(0, 2))), X),
    "reduce_prod": (lambda a: (a.prod(axis=1), jnp.prod(a[:2, :3])), Y),
    "scan_secret_carry": (lambda a, b: jax.lax.scan(lambda c, r: (c * r + 1.0, c.sum()), a[0], b),
                          X, Y),
    "scan_reverse": (lambda a, b: jax.lax.scan(lambda c, r: (c + r, c * 0.5), a[0], b,
                                               reverse=True), X, Y),
    "fori_loop_public_bounds": (lambda a: jax.lax.fori_loop(0, 3, lambda i, c: c * 0.5 + a, a), X),
    "is_finite_isnan": (lambda a: (jnp.isfinite(a), jnp.isnan(a)), X),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_structural_op(name):
    fn, *args = CASES[name]
    check_op(fn, *args, atol=1e-3, rtol=0)


def test_prod_uses_a_tree_of_products():
    """log2 rounds, not k - 1: the product over 8 entries is 3 levels of Beaver products."""
    _, rep = check_op(lambda a: jnp.prod(a), Y[:2], atol=1e-3, rtol=0, kinds=("client",))
    assert sum(1 for e in rep.entries if e.op.endswith("mul") and e.phase == "offline") == 3


@pytest.mark.parametrize("reveal", [True, False])
@pytest.mark.slow
def test_program_executor_accepts_secret_inputs(reveal):
    import pcformer
    from ops_util import ledger_key, make_secret
    s = make_secret(X)
    fn = lambda a, w: jnp.maximum(a @ w, 0.0) * 0.5  # noqa: E731
    got = {}
    for executor in ("program", "op"):
        prog = pcformer.compile(fn, s, Y.T, owners=("secret", 0), policy=None,
                                executor=executor, reveal=reveal)
        out, rep = prog.run(s, Y.T)
        out = np.asarray(out if reveal else out.peek(), np.float64)
        np.testing.assert_allclose(out, np.maximum(X @ Y.T, 0) * 0.5, atol=1e-3)
        assert ledger_key(prog.cost.entries) == ledger_key(rep.entries)
        got[executor] = ledger_key(rep.entries)
    assert got["program"] == got["op"]
