"""BGI distributed point function keys (runtime/fss_dpf.py) against plaintext x == alpha, at a
point and on the whole domain, with both PRGs and the domain's edges."""
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.runtime import fss_dpf as D
from pcformer.runtime import fss_keys as K
from pcformer.runtime import x64


def _keys(alpha, beta, n, kind, rng):
    seeds = jnp.asarray(rng.integers(0, 2 ** 64, size=(2, K.SEED_WORDS) + alpha.shape,
                                     dtype=np.uint64))
    return D.dpf_gen(seeds, jnp.asarray(alpha), jnp.asarray(beta), n, kind)


# n = 1 and 2: no tree level, the leaf's seed words or its PRG words; 4 and 5: levels and
# eight-word leaves
@pytest.mark.parametrize("kind,n", [("splitmix", 1), ("splitmix", 2), ("splitmix", 4),
                                    ("splitmix", 5),
                                    pytest.param("splitmix", 8, marks=pytest.mark.slow),
                                    pytest.param("threefry", 4, marks=pytest.mark.slow)])
def test_dpf_point_and_full_domain(kind, n):
    rng = np.random.default_rng(n)
    hi = 2 ** n - 1
    alpha = rng.integers(0, hi, size=(2, 5), dtype=np.uint64, endpoint=True)
    alpha[0, :2] = [0, hi]
    x = rng.integers(0, hi, size=(2, 5), dtype=np.uint64, endpoint=True)
    x[0, :2] = [0, hi]
    x[1, :3] = alpha[1, :3]
    beta = rng.integers(0, 2 ** 64, size=(2, 5), dtype=np.uint64)
    with x64():
        keys = _keys(alpha, beta, n, kind, rng)
        point = np.asarray(D.dpf_eval(keys, jnp.asarray(x), n, kind))
        full = np.asarray(D.dpf_eval_all(keys, n, kind))
    np.testing.assert_array_equal(point[0] + point[1], np.where(x == alpha, beta, np.uint64(0)))
    grid = np.arange(2 ** n, dtype=np.uint64)[:, None, None]
    np.testing.assert_array_equal(full[0] + full[1],
                                  np.where(grid == alpha[None], beta[None], np.uint64(0)))
    # the full-domain evaluation agrees with point evaluation at x
    at_x = np.take_along_axis(full, x.astype(np.int64)[None, None], axis=1)[:, 0]
    np.testing.assert_array_equal(at_x, point)


def test_dpf_key_bits_formula_and_early_termination():
    """Three levels cut: 5 levels of lambda + 2 bits and an eight-word final correction; a DPF
    of at most three bits is all leaf (2^n words, no level)."""
    assert D.dpf_key_bits(8, 64) == 128 + 5 * 130 + 8 * 64
    assert D.dpf_key_bits(1, 32) == 128 + 2 * 32
    assert D.dpf_key_bits(3, 64) == 128 + 8 * 64
    rng = np.random.default_rng(0)
    alpha = np.array([0, 1, 255, 100], np.uint64)
    with x64():
        keys = _keys(alpha, np.ones(4, np.uint64), 8, "splitmix", rng)
    assert keys.s_cw.shape == (5, K.SEED_WORDS, 4) and keys.t_cw.shape == (5, 2, 4)
    assert keys.final.shape == (8, 4)
