"""Op-cached execution, the planning half: the program cut into protocol ops and segments
(maximal runs of local / share-local ops), and the cache keys (signatures) of both.

Pure functions of the IR and the operands' kinds (share or plaintext, shape, dtype): nothing
here traces or compiles; opcache.py runs the plan.
"""
from __future__ import annotations

import dataclasses
import hashlib

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime.shares import AShare

from . import ir


def _canonical(op: ir.Op) -> ir.Op:
    """The op over values numbered 0, 1, ...: ops that differ only in value ids coincide."""
    ids: dict[int, int] = {}

    def new(v):
        ids.setdefault(v.id, len(ids))
        return dataclasses.replace(v, id=ids[v.id], const=None)

    return dataclasses.replace(op, operands=tuple(new(v) for v in op.operands),
                               results=tuple(new(r) for r in op.results), scope="", where="",
                               op_class="")


def _canon_attr(x):
    """A cache-key form of an attribute: arrays by shape, dtype and a hash of their bytes (their
    repr elides the middle of large arrays, which would let two constants collide)."""
    if isinstance(x, (np.ndarray, jax.Array, np.generic)):
        a = np.asarray(x)
        return ("array", a.shape, str(a.dtype), hashlib.sha1(a.tobytes()).hexdigest())
    if isinstance(x, dict):
        return tuple(sorted((k, _canon_attr(v)) for k, v in x.items()))
    if isinstance(x, (tuple, list)):
        return tuple(_canon_attr(v) for v in x)
    return repr(x)


def _arrays(args) -> list:
    """What a compiled op or segment program takes: share data and plaintext arrays (or their
    shapes, `jax.ShapeDtypeStruct`, when a program is lowered ahead of its run)."""
    return [a.data if isinstance(a, AShare) else
            a if isinstance(a, jax.ShapeDtypeStruct) else jnp.asarray(a) for a in args]


def _kinds(args) -> tuple:
    return tuple(("s", tuple(a.data.shape), str(a.data.dtype)) if isinstance(a, AShare)
                 else ("p", tuple(np.shape(a)), str(a.dtype if isinstance(a, jax.ShapeDtypeStruct)
                                                  else jnp.asarray(a).dtype)) for a in args)


# Attributes a segment's program takes at run time, left out of its signature: the fixed-point
# scale a plaintext operand is encoded at (ring.encode_traced builds 2^f exactly from a traced
# f). With the values' scales also left out (no share-local or local op reads one), segments
# that differ only in scales share one program: one exact MiniLM layer's 73 segment programs
# become 56.
SEGMENT_TRACED_ATTRS = ("enc",)


def segment_traced(ops) -> tuple:
    """(position in the segment, attribute name) of each of its run-time attributes, in order."""
    return tuple((i, a) for i, op in enumerate(ops) for a in SEGMENT_TRACED_ATTRS
                 if a in op.attrs)


def _segment_signature(ops, in_ids, out_ids, args) -> tuple:
    """Ops of a segment over values renumbered by first appearance, with operand kinds; its
    run-time attributes (`SEGMENT_TRACED_ATTRS`) only as names, its values without scales."""
    ids = {v: i for i, v in enumerate(in_ids)}

    def num(v):
        return ids.setdefault(v.id, len(ids))

    def attrs(op):
        return _canon_attr({k: "traced" if k in SEGMENT_TRACED_ATTRS else x
                            for k, x in op.attrs.items()})

    def typ(v):   # shape, dtype and visibility; not the scale
        return dataclasses.replace(v, scale=0).type_str()

    body = tuple((op.kind, op.name, attrs(op),
                  tuple((num(v), typ(v)) for v in op.operands),
                  tuple((num(r), typ(r)) for r in op.results)) for op in ops)
    return ("segment", body, tuple(ids[v] for v in out_ids), _kinds(args))


@dataclasses.dataclass(frozen=True)
class ProgramOp:
    """A protocol op as its compiled program sees it (`program_op`): `op` canonical, over flat
    values when `flat`, without the attributes `traced` names (passed at run time)."""

    op: ir.Op
    flat: bool
    traced: tuple


def program_op(op: ir.Op, elementwise: bool, traced_attrs: tuple = ()) -> ProgramOp:
    """What one compiled program serves, from the op's registry entry (`elementwise`,
    `traced_attrs`): an elementwise op whose operands all have its result's shape runs on
    flattened [n] values, so the ops of one element count share a program whatever their shapes
    (a [128, 1536] and a [12, 128, 128] truncation); the traced attributes leave the program's
    signature, and so do the values' fixed-point scales (no protocol reads one: the
    truncation's shift is its attribute). The ledger is unchanged: such an op's messages depend
    on the element count alone, and the dealer's streams are laid out flat
    (runtime/shares.py `_stream`)."""
    shape = tuple(op.results[0].shape) if len(op.results) == 1 else None
    flat = (elementwise and shape is not None and len(shape) > 1
            and all(tuple(v.shape) == shape for v in op.operands))
    n = (int(np.prod(shape, dtype=np.int64)),) if flat else None

    def seen(v):   # scales leave too: they decide what the lowering emits, never how it runs
        return dataclasses.replace(v, scale=0, shape=n or v.shape)

    c = _canonical(op)
    c = dataclasses.replace(c, operands=tuple(map(seen, c.operands)),
                            results=tuple(map(seen, c.results)))
    traced = tuple(a for a in traced_attrs if a in c.attrs)
    if traced:
        c = dataclasses.replace(c, attrs={k: v for k, v in c.attrs.items() if k not in traced})
    return ProgramOp(c, flat, traced)


def flat_values(prog: ir.Program, plan: list, is_flat) -> frozenset:
    """Secret values the op executor stores flat ([2, n]), so that no eager copy reshapes them
    between programs and no program's signature depends on how its operands were stored: every
    program lays its inputs out as it needs inside itself (free) and writes its results in their
    stored layout. Stored flat: every secret result of a protocol op or a segment that only
    programs read (one whose reader is a flat protocol op, `is_flat(k)`, or another op's
    program, which reshapes it inside). Never flat: a program output, a plaintext value, and a
    value that an eager local op reads (op by op, as the overflow oracle runs): those keep
    their shapes. (A product's program thus reads a flat operand whether a truncation or a
    segment wrote it: one exact MiniLM layer's 384x384 projections share one program.)"""
    ops = prog.ops
    in_segment = {id(op) for step in plan if isinstance(step, _Segment) for op in step.ops}
    readers: dict[int, list] = {}      # value id -> indices of the ops that read it
    for k, op in enumerate(ops):
        for v in op.operands:
            readers.setdefault(v.id, []).append(k)
    outputs = {v.id for v in prog.outputs}

    def storable(v) -> bool:
        rs = readers.get(v.id, ())
        return v.vis.is_secret and v.id not in outputs and all(
            ops[k].kind == "protocol" or id(ops[k]) in in_segment for k in rs)

    flat = set()
    for step in plan:
        if isinstance(step, _Segment):
            results = [v for op in step.ops for v in op.results if v.id in step.out_ids]
            flat.update(v.id for v in results if storable(v))
        elif ops[step].kind == "protocol":
            res = ops[step].results
            if is_flat(step) or len(res) == 1:
                flat.update(v.id for v in res if storable(v))
    return frozenset(flat)


def as_layout(a, shape: tuple, flat: bool):
    """A share or plaintext array laid out for a program: flat ([2, n] / [n]) or in `shape`."""
    data = a.data if isinstance(a, AShare) else jnp.asarray(a)
    lead = data.shape[:1] if isinstance(a, AShare) else ()
    want = lead + ((int(np.prod(shape, dtype=np.int64)),) if flat else tuple(shape))
    if data.shape == want:
        return a
    data = data.reshape(want)
    return AShare(data, a.depth) if isinstance(a, AShare) else data


def _signature(op: ir.Op, args) -> tuple:
    kinds = _kinds(args)
    c = _canonical(op)
    return (op.name, _canon_attr(c.attrs),
            tuple(repr(v) + v.type_str() for v in c.operands),
            tuple(repr(r) + r.type_str() for r in c.results), kinds)


@dataclasses.dataclass(frozen=True)
class _Segment:
    """A maximal run of local / share-local ops, with what it reads and what later ops need."""

    ops: tuple
    in_ids: tuple          # values read, produced before the segment (first-read order)
    out_ids: tuple         # values produced here and read after it (or program outputs)
    deps: tuple            # per output: indices into in_ids it depends on
    largest: int = 0       # element count of its largest value (its XLA options depend on it)
    traced: tuple = ()     # its run-time attributes (`segment_traced`) ...
    attr_values: tuple = ()   # ... and their values, as the program's int32 arguments


def plan_segments(prog: ir.Program) -> list:
    """The program as a list of protocol op indices (int) and `_Segment`s, in order."""
    later_reads: dict[int, int] = {}          # value id -> index of the last op reading it
    for k, op in enumerate(prog.ops):
        for v in op.operands:
            later_reads[v.id] = k
    final = {v.id for v in prog.outputs}
    steps, run = [], []

    def close(end: int):
        if not run:
            return
        ops = [prog.ops[k] for k in run]
        made, in_ids, dep = set(), [], {}
        for op in ops:
            for v in op.operands:
                if v.id not in made and v.id not in dep:
                    dep[v.id] = {len(in_ids)}
                    in_ids.append(v.id)
            d = set().union(*[dep[v.id] for v in op.operands]) if op.operands else set()
            for r in op.results:
                made.add(r.id)
                dep[r.id] = d
        outs = [r.id for op in ops for r in op.results
                if r.id in final or later_reads.get(r.id, -1) >= end]
        largest = max(v.size for op in ops for v in op.operands + op.results)
        traced = segment_traced(ops)
        steps.append(_Segment(tuple(ops), tuple(in_ids), tuple(outs),
                              tuple(tuple(sorted(dep[o])) for o in outs), largest, traced,
                              tuple(np.int32(ops[i].attrs[a]) for i, a in traced)))
        run.clear()

    for k, op in enumerate(prog.ops):
        if op.kind in ("local", "share_local"):
            run.append(k)
        else:
            close(k)
            steps.append(k)
    close(len(prog.ops))
    return steps


def at_size(pop: ProgramOp, n: int) -> ProgramOp:
    """A flat op's program at `n` elements: what one chunk of it runs (`chunk_sizes`)."""
    assert pop.flat
    c = pop.op
    size = lambda v: dataclasses.replace(v, shape=(n,))   # noqa: E731
    return dataclasses.replace(pop, op=dataclasses.replace(
        c, operands=tuple(map(size, c.operands)), results=tuple(map(size, c.results))))


def chunk_sizes(flat_ops: dict, max_calls: int) -> dict:
    """Chunk size of each flat elementwise protocol op ({step: ProgramOp}) -> {step: size}.

    Why. XLA compiles a comparison circuit in about a second whatever its element count, and a
    program of n elements serves only n: softmax's max tree halves its row at every level, so
    one exact MiniLM layer compiled seven ReLU programs for it alone (a third of its cold
    compile). An op of n elements can instead run as n / s calls of the program of s elements
    when s divides n: the calls' elements are independent (the registry's `elementwise`: its
    messages depend only on the element count), each call gets its own dealer key, and the
    ledger entries of the calls merge into the op's (same depth, bits summed), so the ledger
    and the static cost do not change.

    The plan, per program identity (the op, its attributes, dtypes): element counts ascending;
    a count runs as calls of the largest program size already chosen that divides it in at
    most `max_calls` calls, else it becomes a program size itself. Bounding the calls bounds
    the run time a chunked op loses to per-call overhead (small calls cost more per element).
    `max_calls` 1: no chunking."""
    groups: dict = {}
    for k, pop in flat_ops.items():
        key = repr(at_size(pop, 0))
        n = pop.op.results[0].shape[0]
        groups.setdefault(key, {}).setdefault(n, []).append(k)
    out = {}
    for counts in groups.values():
        chosen: list[int] = []
        for n in sorted(counts):
            fits = [s for s in chosen if n % s == 0 and n // s <= max_calls]
            s = max(fits, default=n)
            if s == n:
                chosen.append(n)
            out.update((k, s) for k in counts[n])
    return out
