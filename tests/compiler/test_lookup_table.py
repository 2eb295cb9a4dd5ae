"""The table_lookup primitive (compiler/lookup_table.py) and SIGMA's lookup-table approximations
(gelu="sigma", softmax="sigma"): float semantics, differentiation, and their claimed errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.compiler import approximations_gelu_softmax as GS
from pcformer.compiler.lookup_table import table_lookup

TABLE = np.arange(8.0) ** 2          # 3 bits


def test_clipped_lookup_reads_the_floor_index_and_clips_both_ends():
    x = jnp.asarray([-5.0, -0.01, 0.0, 0.49, 0.5, 1.99, 3.5, 3.99, 4.0, 100.0])
    want = TABLE[np.clip(np.floor(np.asarray(x) * 2), 0, 7).astype(int)]
    f = lambda v: table_lookup(v, TABLE, 1)   # noqa: E731
    for g in (f, jax.jit(f), jax.vmap(f)):
        np.testing.assert_array_equal(np.asarray(g(x)), want)


def test_wrapped_lookup_reads_the_low_bits_of_the_index():
    x = jnp.asarray([0.0, 1.0, 7.5, 8.0, 9.25, 1000.0])
    got = table_lookup(x, TABLE, 0, wrap=True)
    np.testing.assert_array_equal(np.asarray(got), TABLE[np.floor(np.asarray(x)).astype(int) % 8])


def test_slope_is_the_table_step_inside_and_zero_where_clipped():
    x = jnp.asarray([-1.0, 0.25, 1.25, 3.75, 9.0])
    g = jax.grad(lambda v: jnp.sum(table_lookup(v, TABLE, 1)))(x)
    steps = np.append(np.diff(TABLE), 0.0) * 2
    np.testing.assert_array_equal(np.asarray(g), [0.0, steps[0], steps[2], steps[7], 0.0])


@pytest.mark.parametrize("table,frac,match", [(np.zeros(6), 1, "2\\^n entries"),
                                              (np.zeros(1), 1, "2\\^n entries"),
                                              (np.zeros(8), -1, "frac")])
def test_bad_tables_are_refused(table, frac, match):
    with pytest.raises(ValueError, match=match):
        table_lookup(jnp.zeros(3), table, frac)


@pytest.mark.parametrize("form,ref", [("erf", lambda x: jax.nn.gelu(x, approximate=False)),
                                      ("tanh", lambda x: jax.nn.gelu(x, approximate=True))])
def test_sigma_gelu_is_within_4e_3_of_both_forms(form, ref):
    x = jnp.linspace(-20.0, 20.0, 80001)
    err = np.abs(np.asarray(GS.gelu_sigma(x, form)) - np.asarray(ref(x)))
    assert err.max() < 4.0e-3
    assert err.max() > 1e-3          # the step is visible: the table is what is read
    far = np.abs(np.asarray(x)) > 6
    assert err[far].max() < 2e-4     # relu(x) - delta, with delta ~ 0 beyond the table


def test_two_table_exp_has_relative_error_below_1_3e_4():
    with jax.enable_x64(True):
        z = jnp.linspace(-15.9, 0.0, 100001, dtype=jnp.float64)
        y = np.asarray(GS.exp_nonpositive_lut(z))
        rel = np.abs(y / np.exp(np.asarray(z)) - 1)
        assert rel.max() < 1.3e-4
        below = np.asarray(GS.exp_nonpositive_lut(jnp.asarray([-16.0, -30.0, -1e4])))
        assert np.all(below >= 0) and below.max() < 2e-7
        # one fixed-point LSB above 0 (a max-subtracted score after truncation) reads exp(0)
        np.testing.assert_allclose(GS.exp_nonpositive_lut(jnp.asarray(2.0 ** -16)), 1.0,
                                   rtol=1e-4)


def test_a_two_column_table_reads_both_columns_at_one_index_and_differentiates():
    cols = np.stack([TABLE, -3.0 * TABLE], axis=1)             # [8, 2]
    x = jnp.asarray([-5.0, 0.0, 0.49, 0.5, 1.99, 3.99, 100.0])
    want = cols[np.clip(np.floor(np.asarray(x) * 2), 0, 7).astype(int)]
    f = lambda v: table_lookup(v, cols, 1)   # noqa: E731
    for g in (f, jax.jit(f), jax.vmap(f)):
        np.testing.assert_array_equal(np.asarray(g(x)), want)
    assert jax.eval_shape(f, jnp.zeros((3, 4))).shape == (3, 4, 2)
    g = jax.grad(lambda v: jnp.sum(table_lookup(v, cols, 1)[..., 1]))(x)
    steps = np.append(np.diff(cols[:, 1]), 0.0) * 2
    np.testing.assert_array_equal(np.asarray(g), [0.0, steps[0], steps[0], steps[1], steps[3],
                                                  steps[7], 0.0])
    with pytest.raises(ValueError, match="columns"):
        table_lookup(x, np.zeros((8, 2, 2)), 1)


@pytest.mark.parametrize("form,ref", [("erf", lambda x: jax.nn.gelu(x, approximate=False)),
                                      ("tanh", lambda x: jax.nn.gelu(x, approximate=True))])
def test_spline_gelu_is_within_the_fixed_point_resolution_of_both_forms(form, ref):
    with jax.enable_x64(True):
        x = jnp.linspace(-20.0, 20.0, 400001, dtype=jnp.float64)
        err = np.abs(np.asarray(GS.gelu_spline(x, form)) - np.asarray(ref(x)))
    assert err.max() < 1.25e-5 < 2.0 ** -16          # below 16-bit fixed point's step
    assert err.max() > 1e-6          # the lines are what is read (a step table would be 4e-3)
    far = np.abs(np.asarray(x)) >= 8
    assert err[far].max() < 1e-12    # relu(x) past the table
