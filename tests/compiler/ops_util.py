"""Helpers of the operator tests (tests/test_ops_*.py): run a JAX function on secret-shared
inputs in the three ways data becomes secret, compare with float64 JAX, and hold the static
cost equal to the measured ledger.

One compiled program per operator covers all three input kinds at once (client-owned,
server-owned, already secret-shared), which keeps the tests fast: the client's and the
server's inputs are made secret by adding a zero scalar that the OTHER party owns (the sum of
two parties' values is a protocol value), the third kind arrives as a `pcformer.Secret`.
"""
from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np

import pcformer
from pcformer.runtime import ring
from pcformer.runtime.shares import AShare

SPU = dict(atol=0.15, rtol=0.0)        # SecretFlow SPU's jnp test tolerance
CRYPTEN = dict(atol=0.01, rtol=0.05)   # CrypTen's test_mpc tolerance (either bound suffices)


def ledger_key(entries):
    return Counter((e.op, e.scope, e.op_class, e.phase, tuple(e.bits), e.depth) for e in entries)


def make_secret(x, config=pcformer.MPCConfig(), seed=0) -> pcformer.Secret:
    """x secret-shared (random additive shares) at the scale a secret input of its dtype has."""
    x = np.asarray(x)
    scale = config.frac_bits if np.issubdtype(x.dtype, np.floating) else 0
    enc = ring.encode(x.astype(np.float64), scale, config.ring_bits)
    dt = {64: np.uint64, 32: np.uint32}[config.ring_bits]
    r = np.random.default_rng(seed).integers(0, np.iinfo(dt).max, size=x.shape, dtype=dt,
                                            endpoint=True)
    with ring.x64():
        data = jnp.asarray(np.stack([np.asarray(enc, dt) - r, r]))
    return pcformer.Secret(AShare(data, 0), scale, config.ring_bits)


def reference(fn, *args):
    """fn in float64 JAX (integer and boolean inputs keep their dtype)."""
    with jax.enable_x64(True):
        cast = [jnp.asarray(np.asarray(a, np.float64)) if np.issubdtype(np.asarray(a).dtype,
                                                                        np.floating)
                else jnp.asarray(a) for a in args]
        return [np.asarray(o, np.float64) for o in jax.tree_util.tree_leaves(fn(*cast))]


def compile_three(fn, *args, policy="exact", config=pcformer.MPCConfig(), kinds=None):
    """(program, run arguments): fn applied to client-owned, server-owned and secret inputs."""
    n = len(args)
    kinds = kinds or ("client", "server", "secret")

    def three(*a):
        parts, zs, zc = a[:-2], a[-2], a[-1]
        outs = []
        for k, kind in enumerate(kinds):
            xs = parts[k * n:(k + 1) * n]
            if kind == "client":
                xs = [x + zs.astype(x.dtype) for x in xs]
            elif kind == "server":
                xs = [x + zc.astype(x.dtype) for x in xs]
            outs.append(fn(*xs))
        return tuple(outs)

    owner = {"client": 1, "server": 0, "secret": "secret"}
    owners = tuple(owner[k] for k in kinds for _ in range(n)) + (0, 1)
    z = np.zeros((), np.float32)
    run_args = [make_secret(a, config, seed=i) if kind == "secret" else jnp.asarray(a)
                for kind in kinds for i, a in enumerate(args)] + [z, z]
    prog = pcformer.compile(three, *run_args, owners=owners, policy=policy, config=config)
    return prog, run_args


def check_op(fn, *args, policy="exact", atol=0.01, rtol=0.05, config=pcformer.MPCConfig(),
             kinds=None):
    """Run fn privately on the three input kinds; every output within atol OR rtol of float64
    JAX (CrypTen's rule; rtol=0 gives SPU's absolute rule); static cost == measured ledger.
    Returns the outputs (one list of leaves per kind) and the report."""
    prog, run_args = compile_three(fn, *args, policy=policy, config=config, kinds=kinds)
    outs, report = prog.run(*run_args)
    ref = reference(fn, *args)
    got = []
    for out in outs:
        leaves = [np.asarray(o, np.float64) for o in jax.tree_util.tree_leaves(out)]
        assert len(leaves) == len(ref)
        for o, r in zip(leaves, ref):
            assert o.shape == r.shape, (o.shape, r.shape)
            err = np.abs(o - r)
            ok = (err <= atol) | (err <= rtol * np.abs(r))
            assert np.all(ok), f"max error {err.max():g} at {np.unravel_index(err.argmax(), err.shape)}: got {o.ravel()[err.argmax()]}, want {r.ravel()[err.argmax()]}"
        got.append(leaves)
    assert ledger_key(prog.cost.entries) == ledger_key(report.entries)
    assert prog.cost.to_json()["totals"] == report.to_json()["totals"]
    return got, report
