"""Ring, fixed point, config validation and the exact limb matmul."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from pcformer.runtime import MPCConfig, decode, encode, ring, x64


def test_config_refuses_what_cannot_work():
    MPCConfig()
    MPCConfig(ring_bits=32, frac_bits=12)
    with pytest.raises(ValueError, match="ring_bits"):
        MPCConfig(ring_bits=48)
    with pytest.raises(ValueError, match="2\\*frac_bits < ring_bits - 2"):
        MPCConfig(ring_bits=32, frac_bits=15)
    with pytest.raises(ValueError, match="frac_bits"):
        MPCConfig(frac_bits=0)
    with pytest.raises(ValueError, match="trunc_mode"):
        MPCConfig(trunc_mode="probabilistic")
    with pytest.raises(ValueError, match="mode"):
        MPCConfig(mode="fast")
    with pytest.raises(dataclasses_error()):
        MPCConfig().ring_bits = 32


def dataclasses_error():
    import dataclasses
    return dataclasses.FrozenInstanceError


def test_x64_is_local():
    before = jax.config.jax_enable_x64
    with x64():
        assert jnp.zeros(2, jnp.uint64).dtype == jnp.uint64
    assert jax.config.jax_enable_x64 == before


@pytest.mark.parametrize("l,f", [(64, 16), (32, 12)])
def test_encode_decode_roundtrip_and_bounds(l, f):
    bound = ring.safe_bound(f, l)
    x = np.array([0.0, 1.0, -1.0, 2.0 ** -f, -(2.0 ** -f), 3.25, -7.5, bound * 0.99, -bound * 0.99])
    u = encode(x, f, l)
    assert u.dtype == (np.uint64 if l == 64 else np.uint32)
    np.testing.assert_allclose(decode(u, f, l), x, atol=2.0 ** -f)
    assert decode(encode(-1.0, f, l), f, l) == -1.0
    with pytest.raises(ValueError, match=f"2\\^{l - 2 - f}"):
        encode([bound], f, l)
    with pytest.raises(ValueError, match="NaN"):
        encode([1.0, np.nan], f, l)
    with pytest.raises(ValueError, match="NaN or inf"):
        encode([np.inf], f, l)
    with x64():
        t = ring.encode_traced(jnp.asarray(x), f, l)
        np.testing.assert_array_equal(np.asarray(t), u)
        np.testing.assert_allclose(np.asarray(decode(t, f, l)), x, atol=2.0 ** -f)


DNS = [
    ((4, 96), (96, 5), None),
    ((3, 4, 7), (3, 7, 2), (((2,), (1,)), ((0,), (0,)))),          # batched
    ((7, 4), (5, 7), (((0,), (1,)), ((), ()))),                    # contract lhs dim 0
    ((2, 3, 5, 6), (2, 6, 5, 4), (((1 + 2, 2), (1, 2)), ((0,), (0,)))),  # two contracting dims
    ((2, 600), (600, 3), None),                                    # > one exact chunk for w=23
]


@pytest.mark.parametrize("l", [64, 32])
@pytest.mark.slow
def test_limb_matmul_bit_identical_to_native(l):
    rng = np.random.default_rng(l)
    dt = np.uint64 if l == 64 else np.uint32
    with x64():
        for xs, ys, dn in DNS:
            a = rng.integers(0, 2 ** l, size=xs, dtype=dt)
            b = rng.integers(0, 2 ** l, size=ys, dtype=dt)
            a.flat[0] = 2 ** l - 1  # extremes
            b.flat[0] = 2 ** l - 1
            dnc = dn or (((len(xs) - 1,), (0,)), ((), ()))
            native = ring.ring_matmul(jnp.asarray(a), jnp.asarray(b), dnc, l, "native")
            limb = jax.jit(lambda p, q: ring.ring_matmul(p, q, dnc, l, "limb"))(a, b)
            np.testing.assert_array_equal(np.asarray(limb), np.asarray(native))
            # numpy object-int reference for the plain matmul case
            if dn is None:
                ref = (a.astype(object) @ b.astype(object)) % (2 ** l)
                np.testing.assert_array_equal(np.asarray(limb).astype(object), ref)


def test_limb_matmul_small_operand_uses_fewer_gemms_and_stays_exact():
    rng = np.random.default_rng(1)
    assert ring.limb_gemm_count(64, 768, b_bits=20) < ring.limb_gemm_count(64, 768)
    with x64():
        a = rng.integers(0, 2 ** 64, size=(5, 300), dtype=np.uint64)
        w = rng.integers(-(2 ** 20) + 1, 2 ** 20, size=(300, 4)).astype(np.int64).view(np.uint64)
        native = ring.ring_matmul(jnp.asarray(a), jnp.asarray(w), None, 64, "native")
        small_r = ring.ring_matmul(jnp.asarray(a), jnp.asarray(w), None, 64, "limb", b_bits=20)
        small_l = ring.ring_matmul(jnp.asarray(w.T.copy()), jnp.asarray(a.T.copy()), None, 64,
                                   "limb", a_bits=20)
        np.testing.assert_array_equal(np.asarray(small_r), np.asarray(native))
        np.testing.assert_array_equal(np.asarray(small_l), np.asarray(native).T)


def test_limb_matmul_exact_at_the_balanced_digit_bound():
    """Every digit near -2^21 and the longest unchunked contraction (2048 terms): the float64
    partial sums reach 2^53, the edge of exactness, and must still match the native dot."""
    w, chunk, pairs = ring.plan_limbs(64, 2048, None, None)
    assert (w, chunk, pairs) == (22, 2048, 6)
    u = sum(1 << (21 + 22 * i) for i in range(3)) % (1 << 64)
    rng = np.random.default_rng(7)
    with x64():
        for a0 in (u, (1 << 63), (1 << 64) - 1):
            a = np.full((3, 2048), a0, dtype=np.uint64)
            b = np.full((2048, 2), u, dtype=np.uint64)
            b[:, 1] = rng.integers(0, 2 ** 64, size=2048, dtype=np.uint64)
            native = ring.ring_matmul(jnp.asarray(a), jnp.asarray(b), None, 64, "native")
            limb = ring.ring_matmul(jnp.asarray(a), jnp.asarray(b), None, 64, "limb")
            np.testing.assert_array_equal(np.asarray(limb), np.asarray(native))
