"""Every protocol on random inputs, negatives, zero, range limits and wrap-around.

Ring-exact protocols are compared with numpy arithmetic mod 2^l on raw ring elements; fixed-point
ones within their stated error. The big programs run op by op (eager: XLA's CPU compile of a
whole jitted program of nonlinear protocols takes tens of seconds on the 2-core CI machine); the
small ones run under jax.jit, which the protocols are written for.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.runtime import AShare, Context, MPCConfig, decode, encode, ring, x64
from pcformer.runtime import protocols as P


def _run(prog, *args, jit=False):
    with x64():
        out = (jax.jit(prog) if jit else prog)(jax.random.PRNGKey(3), *args)
        return jax.tree_util.tree_map(np.asarray, out)


def _np_dt(l):
    return np.uint64 if l == 64 else np.uint32


def _ring_values(l, n, rng):
    """Uniform ring elements plus the extremes 0, 1, -1, 2^(l-1), 2^(l-1) - 1."""
    dt = _np_dt(l)
    v = rng.integers(0, 2 ** l, size=n, dtype=dt)
    v[:5] = np.array([0, 1, 2 ** l - 1, 2 ** (l - 1), 2 ** (l - 1) - 1], dtype=object).astype(dt)
    return v


def _mod(x, l):
    return (np.asarray(x).astype(object) % (2 ** l))


def _signed(u, l):
    return np.asarray(u).view(np.int64 if l == 64 else np.int32).astype(object)


@pytest.mark.parametrize("l", [64, 32])
@pytest.mark.slow
def test_ring_exact_protocols(l):
    cfg = MPCConfig(ring_bits=l, frac_bits=12 if l == 32 else 16)
    rng = np.random.default_rng(l)
    n = 12
    x, y = _ring_values(l, n, rng), rng.integers(0, 2 ** l, size=n, dtype=_np_dt(l))
    c = rng.integers(0, 2 ** l, size=n, dtype=_np_dt(l))
    X = rng.integers(0, 2 ** l, size=(3, 4), dtype=_np_dt(l))
    Y = rng.integers(0, 2 ** l, size=(4, 2), dtype=_np_dt(l))
    W = rng.integers(0, 2 ** l, size=(4, 5), dtype=_np_dt(l))

    def prog(key, x, y, c, X, Y, W):
        ctx = Context(cfg, key)
        sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
        sX, sY = P.share(ctx, X, 1), P.share(ctx, Y, 0)
        ab = P.a2b(ctx, sx)
        out = {
            "add": P.reveal(ctx, P.add(ctx, sx, sy)),
            "sub": P.reveal(ctx, P.sub(ctx, sx, sy)),
            "neg": P.reveal(ctx, P.neg(ctx, sx)),
            "add_public": P.reveal(ctx, P.add_public(ctx, sx, c)),
            "mul_public": P.reveal(ctx, P.mul_public(ctx, sx, c)),
            "mul": P.reveal(ctx, P.mul(ctx, sx, sy)),
            "square": P.reveal(ctx, P.square(ctx, sx)),
            "dot": P.reveal(ctx, P.dot_general(ctx, sX, sY)),
            "dot_t": P.reveal(ctx, P.dot_general(ctx, sY, sX, (((0,), (1,)), ((), ())))),
            "priv0": P.reveal(ctx, P.dot_general_private(ctx, sX, W, party=0, weight_id="W")),
            "priv1_left": P.reveal(ctx, P.dot_general_private(ctx, sY, W.T, party=1,
                                                              weight_id="WT", w_on_left=True)),
            "priv_plain": P.reveal(ctx, P.dot_general_private(ctx, X, W, party=0)),
            "mul_private": P.reveal(ctx, P.mul_private(ctx, sx, c, party=1, weight_id="c")),
            "a2b": ab.data[0] ^ ab.data[1],
            "and": (lambda z: z.data[0] ^ z.data[1])(P.and_(ctx, ab, P.a2b(ctx, sy))),
            "msb": (lambda z: z.data[0] ^ z.data[1])(P.msb(ctx, sx)),
            "b2a": P.reveal(ctx, P.b2a(ctx, P.msb(ctx, sx))),
            "drelu": P.reveal(ctx, P.drelu(ctx, sx)),
            "relu": P.reveal(ctx, P.relu(ctx, sx)),
            "reveal_to_0": P.reveal(ctx, sx, to=0),
        }
        return out

    o = _run(prog, x, y, c, X, Y, W)
    o = {k: _mod(v, l) for k, v in o.items()}
    xo, yo, co = x.astype(object), y.astype(object), c.astype(object)
    M = 2 ** l
    np.testing.assert_array_equal(o["add"], (xo + yo) % M)
    np.testing.assert_array_equal(o["sub"], (xo - yo) % M)
    np.testing.assert_array_equal(o["neg"], (-xo) % M)
    np.testing.assert_array_equal(o["add_public"], (xo + co) % M)
    np.testing.assert_array_equal(o["mul_public"], (xo * co) % M)
    np.testing.assert_array_equal(o["mul"], (xo * yo) % M)
    np.testing.assert_array_equal(o["square"], (xo * xo) % M)
    Xo, Yo, Wo = X.astype(object), Y.astype(object), W.astype(object)
    np.testing.assert_array_equal(o["dot"], (Xo @ Yo) % M)
    np.testing.assert_array_equal(o["dot_t"], (Yo.T @ Xo.T) % M)
    np.testing.assert_array_equal(o["priv0"], (Xo @ Wo) % M)
    np.testing.assert_array_equal(o["priv1_left"], (Wo.T @ Yo) % M)
    np.testing.assert_array_equal(o["priv_plain"], (Xo @ Wo) % M)
    np.testing.assert_array_equal(o["mul_private"], (xo * co) % M)
    np.testing.assert_array_equal(o["a2b"], xo)
    np.testing.assert_array_equal(o["and"], np.asarray(x) & np.asarray(y))
    top = (xo >> (l - 1)) & 1
    np.testing.assert_array_equal(o["msb"], top)
    np.testing.assert_array_equal(o["b2a"], top)
    np.testing.assert_array_equal(o["drelu"], 1 - top)
    np.testing.assert_array_equal(o["relu"], np.where(top == 1, 0, xo))
    np.testing.assert_array_equal(o["reveal_to_0"], xo)


@pytest.mark.slow
def test_fixed_point_and_comparisons():
    cfg = MPCConfig()
    f, l = cfg.frac_bits, cfg.ring_bits
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(4, 6)) * 50
    ys = rng.normal(size=(4, 6)) * 50
    xs[0, :4] = [0.0, -0.0, 2.0 ** -f, -(2.0 ** -f)]
    ys[0, :4] = [0.0, 1.0, 2.0 ** -f, 0.0]          # ties and near-ties
    xs[1, 0], ys[1, 0] = 30000.0, -30000.0           # |xy| near 2^30, the product limit
    ys[2] = xs[2]                                    # a row of ties: argmax must pick index 0

    def prog(key, x, y):
        ctx = Context(cfg, key)
        sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
        return {
            "mul": P.reveal(ctx, P.truncate(ctx, P.mul(ctx, sx, sy))),
            "square": P.reveal(ctx, P.truncate(ctx, P.square(ctx, sx))),
            "less": P.reveal(ctx, P.less(ctx, sx, sy)),
            "less_public": P.reveal(ctx, P.less_public(ctx, sx, encode(1.5))),
            "select": P.reveal(ctx, P.select(ctx, P.less(ctx, sx, sy), sx, sy)),
            "max": P.reveal(ctx, P.max(ctx, sx, axis=1)),
            "max0": P.reveal(ctx, P.max(ctx, sx, axis=0)),
            "argmax": P.reveal(ctx, P.argmax(ctx, sx, axis=1)),
            "argmax0": P.reveal(ctx, P.argmax(ctx, sx, axis=0)),
            "argmax_ties": P.reveal(ctx, P.argmax(ctx, P.sub(ctx, sy, sx), axis=1)),
        }

    o = _run(prog, encode(xs), encode(ys))
    dec = lambda k: decode(np.asarray(o[k]), f, l)
    xq, yq = decode(encode(xs), f, l), decode(encode(ys), f, l)
    lsb = 2.0 ** -f
    assert np.max(np.abs(dec("mul") - xq * yq)) <= 1.01 * lsb
    assert np.max(np.abs(dec("square") - xq * xq)) <= 1.01 * lsb
    np.testing.assert_array_equal(np.asarray(o["less"]), (xq < yq).astype(np.uint64))
    np.testing.assert_array_equal(np.asarray(o["less_public"]), (xq < 1.5).astype(np.uint64))
    np.testing.assert_array_equal(dec("select"), np.where(xq < yq, xq, yq))
    np.testing.assert_array_equal(dec("max"), xq.max(1))
    np.testing.assert_array_equal(dec("max0"), xq.max(0))
    np.testing.assert_array_equal(np.asarray(o["argmax"]), xq.argmax(1))
    np.testing.assert_array_equal(np.asarray(o["argmax0"]), xq.argmax(0))
    np.testing.assert_array_equal(np.asarray(o["argmax_ties"]), (yq - xq).argmax(1))
    assert np.asarray(o["argmax_ties"])[2] == 0


@pytest.mark.parametrize("l,f", [(64, 16), (32, 8)])
def test_dealer_truncation_error_at_most_one_lsb(l, f):
    """Over the whole stated range |x| < 2^(l-2), dealer truncation gives floor(x/2^f) or +1."""
    cfg = MPCConfig(ring_bits=l, frac_bits=f, trunc_mode="dealer")
    rng = np.random.default_rng(7)
    lim = 2 ** (l - 2)
    xs = rng.integers(-lim + 1, lim, size=4000, dtype=np.int64)
    xs[:6] = [0, -1, 1, lim - 1, -lim + 1, -(2 ** f)]
    u = xs.astype(np.int64).view(np.uint64).astype(_np_dt(l))

    def prog(key, u):
        ctx = Context(cfg, key)
        return P.reveal(ctx, P.truncate(ctx, P.share(ctx, u, 0)))

    out = _run(prog, u, jit=True)
    got = _signed(out, l)
    want = xs.astype(object) // (2 ** f)
    diff = got - want
    assert set(np.unique(diff)) <= {0, 1}
    assert (diff == 1).any() and (diff == 0).any()  # the +1 LSB case occurs and is bounded


@pytest.mark.slow
def test_shapes_and_depth_bookkeeping():
    cfg = MPCConfig()
    with x64():
        ctx = Context(cfg, jax.random.PRNGKey(0))
        a = P.share(ctx, encode(np.ones((2, 3))), 0)
        b = P.share(ctx, encode(np.ones((2, 3))), 1)
        assert a.depth == 0 and a.data.shape == (2, 2, 3)
        m = P.mul(ctx, a, b)
        assert m.depth == 1
        assert P.add(ctx, m, a).depth == 1
        assert P.truncate(ctx, m).depth == 2
        assert P.truncate(ctx, m, mode="local").depth == 1
        r = P.relu(ctx, a)
        assert r.depth == 1 + 6 + 1 + 1  # msb (1 + log2 64) + b2a + mul
        with pytest.raises(ValueError, match="same shape"):
            P.mul(ctx, a, AShare(a.data[:, :1], 0))
