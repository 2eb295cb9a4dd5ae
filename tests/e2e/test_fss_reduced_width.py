"""SIGMA's reduced-width comparisons (`MPCConfig(protocols="fss", compare_bits=n)`): the FSS
family's DReLU/ReLU/less/max use n-bit openings and (n-1)-level DCF keys; the static cost follows;
the declaration is checked by the overflow oracle and the static range analysis, which name the
width they enforce (tests/runtime/test_fss_compare_bits.py: the protocols)."""
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.runtime import MPCConfig

N = 24          # the declared width under test (frac_bits 16: values |x| < 2^(N-2-16) = 64)


def test_compare_bits_is_validated():
    assert MPCConfig().compare_bits is None
    assert MPCConfig(protocols="fss", compare_bits=N).compare_bits == N
    with pytest.raises(ValueError, match="fss' protocol family only"):
        MPCConfig(compare_bits=N)                      # the Beaver family compares on the ring
    with pytest.raises(ValueError, match=r"compare_bits must be in \[18, 64\]"):
        MPCConfig(protocols="fss", compare_bits=17)
    with pytest.raises(ValueError, match=r"compare_bits must be in \[18, 64\]"):
        MPCConfig(protocols="fss", compare_bits=65)
    with pytest.raises(ValueError, match="or an int"):
        MPCConfig(protocols="fss", compare_bits=True)


# ----------------------------------------------------------------------------- whole programs
def _net(x, w):
    """A ReLU, a max tree and a comparison of a private product."""
    h = x @ w
    return jnp.maximum(h, 0.0), jnp.max(h, axis=-1), h > 0.25


@pytest.fixture(scope="module")
def net_inputs():
    rng = np.random.default_rng(7)
    return (rng.uniform(-1, 1, (3, 4)).astype(np.float32),
            rng.uniform(-1, 1, (4, 6)).astype(np.float32))


def _compile(inputs, **cfg):
    return pcformer.compile(_net, *inputs, owners=(1, 0), policy=None,
                            config=MPCConfig(seed=0, protocols="fss", **cfg),
                            compiler_options={"xla_backend_optimization_level": 0})


@pytest.fixture(scope="module")
def narrow_prog(net_inputs):
    return _compile(net_inputs, compare_bits=N, check_overflow=True)


def test_reduced_width_program_matches_plaintext_with_fewer_key_bytes(net_inputs, narrow_prog):
    outs, report = narrow_prog.run(*net_inputs)
    ref = _net(*net_inputs)
    np.testing.assert_allclose(np.asarray(outs[0]), np.asarray(ref[0]), atol=1e-3)
    np.testing.assert_allclose(np.asarray(outs[1]), np.asarray(ref[1]), atol=1e-3)
    np.testing.assert_array_equal(np.asarray(outs[2]), np.asarray(ref[2]))
    assert report.overflow is None
    assert report.totals() == narrow_prog.cost.totals()
    wide = _compile(net_inputs).cost.totals()
    narrow = narrow_prog.cost.totals()
    assert narrow["online"]["rounds"] == wide["online"]["rounds"]
    assert max(narrow["offline"]["bytes"]) < max(wide["offline"]["bytes"])
    assert max(narrow["online"]["bytes"]) < max(wide["online"]["bytes"])   # drelu opens N bits


def test_the_oracle_reports_a_value_past_the_declared_width(net_inputs, narrow_prog):
    """|h| reaches 2^(N-1-16) = 128 with inputs scaled by 100: inside the ring's safe bound,
    past what compare_bits declares for the relu's operand; the oracle names the width."""
    big = (net_inputs[0] * 100, net_inputs[1])
    with pytest.warns(RuntimeWarning, match=f"compare_bits={N}"):
        _, report = narrow_prog.run(*big)
    assert report.overflow is not None and report.overflow.bound == 2.0 ** (N - 1 - 16)
    assert "test_fss_reduced_width.py" in report.overflow.where


def test_the_range_analysis_checks_the_declared_width(narrow_prog):
    assert not list(narrow_prog.ranges(1.0, 1.0))         # |h| <= 4: fits 24 bits
    found = list(narrow_prog.ranges(100.0, 1.0))           # |h| <= 400: past 2^(24-1-16)
    assert found and all(f"compare_bits={N}" in str(f) for f in found)
    wide = MPCConfig(protocols="fss")
    from pcformer.compiler import ranges
    assert not ranges.comparison_bounds(narrow_prog.ir, wide)   # unset: the safe bound rules


def test_run_and_cost_take_compare_bits():
    """(the benchmark's flag: test_fss_family.py::test_benchmark_takes_protocols)"""
    from pcformer import cli
    assert "compare_bits" in cli.COMMANDS["run"].flags
    assert "compare_bits" in cli.COMMANDS["cost"].flags
