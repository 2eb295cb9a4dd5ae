"""BGI distributed comparison function keys (runtime/fss_keys.py) against plaintext x < alpha:
both PRGs, widths 1 to 64, edge inputs (0, the maximum, alpha itself, alpha - 1), two-word
payloads, and the two parties' outputs individually not the answer."""
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.runtime import fss_keys as K
from pcformer.runtime import x64


def _cases(n, rng, size=24):
    hi = np.uint64(2 ** n - 1) if n < 64 else np.uint64(2 ** 64 - 1)
    alpha = rng.integers(0, int(hi), size=size, dtype=np.uint64, endpoint=True)
    x = rng.integers(0, int(hi), size=size, dtype=np.uint64, endpoint=True)
    alpha[:4] = [0, hi, 0, hi]
    x[:4] = [0, hi, hi, 0]
    x[4:8] = alpha[4:8]
    x[8:12] = alpha[8:12] - np.uint64(1) if n == 64 else (alpha[8:12] - np.uint64(1)) & hi
    return alpha, x


def _gen_eval(alpha, x, beta, n, kind, rng):
    with x64():
        seeds = jnp.asarray(rng.integers(0, 2 ** 64, size=(2, K.SEED_WORDS) + alpha.shape,
                                         dtype=np.uint64))
        keys = K.dcf_gen(seeds, jnp.asarray(alpha), jnp.asarray(beta), n, kind)
        return np.asarray(K.dcf_eval(keys, jnp.asarray(x), n, kind))


SLOW = pytest.mark.slow   # threefry compiles a vmapped block cipher per level: seconds each


@pytest.mark.parametrize("kind,n", [("splitmix", n) for n in (1, 2, 7, 16, 63, 64)]
                         + [("threefry", 7), pytest.param("threefry", 64, marks=SLOW)])
def test_dcf_matches_plaintext_comparison(kind, n):
    rng = np.random.default_rng(n)
    alpha, x = _cases(n, rng)
    beta = rng.integers(0, 2 ** 64, size=(2,) + alpha.shape, dtype=np.uint64)
    out = _gen_eval(alpha, x, beta, n, kind, rng)
    expected = np.where(x < alpha, beta, np.uint64(0))
    np.testing.assert_array_equal(out[0] + out[1], expected)
    # a single party's output is not the answer (its share is masked by PRG output)
    assert not np.array_equal(out[0], expected)


def test_dcf_tensor_shape_and_32_bit_group():
    """A 2-D tensor of comparisons; reducing the uint64 output mod 2^32 gives Z_2^32 shares."""
    rng = np.random.default_rng(5)
    alpha = rng.integers(0, 2 ** 10, size=(3, 4), dtype=np.uint64)
    x = rng.integers(0, 2 ** 10, size=(3, 4), dtype=np.uint64)
    beta = np.full((1, 3, 4), 2 ** 32 - 1, np.uint64)
    out = _gen_eval(alpha, x, beta, 10, "splitmix", rng)
    assert out.shape == (2, 1, 3, 4)
    got = (out[0, 0].astype(np.uint32) + out[1, 0].astype(np.uint32))
    np.testing.assert_array_equal(got, np.where(x < alpha, np.uint32(2 ** 32 - 1), np.uint32(0)))


def test_prgs_differ_and_are_deterministic():
    with x64():
        seeds = jnp.asarray(np.arange(2 * 5, dtype=np.uint64).reshape(2, 5))
        a = np.asarray(K.prg(seeds, 3, "splitmix"))
        b = np.asarray(K.prg(seeds, 3, "threefry"))
        np.testing.assert_array_equal(a, np.asarray(K.prg(seeds, 3, "splitmix")))
    assert a.shape == b.shape == (3, 5)
    assert not np.array_equal(a, b)
    assert len(np.unique(a)) == a.size
    with pytest.raises(ValueError, match="unknown FSS PRG"):
        K.prg(seeds, 1, "aes")


@pytest.mark.parametrize("kind", K.PRGS)
def test_level_scan_carry_expands_to_the_prg_output(kind):
    """What the level scan carries (the SplitMix hash, or threefry's whole expansion) expands
    to exactly `prg`'s words."""
    with x64():
        seeds = jnp.asarray(np.random.default_rng(3).integers(
            0, 2 ** 64, size=(K.SEED_WORDS, 2, 6), dtype=np.uint64))
        words = K.expansion_words(2)
        got = K.prg_from_state(K.prg_state(seeds, words, kind), words, kind)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(K.prg(seeds, words, kind)))


def test_key_bits_formula():
    # lambda + n (lambda + 2 + k l) + k l
    assert K.dcf_key_bits(63, 1, 64) == 128 + 63 * (128 + 2 + 64) + 64
