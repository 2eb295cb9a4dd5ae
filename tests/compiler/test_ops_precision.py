"""Precision of public constants (issue 16, part 1): a public non-integer factor is encoded with
f + 4 significant bits and the product truncated once (`Lowerer.factor_scale`), so means,
LayerNorm's mean and exp's Taylor coefficients are within a few ulps of float64."""
import jax.numpy as jnp
import pytest
import numpy as np

from ops_util import check_op

ULP = 2.0 ** -16
rng = np.random.default_rng(16)


def test_mean_of_1000_threes_is_three():
    got, _ = check_op(jnp.mean, np.full((1000,), 3.0, np.float32), atol=2 * ULP, rtol=0)
    for (m,) in got:   # before: 3.0212 (1/1000 kept 6 significant bits)
        assert abs(float(m) - 3.0) <= 2 * ULP


def test_mean_of_1e5_elements():
    x = rng.uniform(0, 100, (100_000,)).astype(np.float32)
    # before: 76.2 for 49.96 (1e-5 encoded as 1 ulp = 1.5e-5)
    check_op(jnp.mean, x, atol=1e-3, rtol=0, kinds=("client",))


def test_layernorm_mean_is_unbiased():
    x = rng.normal(0.3, 2.0, (8, 384)).astype(np.float32)
    got, _ = check_op(lambda v: jnp.mean(v, axis=-1), x, atol=3 * ULP, rtol=0)
    want = x.astype(np.float64).mean(-1)
    for (m,) in got:
        assert abs(float(np.mean(m - want))) <= 2 * ULP   # no systematic bias


def test_product_by_a_non_integer_constant():
    x = rng.uniform(-1000, 1000, (64,)).astype(np.float32)
    # f-bit encoding of 0.7 is off by 2^-17 relative to 0.7: up to 7.6e-3 at |x| = 1000
    check_op(lambda v: v * 0.7 - v / 3.0, x, atol=5e-4, rtol=0)


@pytest.mark.slow
def test_exp_on_minus_ten_to_ten_exact_policy():
    x = np.linspace(-10, 10, 81).astype(np.float32)
    # before: off by 2.8 at 2.2e4; now relative error < 1e-3 (absolute 1e-3 near 0)
    check_op(jnp.exp, x, atol=1e-3, rtol=1e-3)
