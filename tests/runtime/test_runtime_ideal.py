"""MPCConfig(mode="ideal") against protocol mode: same ledger, same outputs, smaller programs.

Ideal mode computes each op's functionality on reconstructed values and returns fresh shares; the
ledger comes from the real protocol run abstractly (`Context.shadow`). Here every protocol op is
run in both modes on the same inputs: ledger entries (op, detail, scope, phase, bits, depth) must
be identical, output depths and widths identical, outputs bit-exact for deterministic ops and
with the same error distribution for truncation. Protocol-mode programs run eagerly (op by op)
where they are large, because XLA's compile of a whole protocol program is slow on 2 cores.
"""
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer.runtime import AShare, BShare, Context, MPCConfig, x64
from pcformer.runtime import protocols as P


def _open(v):
    """Reconstruct shares (AShare: sum, BShare: xor) as numpy, with (depth, width) metadata."""
    if isinstance(v, AShare):
        d = np.asarray(v.data)
        return d[0] + d[1], (v.depth, None)
    if isinstance(v, BShare):
        d = np.asarray(v.data)
        return d[0] ^ d[1], (v.depth, v.width)
    if isinstance(v, (tuple, list)):
        opened = [_open(u) for u in v]
        return [o[0] for o in opened], [o[1] for o in opened]
    return np.asarray(v), None


def _both(fn, cfg, *args, jit=False):
    """fn(ctx, *args) -> dict of shares, run in protocol and ideal mode.

    Returns {mode: (opened outputs, metadata, ledger entries, raw outputs)}."""
    res = {}
    for mode in ("protocol", "ideal"):
        c = dataclasses.replace(cfg, mode=mode)
        holder = {}

        def prog(key, *a):
            ctx = Context(c, key)
            holder["ledger"] = ctx.ledger
            with ctx.scope("blk"):
                return fn(ctx, *a)

        with x64():
            raw = (jax.jit(prog) if jit else prog)(jax.random.PRNGKey(5), *args)
            raw = jax.tree_util.tree_map(np.asarray, raw)
        opened = {k: _open(v) for k, v in raw.items()}
        res[mode] = ({k: o[0] for k, o in opened.items()}, {k: o[1] for k, o in opened.items()},
                     list(holder["ledger"].entries), raw)
    return res


def _ring(l, shape, rng, lo=-(2 ** 20), hi=2 ** 20):
    v = rng.integers(lo, hi, size=shape, dtype=np.int64)
    return v.astype(np.uint64) if l == 64 else v.astype(np.int32).view(np.uint32)


def _deterministic_ops(ctx, x, y, X, Y, W, w):
    sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
    sX, sY = P.share(ctx, X, 1), P.share(ctx, Y, 0)
    bx, by = P.a2b(ctx, sx), P.a2b(ctx, sy)
    return {
        "mul": P.mul(ctx, sx, sy),
        "square": P.square(ctx, sx),
        "dot_general": P.dot_general(ctx, sX, sY),
        "mul_private": P.mul_private(ctx, sx, w, 0, weight_id="w1"),
        "mul_private_plain": P.mul_private(ctx, y, w, 0, weight_id="w2"),
        "dgp": P.dot_general_private(ctx, sX, W, 0, weight_id="W"),
        "dgp_left": P.dot_general_private(ctx, sX, W.T, 1, weight_id="WT", w_on_left=True,
                                          dimension_numbers=(((1,), (1,)), ((), ()))),
        "a2b": bx,
        "and": P.and_(ctx, bx, by),
        "msb": P.msb(ctx, sx),
        "b2a": P.b2a(ctx, P.msb(ctx, sy)),
        "drelu": P.drelu(ctx, sx),
        "relu": P.relu(ctx, sx),
        "less": P.less(ctx, sx, sy),
        "less_public": P.less_public(ctx, sx, 7),
        "select": P.select(ctx, P.drelu(ctx, sy), sx, sy),
        "max": P.max(ctx, sX, axis=1),
        "argmax": P.argmax(ctx, sX, axis=0),
        "max_argmax": P.max_argmax(ctx, sX),
        "ties": P.argmax(ctx, P.share(ctx, jnp.zeros_like(X), 0)),
    }


@pytest.mark.parametrize("l", [64, 32])
@pytest.mark.slow
def test_deterministic_ops_match_protocol_mode(l):
    rng = np.random.default_rng(l)
    cfg = MPCConfig(ring_bits=l, frac_bits=12 if l == 32 else 16)
    x, y = _ring(l, (2, 6), rng), _ring(l, (2, 6), rng)
    x[0, :3] = np.array([0, 1, 2 ** l - 1], dtype=object).astype(x.dtype)
    X, Y, W = _ring(l, (3, 5), rng), _ring(l, (5, 2), rng), _ring(l, (5, 4), rng)
    X[1, 2] = X[1, 4]                                   # a tie for argmax
    w = _ring(l, (2, 6), rng)
    res = _both(_deterministic_ops, cfg, x, y, X, Y, W, w)
    (po, pm, pl, _), (io, im, il, _) = res["protocol"], res["ideal"]
    assert len(pl) > 50 and pl == il                    # identical entries, in order
    assert pm == im                                     # depths and widths
    for k in po:
        a, b = po[k], io[k]
        if isinstance(a, list):
            assert all(np.array_equal(u, v) for u, v in zip(a, b)), k
        else:
            assert np.array_equal(a, b), k
    # and the protocol's outputs are the right functions (so equality is not vacuous)
    assert np.array_equal(po["mul"], x * y)
    assert np.array_equal(po["argmax"], np.argmax(X.view(np.int64 if l == 64 else np.int32), 0))


def test_truncation_error_distribution_matches():
    """Error vs floor(x / 2^f): dealer and local both in {0, 1} LSB (for |x| << 2^(l-1)), with the
    same frequency, overall and as a function of the low bits, in both modes."""
    rng = np.random.default_rng(0)
    n = 4000
    f = 16
    v = rng.integers(-(2 ** 40), 2 ** 40, size=n, dtype=np.int64)
    x = v.astype(np.uint64)
    floor = v >> f
    low = (v & ((1 << f) - 1)) / 2 ** f
    for tm in ("dealer", "local"):
        cfg = MPCConfig(trunc_mode=tm)
        res = _both(lambda ctx, x: {"t": P.truncate(ctx, P.share(ctx, x, 0))}, cfg, x, jit=True)
        assert res["protocol"][2] == res["ideal"][2]
        assert res["protocol"][1] == res["ideal"][1]
        errs = {}
        for mode in res:
            e = res[mode][0]["t"].view(np.int64) - floor
            assert set(np.unique(e)) <= {0, 1}, (tm, mode, np.unique(e))
            errs[mode] = e
        p, i = errs["protocol"].mean(), errs["ideal"].mean()
        print(f"truncate {tm}: P(error=1) protocol {p:.3f} ideal {i:.3f}")
        assert 0.05 < p < 0.95 and abs(p - i) < 0.04
        # the error probability grows with the low bits in both modes (dealer: P = low bits)
        for mode in errs:
            hi_low, lo_low = errs[mode][low > 0.75].mean(), errs[mode][low < 0.25].mean()
            assert hi_low - lo_low > 0.3, (tm, mode, hi_low, lo_low)


def test_ideal_shares_look_uniform_per_party():
    """Each party's share of an ideal output alone is uniform: every bit position ~ Bernoulli(1/2),
    even for a constant output (relu of zeros is 0)."""
    n = 4096
    cfg = MPCConfig(mode="ideal")
    with x64():
        def prog(key, x):
            ctx = Context(cfg, key)
            s = P.share(ctx, x, 0)
            return P.relu(ctx, s).data, P.msb(ctx, s).data
        a, b = jax.jit(prog)(jax.random.PRNGKey(1), jnp.zeros((n,), jnp.uint64))
        a, b = np.asarray(a), np.asarray(b)
    assert np.all(a[0] + a[1] == 0)
    for party in (0, 1):
        bits = (a[party][:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
        freq = bits.mean(axis=0)
        assert np.all(np.abs(freq - 0.5) < 0.05), (party, freq.min(), freq.max())
        assert abs((b[party] & 1).mean() - 0.5) < 0.05 and np.all(b[party] <= 1)
    assert np.all((b[0] ^ b[1]) == 0)


def _composed(ctx, x, y):
    sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
    r = P.relu(ctx, sx)
    t = P.truncate(ctx, P.mul(ctx, r, sy))
    return {"t": t, "lt": P.less(ctx, t, sy)}


@pytest.mark.slow
def test_composed_program_smaller_and_faster_in_ideal_mode():
    """The whole jitted program: same ledger; fewer StableHLO lines in ideal mode (asserted);
    compile and run times printed, not asserted (the CI machine is shared)."""
    shape = (8, 32)
    rng = np.random.default_rng(2)
    x = _ring(64, shape, rng, -(2 ** 24), 2 ** 24)
    y = _ring(64, shape, rng, -(2 ** 24), 2 ** 24)
    stats, ledgers, outs = {}, {}, {}
    for mode in ("protocol", "ideal"):
        cfg = MPCConfig(mode=mode)
        holder = {}

        def prog(key, x, y):
            ctx = Context(cfg, key)
            holder["l"] = ctx.ledger
            out = _composed(ctx, x, y)
            return {k: P.reveal(ctx, v) for k, v in out.items()}

        with x64():
            lo = jax.jit(prog).lower(jax.random.PRNGKey(0), x, y)
            lines = len(lo.as_text().splitlines())
            t0 = time.time()
            comp = lo.compile()
            tc = time.time() - t0
            jax.block_until_ready(comp(jax.random.PRNGKey(0), x, y))
            t0 = time.time()
            outs[mode] = jax.tree_util.tree_map(np.asarray, comp(jax.random.PRNGKey(0), x, y))
            tr = time.time() - t0
        stats[mode] = (lines, tc, tr)
        ledgers[mode] = list(holder["l"].entries)
    (pl, pc, pr), (il, ic, ir) = stats["protocol"], stats["ideal"]
    print(f"composed {shape}: StableHLO lines {pl} -> {il} ({pl / il:.1f}x), compile "
          f"{pc:.2f}s -> {ic:.2f}s ({pc / ic:.1f}x), run {pr * 1e3:.1f}ms -> {ir * 1e3:.1f}ms "
          f"({pr / max(ir, 1e-9):.1f}x)")
    assert ledgers["protocol"] == ledgers["ideal"] and len(ledgers["ideal"]) > 10
    assert il * 2 < pl
    # truncation differs by at most 1 LSB between modes
    for k in outs["ideal"]:
        d = outs["ideal"][k].view(np.int64) - outs["protocol"][k].view(np.int64)
        assert np.all(np.abs(d) <= 1), k


def test_ideal_mode_errors_match_protocol_mode():
    """Misuse fails the same way: the shadow runs the real protocol, so its checks still fire."""
    with x64():
        ctx = Context(MPCConfig(mode="ideal"), jax.random.PRNGKey(0))
        s = P.share(ctx, jnp.zeros((3,), jnp.uint64), 0)
        with pytest.raises(ValueError, match="width 1"):
            P.b2a(ctx, P.a2b(ctx, s))
        with pytest.raises(ValueError, match="same shape"):
            P.mul(ctx, s, P.share(ctx, jnp.zeros((4,), jnp.uint64), 0))
