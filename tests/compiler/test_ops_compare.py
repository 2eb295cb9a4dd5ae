"""Equality, sign and rounding on secret-shared inputs (issue 16, part 3), against float64
JAX for client-owned, server-owned and already-secret inputs; static cost == measured."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ops_util import check_op

rng = np.random.default_rng(3)
X = rng.uniform(-3, 3, (3, 4)).astype(np.float32)
Y = np.where(rng.uniform(size=(3, 4)) < 0.5, X, rng.uniform(-3, 3, (3, 4))).astype(np.float32)
HALVES = np.array([-2.5, -1.5, -0.5, 0.0, 0.5, 1.5, 2.5, 0.3, -0.7, 1.2, 3.0, -3.0],
                  np.float32)

CASES = {
    "eq_ne": (lambda a, b: (a == b, a != b), X, Y),
    "sign_signless": (lambda a: (jnp.sign(a), jnp.sign(a * 0.0)), X),
    "floor_ceil_trunc": (lambda a: (jnp.floor(a), jnp.ceil(a), jnp.trunc(a)), X),
    "floor_of_integers": (lambda a: (jnp.floor(a), jnp.ceil(a)), np.round(X)),
    "round_half_even_and_away": (lambda a: (jnp.round(a), jax.lax.round(a)), HALVES),
    "fmod_mod_remainder_floor_divide": (lambda a: (jnp.fmod(a, 0.7), jnp.mod(a, 0.7),
                                                   jnp.remainder(a, -1.3),
                                                   jnp.floor_divide(a, 0.7)), X),
    "fmax_fmin_heaviside": (lambda a, b: (jnp.fmax(a, b), jnp.fmin(a, b),
                                          jnp.heaviside(a, 0.5)), X, Y),
    "nan_reducers": (lambda a: (jnp.nansum(a), jnp.nanmax(a, axis=1), jnp.nanmean(a)), X),
    "where_select": (lambda a, b: jnp.where(a > b, a, b * 2.0), X, Y),
    "signbit_copysign": (lambda a, b: (jnp.signbit(a), jnp.copysign(a, b)), X, Y),
    "isinf_all_any_xor": (lambda a, b: (jnp.isinf(a), jnp.all(a > 0), jnp.any(a > b),
                                        jnp.logical_xor(a > 0, b > 0), jnp.array_equal(a, a)),
                          X, Y),
    "rem_by_a_secret_divisor": (lambda a, b: (jnp.fmod(a, b), jnp.floor_divide(a, b)),
                                X, (rng.choice([-1, 1], (3, 4)) *
                                    rng.uniform(0.5, 2, (3, 4))).astype(np.float32)),
    "logical": (lambda a, b: (jnp.logical_and(a > 0, b > 0), jnp.logical_or(a > 0, b < 0),
                              jnp.logical_not(a > 0)), X, Y),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_compare_op(name):
    fn, *args = CASES[name]
    check_op(fn, *args, atol=1e-3, rtol=0)


def test_eq_of_a_value_with_itself_is_free():
    _, rep = check_op(lambda a: jnp.isnan(a), X, kinds=("client",))
    assert not any(e.op.endswith("drelu") for e in rep.entries)


def test_rounding_ties_on_a_client_input():
    """The fast guard of the rounding rules: ties (±0.5, ±2.5) and integers (±3) round right
    in protocol mode, so no lowering shortcut may drop the fraction bits a tie test reads."""
    check_op(lambda a: (jnp.round(a), jax.lax.round(a), jnp.rint(a)), HALVES, atol=1e-3,
             rtol=0, kinds=("client",))
