"""Attacks on the simulated protocol, as a semi-honest party would try them (issue 15).

A party's view is what it receives. Each attack runs the protocol twice with inputs that differ
in ONE token (or with two sets of weights) and looks at the difference of the two views: with
fresh masks it is uniform; with a reused mask it IS the difference of the secrets (all zeros but
one position), which is what the code before this fix sent:
1. the same keys in every Program, process and whole-program run (seed 0 + a run counter);
2. setup masks from (seed, op index): two deployments' openings F = W - B differ by W1 - W2;
3. a client's one-hot opened at "setup" with a fixed mask every run;
4. overflow and non-finite inputs silently wrong.
The audit log is a SIMULATOR-ONLY view (`execute.received`).
"""
import json
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer import MPCConfig
from pcformer.compiler import execute
from pcformer.runtime import ring

V, S, D = 64, 8, 4            # vocabulary, tokens, embedding width
rng = np.random.default_rng(11)
TABLE = jnp.asarray(rng.normal(size=(V, D)), jnp.float32)
IDS_A = jnp.asarray(rng.integers(0, V, (1, S)), jnp.int32)
IDS_B = IDS_A.at[0, 3].set((IDS_A[0, 3] + 1) % V)         # one token differs


def embed(table, ids):
    return jnp.take(table, ids, axis=0)


def _audited(fn, *args, owners, executor="op", config=MPCConfig()):
    prog = pcformer.compile(fn, *args, owners=owners, policy=None, executor=executor,
                            config=config)
    prog._exe.audit = True
    return prog


def _view(prog, *args, party=0, phases=("online", "setup")):
    """The arrays `party` received in one run, flattened to one uint64 vector per message."""
    prog.run(*args)
    return [np.asarray(a).ravel() for a in execute.received(prog._exe.audit_log, party, phases)]


def _chi2_high_bits(v, bins=16):
    counts = np.bincount((v >> np.uint64(60)).astype(np.int64), minlength=bins)
    expected = len(v) / bins
    return float(((counts - expected) ** 2 / expected).sum())


def assert_fresh(view_a, view_b):
    """Two views whose difference looks uniform: no message repeats an element, and the high
    bits of the differences pass a chi-square test (15 d.o.f.: 50 is p ~ 1e-5)."""
    assert view_a and len(view_a) == len(view_b)
    for a, b in zip(view_a, view_b):
        d = a - b                                     # wrapping uint64 difference
        assert np.mean(d == 0) < 0.01, "a message repeats: the difference is the inputs'"
    d = np.concatenate(view_a) - np.concatenate(view_b)
    assert len(d) >= 256
    assert _chi2_high_bits(d) < 50


# ------------------------------------------------------------------ 1. fresh keys
def test_two_runs_of_the_whole_program_executor_use_fresh_masks():
    prog = _audited(embed, TABLE, IDS_A, owners=(0, 1), executor="program")
    assert_fresh(_view(prog, TABLE, IDS_A), _view(prog, TABLE, IDS_B))


def test_two_programs_use_fresh_masks():
    # the CLI's path: every `pcformer run` builds its own Program (op-cached executor)
    a = _audited(embed, TABLE, IDS_A, owners=(0, 1))
    b = _audited(embed, TABLE, IDS_A, owners=(0, 1))
    va, vb = _view(a, TABLE, IDS_A), _view(b, TABLE, IDS_B)
    assert_fresh(va, vb)
    traces = a.trace_count
    assert_fresh(va, _view(a, TABLE, IDS_B))      # and two runs of one Program
    assert a.trace_count == traces      # keys are traced arguments: fresh keys never retrace


_PROCESS = textwrap.dedent("""
    import sys, jax.numpy as jnp, numpy as np, pcformer
    from pcformer.compiler import execute
    table = jnp.asarray(np.load(sys.argv[1])); ids = jnp.asarray(np.load(sys.argv[2]))
    prog = pcformer.compile(lambda t, i: jnp.take(t, i, axis=0), table, ids, owners=(0, 1),
                            policy=None)
    prog._exe.audit = True
    prog.run(table, ids)
    np.save(sys.argv[3], np.concatenate([np.asarray(a).ravel()
                                         for a in execute.received(prog._exe.audit_log, 0)]))
""")


@pytest.mark.slow
def test_two_processes_use_fresh_masks(tmp_path):
    np.save(tmp_path / "t.npy", np.asarray(TABLE))
    views = []
    for name, ids in (("a", IDS_A), ("b", IDS_B)):
        np.save(tmp_path / f"ids_{name}.npy", np.asarray(ids))
        out = tmp_path / f"view_{name}.npy"
        subprocess.run([sys.executable, "-c", _PROCESS, str(tmp_path / "t.npy"),
                        str(tmp_path / f"ids_{name}.npy"), str(out)], check=True, timeout=300)
        views.append([np.load(out)])
    assert_fresh(*views)


@pytest.mark.slow
def test_reproducible_seed_repeats_masks_and_says_so():
    cfg = MPCConfig(seed=5)
    a = _audited(embed, TABLE, IDS_A, owners=(0, 1), config=cfg)
    b = _audited(embed, TABLE, IDS_A, owners=(0, 1), config=cfg)
    va, vb = _view(a, TABLE, IDS_A), _view(b, TABLE, IDS_B)
    # the documented caveat, demonstrated: the difference of the views is the inputs'
    d = np.concatenate(va) - np.concatenate(vb)
    assert 0 < np.count_nonzero(d) <= 2
    _, rep = a.run(TABLE, IDS_A)
    assert rep.reproducible_seed == 5 and "NOT secure" in rep.security_warning
    js = json.loads(rep.dumps())
    assert js["reproducible_seed"] == 5 and "NOT secure" in js["warnings"][0]
    assert "NOT secure" in str(rep)
    _, fresh = pcformer.compile(embed, TABLE, IDS_A, owners=(0, 1), policy=None).run(TABLE, IDS_A)
    assert fresh.reproducible_seed is None and fresh.security_warning is None
    assert "warnings" not in fresh.to_json()


# ------------------------------------------------------------------ 2. setup masks per deployment
W1 = jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)
W2 = jnp.asarray(rng.normal(size=(16, 32)), jnp.float32)
X = jnp.asarray(rng.normal(size=(2, 16)), jnp.float32)


def dense(w, x):
    return x @ w


def _setup_view(prog, w):
    views = _view(prog, w, X, party=1, phases=("setup",))
    assert len(views) == 1 and views[0].size == w.size      # F = W - B, from the server
    return views[0]


def _encoded_difference(a, b):
    with ring.x64():
        return np.asarray(ring.encode(np.asarray(a, np.float64), 16, 64)
                          - ring.encode(np.asarray(b, np.float64), 16, 64)).ravel()


@pytest.mark.parametrize("config", [MPCConfig(), MPCConfig(seed=0)], ids=["fresh", "seeded"])
@pytest.mark.slow
def test_two_deployments_with_different_weights_have_independent_setup_views(config):
    f1 = _setup_view(_audited(dense, W1, X, owners=(0, 1), config=config), W1)
    f2 = _setup_view(_audited(dense, W2, X, owners=(0, 1), config=config), W2)
    d = f1 - f2
    assert not np.array_equal(d, _encoded_difference(W1, W2))   # the leak: F1 - F2 = W1 - W2
    assert np.mean(d == 0) < 0.01 and _chi2_high_bits(d) < 50


def test_one_program_rekeys_when_its_weights_change_and_amortises_otherwise():
    prog = _audited(dense, W1, X, owners=(0, 1))
    a = _setup_view(prog, W1)
    again = _setup_view(prog, W1)
    np.testing.assert_array_equal(a, again)      # same deployment: F opened once, reusable
    b = _setup_view(prog, W2)                    # new weights: a new deployment key
    assert prog._exe.deployment.count == 2
    d = a - b
    assert np.mean(d == 0) < 0.01 and _chi2_high_bits(d) < 50
    mutated = np.asarray(W1).copy()              # a numpy array mutated in place is re-hashed
    _setup_view(prog, mutated)
    mutated[0, 0] += 1.0
    _setup_view(prog, mutated)
    assert prog._exe.deployment.count == 4


def test_a_second_program_of_the_same_weights_is_a_new_deployment():
    a = _setup_view(_audited(dense, W1, X, owners=(0, 1)), W1)
    b = _setup_view(_audited(dense, W1, X, owners=(0, 1)), W1)
    assert np.mean(a - b == 0) < 0.01


# ------------------------------------------------------------------ 3. a client's index
def secret_table(t, x, ids):
    return jnp.take(t + x, ids, axis=0)     # a secret table indexed by the client's ids


def test_client_index_into_a_secret_table_is_opened_online_with_fresh_masks():
    x = jnp.asarray(rng.normal(size=(V, D)), jnp.float32)
    prog = _audited(secret_table, TABLE, x, IDS_A, owners=(0, 1, 1))
    held = [op for op in prog.ir.ops if op.name == "dot_general_private"]
    assert held and all(op.attrs["party"] == 1 for op in held)
    va = _view(prog, TABLE, x, IDS_A)
    out, rep = prog.run(TABLE, x, IDS_A)
    vb = _view(prog, TABLE, x, IDS_B)
    assert_fresh(va, vb)
    # nothing of the client's goes to the setup phase, and the per-run cost counts its opening
    t = rep.totals()
    assert t["setup"]["bytes"] == [0, 0]
    assert t["online"]["bytes"][1] >= S * V * 8       # F = onehot - B, |onehot| * l bits
    key = lambda es: sorted((e.op, e.phase, e.bits, e.depth) for e in es)
    assert key(rep.entries) == key(prog.cost.entries)
    np.testing.assert_allclose(np.asarray(out), np.asarray(TABLE + x)[np.asarray(IDS_A)],
                               atol=1e-3)


# ------------------------------------------------------------------ 4. overflow, bad inputs
def square_of_product(x, w):
    return (x @ w) ** 2 + 1


XO = jnp.full((1, 4), 1e6, jnp.float32)
WO = jnp.eye(4, dtype=jnp.float32)


@pytest.mark.parametrize("executor", ["op", "program"])
@pytest.mark.slow
def test_a_wrapping_product_is_caught_where_it_happens(executor):
    prog = pcformer.compile(square_of_product, XO, WO, owners=(1, 0), policy=None,
                            executor=executor, config=MPCConfig(check_overflow=True))
    with pytest.warns(RuntimeWarning, match="overflow"):
        out, rep = prog.run(XO, WO)
    # the ring wrapped (1e12 at scale 32 is beyond 2^63): the output is garbage, and now flagged
    assert abs(float(out[0, 0]) - 1e12) > 1e11
    ov = rep.overflow
    assert ov is not None and ov.op == "square"
    assert ov.max_abs == pytest.approx(1e12, rel=1e-3)
    assert "test_security_attacks.py" in ov.where


def test_static_range_analysis_warns_with_the_source_line():
    prog = pcformer.compile(square_of_product, XO, WO, owners=(1, 0), policy=None)
    found = list(prog.ranges(1e6, 1.0))
    assert [f.op for f in found] == ["square"]       # where it first happens, not downstream
    assert "test_security_attacks.py" in found[0].where
    assert not list(prog.ranges(10.0, 1.0))          # small inputs: nothing to report
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        pcformer.compile(square_of_product, XO, WO, owners=(1, 0), policy=None,
                         input_ranges="observed")
    msgs = [str(w.message) for w in ws if "range:" in str(w.message)]
    assert len(msgs) == 1 and "square" in msgs[0] and "test_security_attacks.py" in msgs[0]


def test_range_analysis_scope_is_the_module_path():
    import flax.linen as nn

    class Inner(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4, name="proj")(x)
            return h * h

    class Block(nn.Module):
        @nn.compact
        def __call__(self, x):
            return Inner(name="inner")(x) + 1.0

    m = Block()
    params = m.init(jax.random.PRNGKey(0), XO)
    prog = pcformer.compile(lambda p, x: m.apply(p, x), params, XO, owners=(0, 1), policy=None)
    found = list(prog.ranges(2.0, 1e6))
    assert [f.op for f in found] == ["square"]
    assert "inner" in found[0].scope and "test_security_attacks.py" in found[0].where


@pytest.mark.parametrize("bad, what", [(np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "inf"),
                                       (1e15, "encodable range")])
def test_run_refuses_non_finite_and_unencodable_inputs_naming_the_argument(bad, what):
    fn = lambda p, x: x["a"] @ p["w"]
    params = {"w": WO}
    prog = pcformer.compile(fn, params, {"a": XO * 0}, owners=(0, 1), policy=None)
    with pytest.raises(ValueError, match=rf"args\[1\]\['a'\].*{what}"):
        prog.run(params, {"a": XO.at[0, 2].set(bad)})
    with pytest.raises(ValueError, match=rf"args\[0\]\['w'\].*{what}"):
        prog.run({"w": WO.at[1, 1].set(bad)}, {"a": XO * 0})
    out, _ = prog.run(params, {"a": XO * 0 + 2.0})      # a good input still runs
    np.testing.assert_allclose(np.asarray(out), 2.0, atol=1e-3)


def test_report_lists_every_revealed_value_and_to_whom():
    prog = pcformer.compile(square_of_product, XO * 0, WO, owners=(1, 0), policy=None)
    rev = prog.cost.revealed
    assert len(rev) == 1 and rev[0]["to"].startswith("client") and rev[0]["shape"] == [1, 4]
    _, rep = prog.run(XO * 0, WO)
    assert rep.to_json()["revealed"] == rev


def test_seed_must_be_an_int_or_none():
    assert MPCConfig().seed is None and not MPCConfig().reproducible
    assert MPCConfig(seed=np.int64(3)).reproducible
    for bad in (1.5, "0", True):
        with pytest.raises(ValueError, match="seed"):
            MPCConfig(seed=bad)
