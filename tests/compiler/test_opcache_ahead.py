"""Compiling ahead (compiler/opcache.py `_compile_ahead`): a plan's first run lowers every program
from the values' types before it runs and compiles them in threads beside it. These tests check
that the types predict every program of real models, that prediction never decides a result
(a wrong or failed prediction is made again by the run), and that runs with and without it agree
bit for bit under the same randomness."""
from collections import Counter
import threading

import jax
import jax.numpy as jnp
import numpy as np

import pcformer
from pcformer.compiler import opcache, opcache_store

rng = np.random.default_rng(11)
X = jnp.asarray(rng.uniform(-2, 2, size=(6, 16)), jnp.float32)      # the client's
W = jnp.asarray(rng.uniform(-1, 1, size=(16, 16)), jnp.float32)     # the server's


def attention_block(x, w):
    """Products, a softmax (its max tree: comparisons of several element counts, chunked), a
    LayerNorm's rsqrt, GeLU, slices and a public constant: every kind of program a layer has."""
    h = x @ w
    s = jax.nn.softmax(h @ h.T / 4.0, axis=-1) @ h
    mu = s.mean(-1, keepdims=True)
    n = (s - mu) * jax.lax.rsqrt(((s - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    return jax.nn.gelu(n[:, :8]) + x[:, 8:] * 0.5


def ledger_key(entries):
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


def _compiled(threads: int, config=None):
    prog = pcformer.compile(attention_block, X, W, owners=(1, 0), policy="exact",
                            config=config or pcformer.MPCConfig(seed=7))
    prog._exe.compile_threads = threads
    return prog


def test_the_first_run_compiles_every_program_ahead_and_agrees_with_a_run_that_does_not():
    opcache.clear_templates()
    ahead = _compiled(2)
    a, ra = ahead.run(X, W)
    exe = ahead._exe
    # the values' types predicted every program: the run compiled none itself
    assert exe.made_in_run == 0
    assert exe.made_ahead == exe.distinct_executables > 10
    opcache.clear_templates()
    plain = _compiled(0)
    b, rb = plain.run(X, W)
    assert plain._exe.made_ahead == plain._exe.made_in_run == 0
    assert plain._exe._used == exe._used        # the same programs, found by the run itself
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ledger_key(ra.entries) == ledger_key(rb.entries)
    # once per plan: a second run finds every program in memory and lowers nothing ahead
    lowered = opcache.STATS["lowered"]
    c, _ = ahead.run(X, W)
    assert opcache.STATS["lowered"] == lowered and exe.made_ahead == exe.distinct_executables
    assert np.all(np.isfinite(np.asarray(c)))


def test_the_overflow_checks_op_by_op_plan_is_compiled_ahead_too():
    opcache.clear_templates()
    cfg = pcformer.MPCConfig(seed=7, check_overflow=True)
    ahead = _compiled(2, cfg)
    a, ra = ahead.run(X, W)
    assert ahead._exe.made_in_run == 0 and ahead._exe.made_ahead > 10
    opcache.clear_templates()
    b, rb = _compiled(0, cfg).run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ledger_key(ra.entries) == ledger_key(rb.entries)


def test_a_wrong_prediction_is_compiled_again_by_the_run_from_the_real_operands(monkeypatch):
    """Predict every plaintext value's dtype wrongly: those programs' signatures differ from the
    run's, so the run compiles its own, and the results do not change."""
    opcache.clear_templates()
    real = opcache.OpCachedExecutable._abstract

    def wrong(self, v):
        a = real(self, v)
        return a if isinstance(a, opcache.AShare) else jax.ShapeDtypeStruct(a.shape, np.int8)
    monkeypatch.setattr(opcache.OpCachedExecutable, "_abstract", wrong)
    ahead = _compiled(2)
    a, ra = ahead.run(X, W)
    assert ahead._exe.made_in_run > 0          # the mispredicted ones, made by the run
    monkeypatch.undo()
    opcache.clear_templates()
    b, rb = _compiled(0).run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ledger_key(ra.entries) == ledger_key(rb.entries)


def test_a_compile_that_fails_ahead_is_made_again_by_the_run(monkeypatch):
    """A compile thread's failure is not the run's: the run compiles that program itself (and a
    real error would surface there, in the run's own thread, with its usual message)."""
    opcache.clear_templates()
    real = opcache_store.compile

    def flaky(lowered, options=None):
        if threading.current_thread().name.startswith("pcformer-compile"):
            raise RuntimeError("compile thread failed")
        return real(lowered, options)
    monkeypatch.setattr(opcache_store, "compile", flaky)
    ahead = _compiled(2)
    a, _ = ahead.run(X, W)
    exe = ahead._exe
    assert exe.made_ahead == 0 and exe.made_in_run == exe.distinct_executables
    monkeypatch.undo()
    opcache.clear_templates()
    b, _ = _compiled(0).run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_persistent_cache_bypass_restores_jaxs_flags_after_overlapping_compiles():
    """Two threads inside the bypass at once: JAX's flags stay bypassed until both leave, then
    come back as they were (a per-thread save and restore would leave them bypassed)."""
    from jax._src import compilation_cache as cc
    from pcformer.compiler import compat
    before = (cc._cache_checked, cc._cache_used)
    inside, leave = threading.Barrier(2), threading.Event()
    seen = []

    def worker():
        with compat.persistent_cache_bypassed():
            inside.wait()
            seen.append((cc._cache_checked, cc._cache_used))
            leave.wait()
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    leave.set()
    for t in threads:
        t.join()
    assert seen == [(True, False)] * 2
    assert (cc._cache_checked, cc._cache_used) == before
