"""The op executor's templates (compiler/opcache.py): what one op or segment program is once
compiled, where the process keeps them, how each is lowered, and how a run compiles them ahead.

A template is made in three steps: its signature (opcache.py, from the op and its operands'
kinds), `prepare_op` / `prepare_segment` (loaded whole from disk by opcache_store, else traced
and lowered: a `_Lowered`), then `_finish` (XLA's compile, and the store to disk). The last step
can run in another thread (`_Ahead`, `_compile_pool`): lowering traces Python and stays in the
run's thread; XLA's compile releases the interpreter.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading
from typing import Any

import jax
import numpy as np

from pcformer.runtime.shares import AShare, Context, fold_key

from . import execute, opcache_store
from .opcache_plan import ProgramOp, _arrays, as_layout

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


def clear_templates() -> None:
    """Drop every compiled op program of this process (their memory and mappings go with them)."""
    _TEMPLATES.clear()


# Programs the first run of an executable compiles ahead, in this many threads beside the run
# (opcache.py, `OpCachedExecutable._compile_ahead`); 0: each compiles when the run reaches it.
# Off by default: on the 2-core CI machine XLA's compiler already keeps ~1.5 cores busy, and a cold
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


def prepare_op(config, audit: bool, sig, pop: ProgramOp, args, out_flat: bool, options: dict):
    """Op `pop`'s template loaded from disk, or its program lowered on `args`' shapes
    (`_Lowered`, compiled with XLA `options` by `_finish`). `audit`: the program also returns
    each message it sent (execute.received); `out_flat`: its result is flattened inside."""
    stored = opcache_store.load(sig)
    if stored is not None:
        return _Template(stored["compiled"], stored["entries"], stored["out_depth"], 0.0,
                         audit=stored["audit"])
    canon, traced = pop.op, pop.traced
    depths = [0 if isinstance(a, AShare) else None for a in args]
    record: dict = {}

    def fn(arrays, run_key, index, salt, attrs):
        ctx = Context(config, fold_key(run_key, index), setup_key=salt, audit=audit)
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

    # shapes only: an eager PRNGKey would wait for the device work still in flight and bill
    # the simulation's time to the compile
    STATS["lowered"] += 1
    lowered = jax.jit(fn).lower(_specs(_arrays(args)), _KEY_SPEC(), np.uint32(0), np.uint64(0),
                                tuple(np.int32(0) for _ in traced))
    key = _store_key(sig)

    def finish(compiled):   # in this thread or a compile thread
        t = _Template(compiled, record["entries"], record["depth"], 0.0,
                      audit=tuple(record["audit"]))
        opcache_store.store(sig, compiled, key, entries=t.entries, out_depth=t.out_depth,
                            audit=t.audit)
        return t
    return _Lowered(lowered, options, finish)


def prepare_segment(config, sig, seg, args, flat_out: tuple, options: dict):
    """A segment's template loaded from disk, or its program lowered (`_Lowered`): the
    segment's local ops on `args`, each output flattened where `flat_out` says."""
    stored = opcache_store.load(sig)
    if stored is not None:
        return _Template(stored["compiled"], [], None, 0.0, stored["shared"])
    shared = [isinstance(a, AShare) for a in args]
    record: dict = {}
    shapes = {v.id: v.shape for op in seg.ops for v in op.operands}

    def fn(arrays, attrs):
        # flat inputs take their shapes here, and flat outputs lose them: reshapes inside a
        # program are free, eager ones copy
        local = {v: as_layout(AShare(a, 0) if sh else a, shapes[v], False)
                 for v, a, sh in zip(seg.in_ids, arrays, shared)}
        ops = list(seg.ops)
        for (i, name), x in zip(seg.traced, attrs):   # run-time attributes, traced
            ops[i] = dataclasses.replace(ops[i], attrs={**ops[i].attrs, name: x})
        execute.run_ops(config, enumerate(ops), local)   # local ops only: no protocol
        res = [local[v] for v in seg.out_ids]
        record["shared"] = [isinstance(o, AShare) for o in res]
        res = [as_layout(o, o.shape, True) if f else o   # stored flat: secrets only
               for o, f in zip(res, flat_out)]
        return [o.data if isinstance(o, AShare) else o for o in res]

    STATS["lowered"] += 1
    lowered = jax.jit(fn).lower(_specs(_arrays(args)), tuple(np.int32(0) for _ in seg.traced))
    key = _store_key(sig)

    def finish(compiled):   # in this thread or a compile thread
        t = _Template(compiled, [], None, 0.0, tuple(record["shared"]))
        opcache_store.store(sig, compiled, key, shared=t.shared)
        return t
    return _Lowered(lowered, options, finish)


def _store_key(sig) -> str | None:
    """The template's key on disk, found in the run's thread: JAX's flags (x64) are per
    thread, and a compile thread would key it differently."""
    return opcache_store.key_text(sig) if opcache_store.folder() else None
