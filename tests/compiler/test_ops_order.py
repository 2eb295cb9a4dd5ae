"""Order and window operators on secret-shared inputs (issue 16, part 5): sort / argsort /
top_k / median by a sorting network, pooling, convolution as im2col; against float64 JAX on
client-owned, server-owned and already-secret inputs; static cost == measured."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from ops_util import check_op, ledger_key
from pcformer.compiler.lower_order import batcher_rounds

rng = np.random.default_rng(5)
V = rng.permutation(np.linspace(-3, 3, 10)).astype(np.float32).reshape(2, 5)
IMG = rng.normal(size=(1, 5, 5, 3)).astype(np.float32)
KER = (rng.normal(size=(3, 3, 3, 4)) * 0.3).astype(np.float32)
NHWC = ("NHWC", "HWIO", "NHWC")

CASES = {
    "sort_argsort": (lambda a: (jnp.sort(a), jnp.sort(a, axis=0), jnp.argsort(a)), (V,)),
    "top_k": (lambda a: jax.lax.top_k(a, 3), (V,)),
    "median": (lambda a: jnp.median(a, axis=1), (V,)),
    "pooling": (lambda a: (nn.max_pool(a, (2, 2), (2, 2)), nn.avg_pool(a, (2, 2), (1, 1)),
                           nn.max_pool(a, (3, 3), (2, 2), padding="SAME"),
                           jax.lax.reduce_window(a, jnp.inf, jax.lax.min, (1, 2, 2, 1),
                                                 (1, 2, 2, 1), "VALID")), (IMG,)),
    "conv": (lambda a, w: (jax.lax.conv_general_dilated(a, w, (1, 1), "SAME",
                                                        dimension_numbers=NHWC),
                           jax.lax.conv_general_dilated(a, w, (2, 2), "VALID",
                                                        dimension_numbers=NHWC)), (IMG, KER)),
    "conv_nchw": (lambda a, w: jax.lax.conv(a, w, (1, 1), "VALID"),
                  (IMG.transpose(0, 3, 1, 2), KER.transpose(3, 2, 0, 1))),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.slow
def test_order_op(name):
    fn, args = CASES[name]
    check_op(fn, *args, atol=1e-3, rtol=0)


def test_batcher_network_sorts_and_rounds_are_log_squared():
    r = np.random.default_rng(0)
    for n in range(1, 33):
        x = list(r.normal(size=n))
        for pairs in batcher_rounds(n):
            flat = [i for p in pairs for i in p]
            assert len(flat) == len(set(flat))          # disjoint within a round
            for i, j in pairs:
                if x[i] > x[j]:
                    x[i], x[j] = x[j], x[i]
        assert x == sorted(x)
        k = max(1, (n - 1).bit_length())
        assert len(batcher_rounds(n)) <= k * (k + 1) // 2


@pytest.mark.slow
def test_sort_uses_one_comparison_per_network_round():
    _, rep = check_op(jnp.sort, V, atol=1e-3, rtol=0, kinds=("client",))
    prog = pcformer.compile(lambda a, z: jnp.sort(a + z), V, np.zeros((), np.float32),
                            owners=(1, 0), policy=None)
    assert sum(op.name == "drelu" for op in prog.ir.ops) == len(batcher_rounds(5))


def test_conv_with_the_servers_kernel_uses_the_server_weight_protocol():
    fn = lambda a, w: jax.lax.conv_general_dilated(a, w, (1, 1), "SAME",  # noqa: E731
                                                   dimension_numbers=NHWC)
    prog = pcformer.compile(fn, IMG, KER, owners=(1, 0), policy=None)
    names = [op.name for op in prog.ir.ops if op.kind == "protocol"]
    assert "dot_general_private" in names and "dot_general" not in names
    out, rep = prog.run(IMG, KER)
    np.testing.assert_allclose(np.asarray(out), np.asarray(fn(IMG, KER)), atol=1e-3)
    assert ledger_key(prog.cost.entries) == ledger_key(rep.entries)


@pytest.mark.parametrize("config", [pcformer.MPCConfig(mode="ideal"),
                                    pcformer.MPCConfig(ring_bits=32, frac_bits=12)],
                         ids=["ideal", "ring32"])
@pytest.mark.slow
def test_new_ops_in_ideal_mode_and_on_the_32_bit_ring(config):
    """They are built from existing protocols: ideal mode has their rules, same ledger.
    (log's octave thresholds reach 2^24: the 64-bit ring's range, not the 32-bit one's.)"""
    x = rng.permutation(np.linspace(-3, 3, 8)).astype(np.float32)
    log = (lambda a: jnp.log(jnp.abs(a) + 0.5)) if config.ring_bits == 64 else jnp.abs  # noqa
    check_op(lambda a: (jnp.sort(a), jnp.floor(a), log(a), jnp.sin(a),
                        a == jnp.round(a), jnp.mean(a * 0.3)),
             x, config=config, kinds=("client",), atol=2e-2, rtol=0)
