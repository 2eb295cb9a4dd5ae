"""The FSS family's protocols (runtime/protocols/fss.py, fss_compare.py) against plaintext on
edge values (0, -1, the ring's limits, the LUT's domain edges) and random values, in protocol and
ideal mode, and their cost formulas (runtime/fss_costs.py) equal to the measured ledger."""
import numpy as np
import pytest

from fss_util import edge_values, ledger_of, np_dtype, run, shares_of, signed, value
from pcformer.runtime import AShare, MPCConfig, fss_costs, fss_dealer
from pcformer.runtime.protocols import fss
from pcformer.runtime.protocols import fss_compare as FC

N = 16
LUT_BITS = 4


def _inputs(l, seed=0):
    """Plaintext operands (ring arrays) and their shares for every op."""
    rng = np.random.default_rng(seed)
    x = edge_values(l, N, rng)                         # full range: drelu, relu
    small = edge_values(l, N, rng, bound_bits=l - 1)   # |x| < 2^(l-2): truncate, less, max
    red = edge_values(l, N, rng, bound_bits=12)        # fits 12 bits: reduced-width drelu
    idx = np.array([0, 15, 16, 2 ** l - 1, 7, 8] + list(range(N - 6)), np_dtype(l))  # lut edges
    b = (rng.integers(0, 2, N)).astype(np_dtype(l))
    mat = small[:15].reshape(3, 5).copy()
    mat[0, 3] = mat[0, 1]                              # a tie: the first index wins
    table = rng.integers(0, 2 ** l, 2 ** LUT_BITS, dtype=np_dtype(l))
    plain = dict(x=x, small=small, red=red, idx=idx, b=b, mat=mat, table=table)
    shared = {k: shares_of(v, l, rng) for k, v in plain.items() if k != "table"}
    return plain, shared


def _program(s, table):
    def fn(ctx):
        return {
            "drelu": fss.drelu(ctx, s["x"]), "relu": fss.relu(ctx, s["x"]),
            "drelu12": fss.drelu(ctx, s["red"], bits=12),
            "relu12": fss.relu(ctx, s["red"], bits=12),
            "truncate": fss.truncate(ctx, s["small"]),
            "select": fss.select(ctx, s["b"], s["x"], s["small"]),
            "lut": fss.lut(ctx, s["idx"], table, LUT_BITS),
            "less": FC.less(ctx, s["small"], s["red"]),
            "max": FC.max_(ctx, s["mat"], axis=1), "max0": FC.max_(ctx, s["mat"], axis=0),
            "argmax": FC.argmax(ctx, s["mat"], axis=1),
            "argmax0": FC.argmax(ctx, s["mat"], axis=0),
            "max_argmax": FC.max_argmax(ctx, s["mat"], axis=1)[0],
            "max_argmax.index": FC.max_argmax(ctx, s["mat"], axis=1)[1],
        }
    return fn


def _expected(p, l, f):
    sx, ss, sr, sm = (signed(p[k], l) for k in ("x", "small", "red", "mat"))
    return {
        "drelu": sx >= 0, "relu": np.maximum(sx, 0), "drelu12": sr >= 0,
        "relu12": np.maximum(sr, 0), "truncate": ss >> f,
        "select": np.where(p["b"] == 1, sx, ss), "lut": p["table"][p["idx"] % 2 ** LUT_BITS],
        "less": ss < sr, "max": sm.max(1), "max0": sm.max(0),
        "argmax": sm.argmax(1), "argmax0": sm.argmax(0),
        "max_argmax": sm.max(1), "max_argmax.index": sm.argmax(1),
    }


def _check(out, p, l, f):
    exp = _expected(p, l, f)
    for name, want in exp.items():
        got = value(out[name])
        want = np.asarray(want).astype(signed(got, l).dtype).view(got.dtype)
        np.testing.assert_array_equal(got, want, err_msg=name)


@pytest.mark.slow   # one XLA compile of every FSS op, twice: 30-40 s on the shared 2-core CPU
@pytest.mark.parametrize("l,f", [(64, 16), (32, 12)])
def test_ops_match_plaintext_and_ideal_mode_keeps_the_ledger(l, f):
    plain, shared = _inputs(l)
    proto_out, proto_ctx = run(MPCConfig(ring_bits=l, frac_bits=f),
                               _program(shared, plain["table"]), jit=True)
    _check(proto_out, plain, l, f)
    ideal_out, ideal_ctx = run(MPCConfig(ring_bits=l, frac_bits=f, mode="ideal"),
                               _program(shared, plain["table"]), jit=True)
    _check(ideal_out, plain, l, f)
    assert ideal_ctx.ledger.entries == proto_ctx.ledger.entries


def test_truncate_is_exact_on_random_values():
    """floor(x / 2^f) bit-exactly (no 1-LSB error), f in {1, 16, 40}, |x| < 2^62."""
    rng = np.random.default_rng(7)
    x = edge_values(64, 64, rng, bound_bits=63)
    sx = shares_of(x, 64, rng)
    out, _ = run(MPCConfig(), lambda ctx: [fss.truncate(ctx, sx, bits=f) for f in (1, 16, 40)])
    for f, o in zip((1, 16, 40), out):
        np.testing.assert_array_equal(signed(value(o), 64), signed(x, 64) >> f)


def _op_cases(s, table):
    """(op name, protocol call, cost-rule shapes and attributes)."""
    x, b = s["x"], s["b"]
    return [
        ("drelu", lambda c: fss.drelu(c, x), ((N,),), {}),
        ("drelu", lambda c: fss.drelu(c, x, bits=20), ((N,),), dict(bits=20)),
        ("relu", lambda c: fss.relu(c, x), ((N,),), {}),
        ("relu", lambda c: fss.relu(c, x, bits=20), ((N,),), dict(bits=20)),
        ("truncate", lambda c: fss.truncate(c, x), ((N,),), {}),
        ("truncate", lambda c: fss.truncate(c, x, bits=7), ((N,),), dict(bits=7)),
        ("select", lambda c: fss.select(c, b, x, x), ((N,), (N,), (N,)), {}),
        ("lut", lambda c: fss.lut(c, x, table, LUT_BITS), ((N,),), dict(bits=LUT_BITS)),
        ("less", lambda c: FC.less(c, x, x), ((N,), (N,)), {}),
        ("less_public", lambda c: FC.less_public(c, x, 3), ((N,),), {}),
        ("max", lambda c: FC.max_(c, s["mat"], axis=1), ((3, 5),), dict(axis=1)),
        ("max", lambda c: FC.max_(c, s["mat"], axis=0), ((3, 5),), dict(axis=0)),
        ("argmax", lambda c: FC.argmax(c, s["mat"], axis=1), ((3, 5),), dict(axis=1)),
        ("max_argmax", lambda c: FC.max_argmax(c, s["mat"], axis=0), ((3, 5),), dict(axis=0)),
    ]


@pytest.mark.parametrize("l,f", [(64, 16), (32, 12)])
def test_cost_formulas_equal_the_ledger(l, f):
    cfg = MPCConfig(ring_bits=l, frac_bits=f)
    plain, shared = _inputs(l, seed=1)
    depth = 3                                    # inputs arriving late: depths shift with them
    shared = {k: AShare(v.data, depth) for k, v in shared.items()}
    for op, call, shapes, attrs in _op_cases(shared, plain["table"]):
        measured = [(e.op, e.phase, tuple(e.bits), e.depth) for e in ledger_of(cfg, call)]
        msgs = fss_costs.COSTS[op](*shapes, config=cfg, **attrs)
        assert fss_costs.place(op, msgs, depth) == measured, (op, attrs)


def test_one_round_ops_and_their_formulas():
    cfg = MPCConfig()
    assert fss_costs.rounds(fss_costs.drelu((10,), cfg)) == 1
    assert fss_costs.online_bits(fss_costs.drelu((10,), cfg, bits=20)) == (200, 200)
    assert fss_costs.online_bits(fss_costs.select((10,), (10,), (10,), cfg)) == (650, 650)
    assert fss_costs.rounds(fss_costs.max_((4, 8), cfg)) == 3
    assert fss_costs.rounds(fss_costs.argmax((4, 8), cfg)) == 6
    # one party's DReLU key material: (n-1)(lambda + 2 + l) + l bits per element to each party
    p0, p1 = fss_dealer.offline_bytes("drelu", (8,), config=cfg)
    assert p0 == -(-8 * 63 * 128 // 8) + -(-8 * 63 * 2 // 8) + -(-8 * 64 * 64 // 8)
    assert p1 == p0 + 8 * 8                       # plus msb(r)'s share


def test_bad_arguments_are_refused():
    plain, shared = _inputs(64)
    with pytest.raises(ValueError, match="entries"):
        run(MPCConfig(), lambda c: fss.lut(c, shared["x"], plain["table"][:5], LUT_BITS))
    with pytest.raises(ValueError, match="bits must be"):
        run(MPCConfig(), lambda c: fss.drelu(c, shared["x"], bits=1))
    with pytest.raises(ValueError, match="truncation bits"):
        run(MPCConfig(), lambda c: fss.truncate(c, shared["x"], bits=63))


def test_drelu_relu_select_lut_on_edge_values():
    """The fast subset of the all-op test (not slow): 0, -1, +-2^63 limits, the LUT's domain
    edges (0, 15, 16 -> 0, -1 -> 15) and random values."""
    plain, s = _inputs(64, seed=2)
    out, _ = run(MPCConfig(), lambda c: (fss.drelu(c, s["x"]), fss.relu(c, s["x"]),
                                         fss.select(c, s["b"], s["x"], s["small"]),
                                         fss.lut(c, s["idx"], plain["table"], LUT_BITS)),
                 jit=True)
    np.testing.assert_array_equal(value(out[3]), plain["table"][plain["idx"] % 2 ** LUT_BITS])
    x, small = signed(plain["x"], 64), signed(plain["small"], 64)
    np.testing.assert_array_equal(signed(value(out[0]), 64), x >= 0)
    np.testing.assert_array_equal(signed(value(out[1]), 64), np.maximum(x, 0))
    np.testing.assert_array_equal(signed(value(out[2]), 64), np.where(plain["b"] == 1, x, small))


def test_one_lookup_reads_every_column_of_a_two_column_table_for_the_price_of_one():
    """A [2^n, k] table (a spline's value and slope columns): the one DPF's shares read against
    each column give table[x mod 2^n, :] exactly, on the domain's edges and random indices, with
    the same messages and key as a one-column lookup."""
    plain, s = _inputs(64, seed=4)
    rng = np.random.default_rng(4)
    cols = rng.integers(0, 2 ** 64, (2 ** LUT_BITS, 2), dtype=np.uint64)
    out, _ = run(MPCConfig(), lambda c: fss.lut(c, s["idx"], cols, LUT_BITS), jit=True)
    np.testing.assert_array_equal(value(out), cols[plain["idx"] % 2 ** LUT_BITS])
    two = [(e.op, e.phase, tuple(e.bits), e.depth)
           for e in ledger_of(MPCConfig(), lambda c: fss.lut(c, s["idx"], cols, LUT_BITS))]
    one = [(e.op, e.phase, tuple(e.bits), e.depth)
           for e in ledger_of(MPCConfig(), lambda c: fss.lut(c, s["idx"], cols[:, 0], LUT_BITS))]
    assert two == one
    with pytest.raises(ValueError, match="entries"):
        run(MPCConfig(), lambda c: fss.lut(c, s["idx"], cols[:5], LUT_BITS))
