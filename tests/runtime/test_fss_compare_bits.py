"""SIGMA's reduced-width comparisons at the protocol level (`MPCConfig(compare_bits=n)` under the
FSS family): the declared width is every comparison's default, in protocol and ideal mode, and the
ledger is the cost formulas' at that width (tests/e2e/test_fss_reduced_width.py: whole programs)."""
import numpy as np
import pytest

from fss_util import edge_values, ledger_of, run, shares_of, signed, value
from pcformer.runtime import MPCConfig, fss_costs
from pcformer.runtime.protocols import fss
from pcformer.runtime.protocols import fss_compare as FC

N = 24          # the declared width under test


def _declared_ops(s):
    return lambda ctx: {"drelu": fss.drelu(ctx, s["x"]), "relu": fss.relu(ctx, s["x"]),
                        "less": FC.less(ctx, s["y"], s["z"]), "max": FC.max_(ctx, s["m"])}


@pytest.mark.parametrize("mode", [pytest.param("protocol", marks=pytest.mark.slow), "ideal"])
def test_the_declared_width_is_the_default_of_every_comparison(mode):
    rng = np.random.default_rng(5)
    x = edge_values(64, 64, rng, bound_bits=N)           # |x| < 2^(N-1): drelu, relu
    y, z = (edge_values(64, 64, rng, bound_bits=N - 1) for _ in range(2))
    m = edge_values(64, 48, rng, bound_bits=N - 1).reshape(6, 8)
    s = {k: shares_of(v, 64, rng) for k, v in dict(x=x, y=y, z=z, m=m).items()}
    cfg = MPCConfig(protocols="fss", compare_bits=N, mode=mode)
    out, ctx = run(cfg, _declared_ops(s), jit=True)
    xs, ys, zs, ms = (signed(v, 64) for v in (x, y, z, m))
    np.testing.assert_array_equal(signed(value(out["drelu"]), 64), (xs >= 0).astype(np.int64))
    np.testing.assert_array_equal(signed(value(out["relu"]), 64), np.maximum(xs, 0))
    np.testing.assert_array_equal(signed(value(out["less"]), 64), (ys < zs).astype(np.int64))
    np.testing.assert_array_equal(signed(value(out["max"]), 64), ms.max(axis=-1))
    # the ledger is the formulas' at the declared width, and the same as an explicit bits=N
    want = [m for fn, shapes in ((fss_costs.drelu, ((64,),)), (fss_costs.relu, ((64,),)),
                                 (fss_costs.less, ((64,), (64,))), (fss_costs.max_, ((6, 8),)))
            for m in fn(*shapes, config=cfg)]
    explicit = [m for fn, shapes in ((fss_costs.drelu, ((64,),)), (fss_costs.relu, ((64,),)),
                                     (fss_costs.less, ((64,), (64,))), (fss_costs.max_, ((6, 8),)))
                for m in fn(*shapes, config=MPCConfig(), bits=N)]
    assert want == explicit
    got = ctx.ledger.entries
    assert sorted(tuple(e.bits) for e in got) == sorted(tuple(m.bits) for m in want)


def test_drelu_opens_n_bits_and_its_key_has_n_minus_1_levels():
    shape = (10,)
    wide, narrow = MPCConfig(protocols="fss"), MPCConfig(protocols="fss", compare_bits=N)
    assert fss_costs.online_bits(fss_costs.drelu(shape, narrow)) == (10 * N, 10 * N)
    assert fss_costs.online_bits(fss_costs.drelu(shape, wide)) == (640, 640)
    key_bits = {c: sum(m.bits[0] for m in fss_costs.drelu(shape, c) if m.phase == "offline")
                for c in (wide, narrow)}
    per_level = 128 + 2 + 64                          # lambda, two control bits, one payload word
    assert key_bits[wide] - key_bits[narrow] == 10 * (64 - N) * per_level
    # the measured ledger agrees (an abstract trace: nothing computed)
    rng = np.random.default_rng(0)
    s = shares_of(np.zeros(shape, np.uint64), 64, rng)
    entries = ledger_of(narrow, lambda ctx: fss.drelu(ctx, s))
    assert [(e.phase, tuple(e.bits)) for e in entries if e.phase == "online"] == \
        [("online", (10 * N, 10 * N))]
