"""Op-cached execution: each protocol op is a small jit program, compiled once per signature.

Why. XLA's CPU compiler needs seconds per comparison circuit (one `msb` is ~3000 HLO ops) and
grows faster than linearly with program size: a whole transformer traced into ONE `jax.jit` takes
many minutes to compile, although it is the same few protocol ops over and over (every layer's
`truncate` on [128, 384] is the same program). Here each protocol op of the IR is traced on its
own, with inputs at round depth 0 and a placeholder scope; the lowered program is compiled once
per signature (op, attributes, operand types) and reused by every op that has it: a six-layer
MiniLM compiles each distinct op once. Signatures are as coarse as the protocols allow
(`opcache_plan.program_op`, from the op's registry entry): an elementwise op runs on flattened
operands, so one program serves every shape of one element count, and a Beaver truncation's
shift is a run-time argument, so one program serves every shift (one exact MiniLM layer: 59
protocol-op programs before, 34 now). A comparison (an op whose entry `chunks`) runs as a few
calls of the program of a smaller element count that divides its own (`_chunk_plan`; the
softmax max tree's seven counts: two programs). A secret that only programs read is stored
flat, and every program lays its operands out as it needs inside itself, where a reshape is
free (`opcache_plan.flat_values`; an eager reshape would copy). Each maximal run of
plaintext (`local`) and share-local ops between two protocol ops is one more cached program, a
*segment* (run eagerly, a layer's ~200 small ops cost one JAX dispatch each: about a third of
the run).

What stays exact. The ledger entries of a cached op are the ones its real protocol wrote through
the channel when it was traced; each use of the op places them at its own scope and shifts their
round depth by the depth of its deepest secret operand. This is the runtime's depth rule (every
protocol's messages and outputs lie at max(depth of its secret inputs) + their offset; a secret
operand can only be deeper, never shallower, than the messages that depend on it), so the
measured ledger is the one a whole-program trace writes (tests compare the two executors).

Share depths through a segment follow the share-local rule (a result lies at the max depth of
its secret operands, 0 without one): the segment program computes data only, and each result's
depth is the max over the segment inputs it depends on, found once per program from the IR.

What must differ between uses is a runtime argument, not a constant: each op's dealer key
(fresh every run, folded from the run key and the op's index inside the program by
`shares.fold_key`) and the setup key of its masks (the deployment's key mixed with the op
index, see deployment.py: fixed across the runs of one deployment, so a weight's mask B is
opened once, at setup, and never shared with another weight or deployment). Fresh keys never
recompile anything.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import ring
from pcformer.runtime import shares as _shares
from pcformer.runtime.shares import AShare

from . import execute, ir
from . import overflow as _overflow
from .deployment import Deployment, op_setup_key
from .opcache_plan import (ProgramOp, _Segment, _arrays, _kinds, _segment_signature,  # noqa: F401
                           _signature, as_layout, at_size, chunk_sizes, flat_values,
                           plan_segments, program_op)
# the templates' cache, XLA options and compile threads, under the names users and tests know
from .opcache_templates import (COMPILE_THREADS, SMALL_SEGMENT, _SCOPE_MARK, _TEMPLATES,
                                _Ahead, _compile_pool, _finish, _Template, op_program_defaults,
                                prepare_op, prepare_segment, small_segment_defaults)
from .opcache_templates import STATS, _TemplateCache, clear_templates  # noqa: F401

# At most this many calls of a smaller program run one op whose registry entry `chunks`
# (opcache_plan.chunk_sizes): one exact MiniLM layer's softmax max tree then compiles two ReLU
# programs instead of seven, and its ReLUs run no slower (benchmarks/README.md). 1: no chunking.
CHUNK_CALLS = 8


class OpCachedExecutable:
    """Same call and results as `execute.Executable`; one compiled program per op signature."""

    def __init__(self, prog: ir.Program, config, compiler_options: dict | None = None):
        self.prog = prog
        self.config = config
        # XLA options of every op and segment program (part of each signature: a template
        # compiled with other options is another template); the caller's win over the defaults
        self.compiler_options = {**op_program_defaults(), **dict(compiler_options or {})}
        self.small_segment_options = {**small_segment_defaults(), **dict(compiler_options or {})}
        self.trace_count = 0
        self.runs = 0
        self._used: set = set()
        self.audit = False          # SIMULATOR-ONLY: keep each run's messages (execute.received)
        self.audit_log: list = []
        self.deployment = Deployment(prog, config)
        self._salts: dict = {}      # op index -> its setup key, for the current deployment key
        self._salts_of = None
        self._sigs: dict = {}   # (step, operand kinds) -> signature: hashed once, not every run
        self._program_ops: dict = {}   # step -> ProgramOp
        self._flat_ids = self._flat_by_plan = frozenset()   # values stored flat (flat_values)
        self._flat_plan = None
        self._plan = None
        self.chunk_calls = CHUNK_CALLS   # read when the first run plans the chunks
        self._chunks = None              # step -> chunk size (opcache_plan.chunk_sizes)
        # threads compiling a first run's programs ahead of it (`_compile_ahead`); 0: none
        self.compile_threads = COMPILE_THREADS
        self._ahead: _Ahead | None = None
        self.made_ahead = self.made_in_run = 0   # templates of runs that compiled ahead
        self._ahead_plans: set = set()   # the plans whose first run compiled ahead
        self.progress = None    # optional callback(steps done, steps, XLA programs compiled)
        # optional {(op, operator class, result shape): [seconds, calls]}: when set, each
        # protocol op waits for its result and adds its wall time (a profile, not a fast run)
        self.op_times: dict | None = None

    @property
    def distinct_executables(self) -> int:
        """How many compiled op programs this program's ops use."""
        return len(self._used)

    def _cached_signature(self, step, args, make, layout=(), options=None) -> tuple:
        """The signature `make()` builds, hashed once per (step, operand kinds, output layout),
        with the XLA `options` it compiles with (default: the op programs')."""
        key = (step, _kinds(args), layout)
        sig = self._sigs.get(key)
        if sig is None:
            options = tuple(sorted((self.compiler_options if options is None
                                    else options).items()))
            sig = self._sigs[key] = (self.config, make()) + ((options,) if options else ())
        return sig

    def _program_op(self, k: int, op: ir.Op) -> ProgramOp:
        """The op as its program sees it (flat, traced attributes apart), found once per step."""
        p = self._program_ops.get(k)
        if p is None:
            entry = execute.protocol_entry(op, self.config)
            p = self._program_ops[k] = program_op(op, entry.elementwise, entry.traced_attrs)
        return p

    def _op_signature(self, k: int, pop: ProgramOp, args) -> tuple[tuple, bool]:
        """(signature, result stored flat) of op k's program on `args`, real or abstract."""
        # a shaped op's result stored flat is flattened inside its program (a flat op's result
        # is flat already; one stored shaped is reshaped by the caller: its program serves
        # several shapes)
        out_flat = not pop.flat and self.prog.ops[k].results[0].id in self._flat_ids
        sig = self._cached_signature(
            k, args, lambda: _signature(pop.op, args) + (pop.traced, out_flat), out_flat)
        return (sig + ("audit",) if self.audit else sig), out_flat   # audited: returns messages

    def _prepare_op(self, sig, pop: ProgramOp, args, out_flat: bool):
        """Op `pop`'s template loaded from disk, or its program lowered (opcache_templates)."""
        prepared = prepare_op(self.config, self.audit, sig, pop, args, out_flat,
                              self.compiler_options)
        self.trace_count += not isinstance(prepared, _Template)
        return prepared

    def _template(self, k: int, op: ir.Op, pop: ProgramOp, args) -> tuple[_Template, bool]:
        sig, out_flat = self._op_signature(k, pop, args)
        return self._obtain(sig, lambda: self._prepare_op(sig, pop, args, out_flat))

    def _obtain(self, sig, prepare) -> tuple[_Template, bool]:
        """The template of `sig` and whether this run had to wait for it: from memory, else the
        one compiled ahead (`_compile_ahead`), else loaded from disk or compiled now. Its
        `compile_s` is how long this run waited for it."""
        self._used.add(sig)
        t = _TEMPLATES.get(sig)
        if t is not None:
            return t, False
        t0 = time.perf_counter()
        t = self._ahead.take(sig) if self._ahead is not None else None
        if t is None:
            t = _finish(prepare())
            self.made_in_run += self._ahead is not None   # ahead, yet not predicted
        else:
            self.made_ahead += 1
        t = _TEMPLATES[sig] = dataclasses.replace(t, compile_s=time.perf_counter() - t0)
        return t, True

    def _segment_key(self, seg: _Segment, args) -> tuple[tuple, tuple, dict]:
        """(signature, which outputs are stored flat, XLA options) of a segment's program on
        `args`, real or abstract."""
        flat_out = tuple(v in self._flat_ids for v in seg.out_ids)
        options = (self.small_segment_options if seg.largest <= SMALL_SEGMENT
                   else self.compiler_options)
        sig = self._cached_signature(
            seg, args, lambda: _segment_signature(seg.ops, seg.in_ids, seg.out_ids, args)
            + (flat_out,), flat_out, options)
        return sig, flat_out, options

    def _segment(self, seg: _Segment, env) -> float:
        """Run a segment's compiled program (compiling it on first use); returns the seconds
        this run waited for it."""
        args = [env[v] for v in seg.in_ids]
        arrays = _arrays(args)
        sig, flat_out, options = self._segment_key(seg, args)
        t, fresh = self._obtain(
            sig, lambda: prepare_segment(self.config, sig, seg, args, flat_out, options))
        outs = t.compiled(arrays, seg.attr_values)
        for v, o, sh, dep in zip(seg.out_ids, outs, t.shared, seg.deps):
            if sh:   # the share-local depth rule: max over the secret inputs it depends on
                o = AShare(o, max((args[i].depth for i in dep if isinstance(args[i], AShare)),
                                  default=0))
            env[v] = o
        return t.compile_s if fresh else 0.0

    def _chunk_plan(self) -> dict:
        """The chunk size of each flat op whose registry entry `chunks`
        (opcache_plan.chunk_sizes), planned once."""
        if self._chunks is None:
            ops = {k: self._program_op(k, op) for k, op in enumerate(self.prog.ops)
                   if op.kind == "protocol" and execute.protocol_entry(op, self.config).chunks}
            self._chunks = chunk_sizes({k: p for k, p in ops.items() if p.flat},
                                       self.chunk_calls)
        return self._chunks

    def _calls(self, k: int, op: ir.Op, args) -> tuple[ProgramOp, int]:
        """The program op k runs and how many calls of it (`_chunk_plan`)."""
        pop = self._program_op(k, op)
        size = self._chunk_plan().get(k)
        if size and all(isinstance(a, AShare) for a in args):
            calls = pop.op.results[0].shape[0] // size
            if calls > 1:
                return at_size(pop, size), calls
        return pop, 1

    def _abstract(self, v: ir.Value):
        """What the run will hold for value `v`, as shapes (the storage rule of `flat_values`):
        a secret's share data in the ring's dtype, a plaintext array in its own."""
        if v.vis.is_secret:
            shape = (2, v.size) if v.id in self._flat_ids else (2,) + tuple(v.shape)
            return AShare(jax.ShapeDtypeStruct(shape, ring.ring_dtype(self.config.ring_bits)), 0)
        return jax.ShapeDtypeStruct(tuple(v.shape), np.dtype(v.dtype))

    def _compile_ahead(self, steps, ahead: _Ahead, threads: int) -> None:
        """Lower every program `steps` will run, from the values' types alone, and compile them
        in `threads` threads while this one lowers the next and the run follows.

        Why. A cold run compiles about a hundred small programs (one exact MiniLM layer: 101)
        one after the other, and each waits for the previous one's run: XLA's CPU compiler
        keeps ~1.5 cores busy, Python's lowering one. Lowered here first, their compiles
        overlap each other and the lowering. A program whose operands the types do not predict
        (its signature differs from the real one's) is simply compiled again when the run
        reaches it: prediction saves time, never decides a result."""
        pool = _compile_pool(threads)
        values = {v.id: v for v in self.prog.inputs}
        values.update((v.id, v) for op in self.prog.ops for v in op.results)

        def submit(fut, prepared):
            if isinstance(prepared, _Template):
                fut.set_result(prepared)
                return

            def job():   # under the run's 64-bit types, as a compile in the run would be
                if fut.set_running_or_notify_cancel():
                    try:
                        with ring.x64():
                            fut.set_result(_finish(prepared))
                    except Exception as e:   # noqa: BLE001 - the run makes it again
                        fut.set_exception(e)
            pool.submit(job)

        for step in steps:
            fut = None
            try:
                if isinstance(step, _Segment):
                    args = [self._abstract(values[v]) for v in step.in_ids]
                    sig, flat_out, options = self._segment_key(step, args)
                    fut = ahead.claim(sig)
                    if fut is not None:
                        submit(fut, prepare_segment(self.config, sig, step, args, flat_out,
                                                    options))
                    continue
                op = self.prog.ops[step]
                if op.kind != "protocol":
                    continue
                args = [self._abstract(v) for v in op.operands]
                pop, calls = self._calls(step, op, args)
                if calls > 1:   # one call's slices
                    n = pop.op.results[0].shape[0]
                    args = [AShare(jax.ShapeDtypeStruct((2, n), a.data.dtype), 0) for a in args]
                sig, out_flat = self._op_signature(step, pop, args)
                fut = ahead.claim(sig)
                if fut is not None:
                    submit(fut, self._prepare_op(sig, pop, args, out_flat))
            except Exception as e:   # noqa: BLE001 - the run makes it from its real operands
                if fut is not None:
                    fut.set_exception(e)

    def _protocol(self, k: int, op: ir.Op, args, run_key, setup_key):
        pop, calls = self._calls(k, op, args)
        if calls > 1:   # n / size calls of the size-element program, on slices of the operands
            parts = [jnp.split(as_layout(a, v.shape, True).data, calls, axis=-1)
                     for a, v in zip(args, op.operands)]
            chunks = [[AShare(p[c], a.depth) for p, a in zip(parts, args)] for c in range(calls)]
        else:
            chunks = [args]
        t, fresh = self._template(k, op, pop, chunks[0])
        shift = max((a.depth for a in args if isinstance(a, AShare)), default=0)
        attrs = tuple(np.int32(op.attrs[a]) for a in pop.traced)
        if self._salts_of != setup_key:
            self._salts, self._salts_of = {}, setup_key
        salt = self._salts.get(k)
        if salt is None:
            salt = self._salts[k] = op_setup_key(setup_key, k)
        t0 = time.perf_counter()
        datas = []
        for c, chunk in enumerate(chunks):
            # each call its own dealer key: index k for the first, past every op's index after
            d = t.compiled(_arrays(chunk), run_key, np.uint32(k + c * len(self.prog.ops)),
                           salt, attrs)
            if self.audit:
                d, payloads = d
                self.audit_log += [m + ([np.asarray(a) for a in p],)
                                   for m, p in zip(t.audit, payloads)]
            datas.append(d)
        data = datas[0] if calls == 1 else jnp.concatenate(datas, axis=-1)
        if self.op_times is not None:
            jax.block_until_ready(data)
            spent = self.op_times.setdefault((op.name, op.op_class, op.results[0].shape), [0, 0])
            spent[0] += time.perf_counter() - t0
            spent[1] += 1
        # the calls' messages lie at the same depths: one entry each, bits summed (an
        # elementwise op sends nothing at setup, which is keyed per op, not per call)
        assert calls == 1 or all(e.phase != "setup" for e in t.entries), op.name
        entries = [dataclasses.replace(
            e, scope=op.scope + e.scope[len(_SCOPE_MARK):] if e.scope.startswith(_SCOPE_MARK) else e.scope,
            op_class=e.op_class or op.op_class,   # the template ran under no class
            bits=(e.bits[0] * calls, e.bits[1] * calls),
            depth=e.depth + shift if e.phase == "online" else e.depth) for e in t.entries]
        if pop.flat and op.results[0].id not in self._flat_ids:   # back to the op's shape
            data = data.reshape(data.shape[:-1] + tuple(op.results[0].shape))
        out = data if t.out_depth is None else AShare(data, t.out_depth + shift)
        return out, entries, (t.compile_s if fresh else 0.0)

    def _flat_for(self, steps) -> frozenset:
        """The values stored flat under this plan (`flat_values`), found again when the plan
        changes (the overflow oracle's op-by-op steps, a test's eager plan)."""
        if self._flat_plan is not steps:
            self._flat_plan = steps
            self._flat_by_plan = flat_values(
                self.prog, list(steps), lambda k: self._program_op(k, self.prog.ops[k]).flat)
        return self._flat_by_plan

    def __call__(self, flat_inputs):
        """Returns (flat outputs, ledger entries, time dict, overflow or None)."""
        cfg = self.config
        setup_key = self.deployment.key(flat_inputs)
        run_key = _shares.run_key(cfg, self.runs)
        self.audit_log = []
        self.runs += 1
        entries, probes = [], []
        compile_s = 0.0
        t_start = time.perf_counter()
        with ring.x64():
            env: dict[int, Any] = {v.id: x if isinstance(x, AShare) else jnp.asarray(x)
                                   for v, x in zip(self.prog.inputs, flat_inputs)}
            if self._plan is None:
                self._plan = plan_segments(self.prog)
            # the overflow oracle probes every secret result: that path runs op by op
            steps = range(len(self.prog.ops)) if cfg.check_overflow else self._plan
            self._flat_ids = self._flat_for(steps)
            # a plan's first run lowers its programs before running and compiles them beside
            plan = "op by op" if cfg.check_overflow else "segments"
            if self.compile_threads and plan not in self._ahead_plans:
                self._ahead_plans.add(plan)
                self._ahead = _Ahead()
                t_ahead = time.perf_counter()
                self._compile_ahead(steps, self._ahead, self.compile_threads)
                compile_s += time.perf_counter() - t_ahead   # lowering is compile time
            compiled = 0

            def protocol(k, op, args):
                nonlocal compile_s, compiled
                out, es, c = self._protocol(k, op, args, run_key, setup_key)
                entries.extend(es)
                compile_s, compiled = compile_s + c, compiled + (c > 0)
                return out

            def probe(k, op, args, r, o):
                if cfg.check_overflow and r.vis.is_secret:
                    probes.append(((k, r), float(_overflow.probe(cfg, op, args, o, r))))

            try:
                for done, step in enumerate(steps):
                    if self.progress is not None:
                        self.progress(done, len(steps), compiled)
                    if isinstance(step, _Segment):
                        c = self._segment(step, env)
                        compile_s, compiled = compile_s + c, compiled + (c > 0)
                        continue
                    execute.run_ops(cfg, [(step, self.prog.ops[step])], env, protocol, probe)
            finally:
                if self._ahead is not None:   # compiles the run no longer needs are dropped
                    self._ahead.cancel()
                    self._ahead = None
            outs = jax.block_until_ready([as_layout(env[v.id], v.shape, False)
                                          for v in self.prog.outputs])
        total = time.perf_counter() - t_start
        overflow = None
        if probes:
            overflow = _overflow.first_overflow(self.prog, cfg, [m for m, _ in probes],
                                              [x for _, x in probes])
        return outs, entries, {"compile_s": compile_s, "run_s": total - compile_s}, overflow
