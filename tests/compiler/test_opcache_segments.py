"""Segments: runs of local / share-local ops compiled as one cached program (compiler/opcache.py).

The segment path must compute exactly what the op-by-op eager path computes (bit for bit: the
same ring arithmetic), place every share at the same round depth (checked through the ledger,
whose depths shift by the depth of each protocol op's operands), and compile each distinct
segment once.
"""
from collections import Counter

import jax
import pytest
import jax.numpy as jnp
import numpy as np

import pcformer
from pcformer.compiler import opcache

rng = np.random.default_rng(3)
X = jnp.asarray(rng.uniform(-2, 2, size=(3, 8)), jnp.float32)      # the client's
W = jnp.asarray(rng.uniform(-1, 1, size=(8, 8)), jnp.float32)      # the server's


def block(x, w):
    """Secret adds, public products, slices, reshapes and transposes between protocol ops."""
    h = x @ w
    h = (h - h.mean(axis=-1, keepdims=True)) * 0.5 + 1.0
    h = jnp.concatenate([h[:, :4] * h[:, 4:], h[:, ::2].T.reshape(3, 4)], axis=-1)
    return jax.nn.relu(h) + x


def two_blocks(x, w):
    return block(block(x, w), w)


def ledger_key(entries):
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


def _runs(fn, config=pcformer.MPCConfig()):
    prog = pcformer.compile(fn, X, W, owners=(1, 0), policy=None, config=config)
    exe = prog._exe
    seg_out, seg_rep = prog.run(X, W)
    plan = exe._plan
    exe._plan = list(range(len(prog.ir.ops)))          # every op on its own, eagerly
    eager_out, eager_rep = prog.run(X, W)
    exe._plan = plan
    return prog, plan, (seg_out, seg_rep), (eager_out, eager_rep)


@pytest.mark.slow
def test_segments_compute_and_place_shares_like_the_eager_path():
    prog, plan, (seg_out, seg_rep), (eager_out, eager_rep) = _runs(two_blocks)
    segments = [s for s in plan if isinstance(s, opcache._Segment)]
    assert segments and sum(len(s.ops) for s in segments) == sum(
        op.kind in ("local", "share_local") for op in prog.ir.ops)
    # same dealer key per run index: run 0 (segments) and run 1 (eager) differ only in
    # randomness, so compare to the plaintext within tolerance and the ledgers exactly
    ref = np.asarray(prog.plaintext(X, W))
    np.testing.assert_allclose(np.asarray(seg_out), ref, atol=2e-3)
    np.testing.assert_allclose(np.asarray(eager_out), ref, atol=2e-3)
    assert ledger_key(seg_rep.entries) == ledger_key(eager_rep.entries)
    assert ledger_key(seg_rep.entries) == ledger_key(prog.cost.entries)


@pytest.mark.slow
def test_segments_are_bit_identical_to_eager_with_the_same_randomness():
    # the reproducible mode: run 7's keys are the same whichever path runs it
    prog, plan, _, _ = _runs(block, pcformer.MPCConfig(seed=0))
    exe = prog._exe
    exe.runs = 7
    a, _ = prog.run(X, W)
    exe._plan, exe.runs = list(range(len(prog.ir.ops))), 7
    b, _ = prog.run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_segment_outputs_are_what_later_ops_read():
    prog = pcformer.compile(block, X, W, owners=(1, 0), policy=None)
    plan = opcache.plan_segments(prog.ir)
    reads_after = {}
    for k, op in enumerate(prog.ir.ops):
        for v in op.operands:
            reads_after[v.id] = k
    outputs = {v.id for v in prog.ir.outputs}
    k = 0
    for step in plan:
        if not isinstance(step, opcache._Segment):
            k = step + 1
            continue
        end = k + len(step.ops)
        made = {r.id for op in step.ops for r in op.results}
        needed = {v for v in made if v in outputs or reads_after.get(v, -1) >= end}
        assert set(step.out_ids) == needed
        assert not set(step.in_ids) & made
        assert len(step.deps) == len(step.out_ids)
        k = end


def test_a_repeated_block_compiles_each_segment_once():
    prog = pcformer.compile(two_blocks, X, W, owners=(1, 0), policy=None)
    exe = prog._exe
    prog.run(X, W)
    segs = [s for s in exe._plan if isinstance(s, opcache._Segment)]
    sigs = {k for k in exe._used if k[1][0] == "segment"}
    assert len(sigs) < len(segs)          # the second block reuses the first block's segments
    before = len(opcache._TEMPLATES)
    _, rep = prog.run(X, W)
    assert len(opcache._TEMPLATES) == before and rep.time["compile_s"] == 0.0


def rescaled(x, w):
    """Two share-local products by public constants of very different magnitudes (encoded at
    different scales), each between protocol ops."""
    h = jax.nn.relu(x @ w)
    h = jax.nn.relu(h * 0.001)
    return jax.nn.relu(h * 0.05) * 1000.0


def test_segments_differing_only_in_scales_share_a_program_and_compute_the_same():
    prog = pcformer.compile(rescaled, X, W, owners=(1, 0), policy=None,
                            config=pcformer.MPCConfig(seed=0))
    exe = prog._exe
    exe.runs = 3
    a, _ = prog.run(X, W)
    segs = [s for s in exe._plan if isinstance(s, opcache._Segment)
            and any(op.name == "mul_public" for op in s.ops)]
    encs = {op.attrs["enc"] for s in segs for op in s.ops if op.name == "mul_public"}
    assert len(segs) == 3 and len(encs) == 3           # the scales do differ ...
    assert all(s.traced and len(s.attr_values) == len(s.traced) for s in segs)
    sigs = {sig for (step, _, _), sig in exe._sigs.items() if step in segs}
    assert len(sigs) == 1                              # ... and one program serves all
    # the same keys, op by op and eagerly (each scale a constant there): bit for bit equal
    exe._plan, exe.runs = list(range(len(prog.ir.ops))), 3
    b, _ = prog.run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(np.asarray(a), np.asarray(prog.plaintext(X, W)), atol=5e-2)


@pytest.mark.slow
def test_the_template_cache_is_bounded_and_an_evicted_op_compiles_again(monkeypatch):
    """A long process must not keep every compiled op program: each holds memory mappings, and
    past vm.max_map_count XLA's next compile segfaults. With a tiny limit the run still gives
    the same result, the cache never holds more than the limit, and a second run recompiles
    what was evicted."""
    reference, _ = pcformer.compile(two_blocks, X, W, owners=(1, 0), policy=None,
                                    config=pcformer.MPCConfig(seed=5)).run(X, W)
    small = opcache._TemplateCache(3)
    monkeypatch.setattr(opcache, "_TEMPLATES", small)
    prog = pcformer.compile(two_blocks, X, W, owners=(1, 0), policy=None,
                            config=pcformer.MPCConfig(seed=5))
    out, rep = prog.run(X, W)
    assert len(small) == 3
    np.testing.assert_array_equal(np.asarray(out), np.asarray(reference))
    _, rep = prog.run(X, W)
    assert rep.time["compile_s"] > 0.0    # the evicted programs were compiled again


def test_compiler_options_reach_the_op_programs_and_key_their_templates(monkeypatch):
    """`compiler_options` of the op executor: every op and segment program is compiled with them,
    under signatures of their own (a template compiled without them is never reused), and the
    outputs and ledger are those of the default options under the same randomness."""
    from pcformer.compiler import opcache_store
    seen = []
    real = opcache_store.compile
    monkeypatch.setattr(opcache_store, "compile",
                        lambda lowered, options=None: seen.append(options) or real(lowered, options))
    cfg = pcformer.MPCConfig(seed=5)
    base = pcformer.compile(block, X, W, owners=(1, 0), policy=None, config=cfg)
    a, ra = base.run(X, W)
    options = {"xla_backend_optimization_level": 1}
    fast = pcformer.compile(block, X, W, owners=(1, 0), policy=None, config=cfg,
                            compiler_options=options)
    seen.clear()
    b, rb = fast.run(X, W)
    # compiled again, each with the options (over the executor's defaults, which they keep)
    from pcformer.compiler.opcache import op_program_defaults
    assert seen and all(o == {**op_program_defaults(), **options} for o in seen)
    assert len(seen) == fast._exe.distinct_executables
    assert not fast._exe._used & base._exe._used
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ledger_key(ra.entries) == ledger_key(rb.entries)


def test_the_cpu_default_turns_xla_fusion_emitters_off_and_the_caller_can_turn_them_on():
    """Op programs compile with XLA's CPU fusion emitters off by default (faster compiles,
    benchmarks/README.md) and give what the emitters give, bit for bit."""
    import jax
    from pcformer.compiler.opcache import op_program_defaults
    if jax.default_backend() == "cpu":
        assert op_program_defaults() == {"xla_cpu_use_fusion_emitters": False}
    cfg = pcformer.MPCConfig(seed=5)
    default = pcformer.compile(block, X, W, owners=(1, 0), policy=None, config=cfg)
    emitters = pcformer.compile(block, X, W, owners=(1, 0), policy=None, config=cfg,
                                compiler_options={"xla_cpu_use_fusion_emitters": True})
    assert emitters._exe.compiler_options["xla_cpu_use_fusion_emitters"] is True
    a, ra = default.run(X, W)
    b, rb = emitters.run(X, W)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert ledger_key(ra.entries) == ledger_key(rb.entries)


def test_op_times_profile_every_protocol_op_without_changing_the_run():
    """The op executor's opt-in profile (benchmarks/bert_layers.py --op_times): one entry per
    (op, operator class, shape) of the protocol ops that ran, their calls counted; the run's
    outputs and ledger are those of a run without it (same seed, same run index)."""
    prog = pcformer.compile(block, X, W, owners=(1, 0), policy=None,
                            config=pcformer.MPCConfig(seed=0))
    exe = prog._exe
    exe.runs = 3
    plain_out, plain_rep = prog.run(X, W)
    exe.runs, exe.op_times = 3, {}
    out, rep = prog.run(X, W)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain_out))
    assert ledger_key(rep.entries) == ledger_key(plain_rep.entries)
    protocol_ops = Counter((op.name, op.op_class, op.results[0].shape)
                           for op in prog.ir.ops if op.kind == "protocol")
    assert {k: calls for k, (_, calls) in exe.op_times.items()} == dict(protocol_ops)
    assert all(sec > 0 for sec, _ in exe.op_times.values())
