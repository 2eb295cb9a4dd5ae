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
(fresh every run, folded in from the run key and the op's index inside the program) and the
setup key of its masks (the deployment's key mixed with the op index, see deployment.py: fixed
across the runs of one deployment, so a weight's mask B is opened once, at setup, and never
shared with another weight or deployment). Fresh keys never recompile anything.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import ring
from pcformer.runtime import shares as _shares
from pcformer.runtime.shares import AShare, Context

from . import execute, ir, opcache_store
from . import overflow as _overflow
from .opcache_plan import (ProgramOp, _Segment, _arrays, _canonical, _kinds,  # noqa: F401
                           _segment_signature, _signature, as_layout, at_size, chunk_sizes,
                           flat_values, plan_segments, program_op)
from .deployment import Deployment, op_setup_key

_SCOPE_MARK = "\x00op"
# Op and segment programs this process traced and lowered (a template loaded from disk by
# opcache_store is neither): tests check that a warm process traces nothing.
STATS = {"lowered": 0}


@dataclasses.dataclass
class _Template:
    compiled: Any
    entries: list          # traced with inputs at depth 0, scope _SCOPE_MARK
    out_depth: int | None  # None: the op returns a plaintext array (reveal)
    compile_s: float
    shared: tuple = ()     # segments: which outputs are shares
    audit: tuple = ()      # audited ops: (phase, kind, sender) of each message


class _TemplateCache(collections.OrderedDict):
    """Least-recently-used templates, at most `limit`. Why a limit: every compiled XLA CPU
    executable holds ~20 memory mappings, and Linux refuses a process more than
    vm.max_map_count (65530 by default); past it XLA's next compile dies with a segfault, not
    an error. A long process (a test session, a sweep over models and policies) compiled
    thousands of op programs and crashed that way. Evicting the oldest keeps the process far
    below the limit; an evicted template compiles again (or loads from disk) when next used."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def get(self, sig, default=None):
        if sig not in self:
            return default
        self.move_to_end(sig)
        return self[sig]

    def __setitem__(self, sig, template):
        super().__setitem__(sig, template)
        self.move_to_end(sig)
        while len(self) > self.limit:
            self.popitem(last=False)


# Compiled op programs, shared by every Program of the process (keyed by config and signature):
# a second model, policy or sequence of the same shapes compiles nothing new. A MiniLM run
# needs a few hundred; a 7B model's layers repeat the same shapes.
TEMPLATE_LIMIT = 1024
_TEMPLATES: _TemplateCache = _TemplateCache(TEMPLATE_LIMIT)

# At most this many calls of a smaller program run one op whose registry entry `chunks`
# (opcache_plan.chunk_sizes): one exact MiniLM layer's softmax max tree then compiles two ReLU
# programs instead of seven, and its ReLUs run no slower (benchmarks/README.md). 1: no chunking.
CHUNK_CALLS = 8


def clear_templates() -> None:
    """Drop every compiled op program of this process (their memory and mappings go with them)."""
    _TEMPLATES.clear()


# Programs the first run of an executable compiles ahead, in this many threads beside the run
# (`OpCachedExecutable._compile_ahead`); 0: each compiles when the run reaches it. Off by
# default: on the 2-core CI machine XLA's compiler already keeps ~1.5 cores busy, and a cold
# exact MiniLM layer's first run was 6 % faster with 1-2 threads when the machine was idle but
# up to 1.7x slower when it was loaded (benchmarks/README.md, "Compiling ahead"). Turn it on
# (PCFORMER_COMPILE_THREADS=N) where cores are spare.
COMPILE_THREADS = int(os.environ.get("PCFORMER_COMPILE_THREADS", "0"))
_POOL: dict = {}   # thread count -> its executor, made on first use


def _compile_pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    if threads not in _POOL:
        _POOL[threads] = concurrent.futures.ThreadPoolExecutor(
            threads, thread_name_prefix="pcformer-compile")
    return _POOL[threads]


@dataclasses.dataclass
class _Lowered:
    """A program lowered and not yet compiled; `finish(compiled)` makes (and stores) its
    template."""
    lowered: Any
    options: dict
    finish: Any


def _finish(prepared) -> _Template:
    """The template of what `_prepare_op` / `_prepare_segment` returned (compiled here)."""
    if isinstance(prepared, _Template):
        return prepared
    return prepared.finish(opcache_store.compile(prepared.lowered, prepared.options))


class _Ahead:
    """The templates of one run compiled ahead of it: signature -> future of its template.

    A signature is made once: the run ahead claims it unless it is in memory or the run has
    reached it already (`take` marks it taken); a template the run takes from here and finds
    failed (an abstract operand the run's real one did not match) is made again by the run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.futures: dict = {}
        self.taken: set = set()

    def claim(self, sig) -> concurrent.futures.Future | None:
        with self.lock:
            if sig in self.futures or sig in self.taken or sig in _TEMPLATES:
                return None
            fut = self.futures[sig] = concurrent.futures.Future()
            return fut

    def take(self, sig) -> _Template | None:
        with self.lock:
            self.taken.add(sig)
            fut = self.futures.pop(sig, None)
        if fut is None:
            return None
        try:
            t = fut.result()
        except Exception:   # noqa: BLE001 - made again, from the real operands, by the run
            return None
        return t

    def cancel(self) -> None:
        """Compiles not started yet are dropped (the run ended or failed before needing them)."""
        with self.lock:
            for fut in self.futures.values():
                fut.cancel()
            self.futures.clear()


def _specs(arrays) -> list:
    """What lowering needs of the operands (no wait for the arrays to be computed)."""
    return [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
            for a in arrays]


@functools.lru_cache(maxsize=1)
def _KEY_SPEC():
    """Shape and dtype of a run key (the PRNG implementation's), found without device work."""
    return jax.eval_shape(lambda: jax.random.PRNGKey(0))


def op_program_defaults() -> dict:
    """XLA options every op and segment program gets unless the caller sets them itself.

    On CPU, XLA's fusion emitters off (`xla_cpu_use_fusion_emitters=False`): its older loop
    emitters compile our ~140 small integer programs of a layer faster at the same run time
    (one cold exact MiniLM layer: 27.2 s of XLA compile -> 17.8 s; benchmarks/README.md). The
    ring arithmetic is integer, so both emit the same results bit for bit (the suite runs with
    it). Other backends: none."""
    return {"xla_cpu_use_fusion_emitters": False} if jax.default_backend() == "cpu" else {}


# A segment whose values all have at most this many elements compiles with
# `small_segment_defaults()`.
SMALL_SEGMENT = 1 << 15


def small_segment_defaults() -> dict:
    """XLA options of a small segment program (the op programs' defaults, then these; a caller's
    `compiler_options` win over both).

    On CPU, LLVM's optimizations off (`xla_backend_optimization_level=0`): a segment is a short
    run of share-local integer steps (adds, reshapes, transposes, encodings), which XLA's HLO
    passes still fuse; LLVM's passes make its loops faster, which only pays on large arrays.
    One exact MiniLM layer: the 40 segments of at most 2^15 elements compile in 0.5 s less and
    run 2 ms slower; all 109 would compile in 2.1 s less but run 0.12 s slower (a quarter of
    the layer's run), so large segments keep XLA's default (benchmarks/README.md)."""
    return ({**op_program_defaults(), "xla_backend_optimization_level": 0}
            if jax.default_backend() == "cpu" else op_program_defaults())


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
        """Op `pop`'s template loaded from disk, or its program lowered (`_Lowered`)."""
        canon, traced = pop.op, pop.traced
        depths = [0 if isinstance(a, AShare) else None for a in args]
        record: dict = {}
        config, audit = self.config, self.audit

        def fn(arrays, run_key, index, salt, attrs):
            self.trace_count += 1
            ctx = Context(config, jax.random.fold_in(run_key, index), setup_key=salt,
                          audit=audit)
            # operands come in their stored layout (flat or shaped): laid out here, for free
            vals = [as_layout(a if d is None else AShare(a, d), v.shape, False)
                    for a, d, v in zip(arrays, depths, canon.operands)]
            op_run = (dataclasses.replace(canon, attrs={**canon.attrs, **dict(zip(traced, attrs))})
                      if traced else canon)
            with ctx.scope(_SCOPE_MARK), ctx.op(canon.name):
                out = execute.run_protocol(ctx, op_run, vals)
            record["entries"] = list(ctx.ledger.entries)
            record["depth"] = out.depth if isinstance(out, AShare) else None
            record["audit"], payloads = execute.audit_entries(ctx)
            data = out.data if isinstance(out, AShare) else out
            if out_flat:
                data = data.reshape(data.shape[:1] + (-1,))
            return (data, payloads) if audit else data

        stored = opcache_store.load(sig)
        if stored is not None:
            return _Template(stored["compiled"], stored["entries"], stored["out_depth"], 0.0,
                             audit=stored["audit"])
        # shapes only: an eager PRNGKey would wait for the device work still in flight and bill
        # the simulation's time to the compile
        specs = _specs(_arrays(args))
        STATS["lowered"] += 1
        lowered = jax.jit(fn).lower(specs, _KEY_SPEC(), np.uint32(0), np.uint64(0),
                                    tuple(np.int32(0) for _ in traced))

        key = opcache_store.key_text(sig) if opcache_store.folder() else None

        def finish(compiled):   # in this thread or a compile thread
            t = _Template(compiled, record["entries"], record["depth"], 0.0,
                          audit=tuple(record["audit"]))
            opcache_store.store(sig, compiled, key, entries=t.entries, out_depth=t.out_depth,
                                audit=t.audit)
            return t
        return _Lowered(lowered, self.compiler_options, finish)

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

    def _prepare_segment(self, sig, seg: _Segment, args, flat_out, options):
        """A segment's template loaded from disk, or its program lowered (`_Lowered`)."""
        stored = opcache_store.load(sig)
        if stored is not None:
            return _Template(stored["compiled"], [], None, 0.0, stored["shared"])
        shared = [isinstance(a, AShare) for a in args]
        record: dict = {}
        cfg = self.config
        shapes = {v.id: v.shape for op in seg.ops for v in op.operands}

        def fn(arrays):
            # flat inputs take their shapes here, and flat outputs lose them: reshapes
            # inside a program are free, eager ones copy
            local = {v: as_layout(AShare(a, 0) if sh else a, shapes[v], False)
                     for v, a, sh in zip(seg.in_ids, arrays, shared)}
            execute.run_ops(cfg, enumerate(seg.ops), local)   # local ops only: no protocol
            res = [local[v] for v in seg.out_ids]
            record["shared"] = [isinstance(o, AShare) for o in res]
            res = [as_layout(o, o.shape, True) if f else o   # stored flat: secrets only
                   for o, f in zip(res, flat_out)]
            return [o.data if isinstance(o, AShare) else o for o in res]

        STATS["lowered"] += 1
        lowered = jax.jit(fn).lower(_specs(_arrays(args)))

        key = opcache_store.key_text(sig) if opcache_store.folder() else None

        def finish(compiled):   # in this thread or a compile thread
            t = _Template(compiled, [], None, 0.0, tuple(record["shared"]))
            opcache_store.store(sig, compiled, key, shared=t.shared)
            return t
        return _Lowered(lowered, options, finish)

    def _segment(self, seg: _Segment, env) -> float:
        """Run a segment's compiled program (compiling it on first use); returns the seconds
        this run waited for it."""
        args = [env[v] for v in seg.in_ids]
        arrays = _arrays(args)
        sig, flat_out, options = self._segment_key(seg, args)
        t, fresh = self._obtain(
            sig, lambda: self._prepare_segment(sig, seg, args, flat_out, options))
        outs = t.compiled(arrays)
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
                        submit(fut, self._prepare_segment(sig, step, args, flat_out, options))
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
