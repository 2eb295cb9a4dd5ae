"""Lowering: a (rewritten) jaxpr + who owns each input -> the protocol IR (ir.Program).

One registry, ``LOWER_RULES[primitive_name] = rule``; a rule receives the lowerer, the equation
and its operand Values, and returns the result Values.

Visibility decides everything:
- an equation whose operands are all public, or public/private to ONE party, stays a ``local``
  op of that party (plaintext JAX, free) -- whatever the primitive, even exp or control flow;
- otherwise (private(0) meets private(1), or anything meets a secret) its rule emits protocol ops,
  picking the cheapest correct protocol: secret x value-a-party-holds -> ``mul_private`` /
  ``dot_general_private``; secret x secret -> Beaver ``mul`` / matrix-triple ``dot_general``;
  ``x*x`` -> ``square``; secret x public -> free per-share product; add of anything to a secret
  -> free (the holder adds to its own share).

Fixed point (lazy truncation): a product's result carries scale sa+sb (2f for two reals); a
``truncate`` is inserted only where a value at scale > f feeds another product, a comparison,
or an output. Sums of products therefore truncate once. Integer-valued public constants have
scale 0, so multiplying by them never needs a truncation. Scales are raised for free
(multiplication by the public integer 2^d) when a sum meets two different scales.
"""
from __future__ import annotations

import jax
import numpy as np

from pcformer.runtime.costs import rounds
from pcformer.runtime.protocols import registry

from . import ir
from .ir import PUBLIC, SECRET, PRIVATE, Op
from .lower_base import (CALLS, HEAVY, LOWER_RULES, MAX_FOLD, MAX_INT_CONST,  # noqa: F401
                         LoweringError, Lowerer, _out, rule)
from .lower_walk import _concat, _slice, _squeeze, lower_jaxpr, tree_max  # noqa: F401
# the rule families; importing them registers their rules. The order is the registration order:
# a later module's rule for a primitive replaces an earlier one's (lower_cmp refines
# convert_element_type; lower_ops stop_gradient, integer_pow, reduce_max, scan, max and min),
# and lower_ops' refusals only fill primitives no rule covers.
from . import lower_arith, lower_products, lower_struct, lower_control  # noqa: E402,F401
from . import lower_cmp, lower_ops, lower_order  # noqa: E402,F401
from .lower_struct import _structural  # noqa: E402,F401  (compiler/supported.py names it)


SECRET_INPUT = "secret"   # owners marker: the argument arrives already secret-shared


def flatten_owners(owners, args) -> list:
    """owners is a pytree prefix of the args tuple: one owner per leaf: 0 (server), 1 (client),
    None (public) or "secret" (already shared, e.g. a KV cache kept secret between runs)."""
    flat: list = []

    def put(o, sub):
        if o not in (0, 1, None, SECRET_INPUT):
            raise LoweringError(f"owner must be 0 (server), 1 (client), None (public) or "
                                f"{SECRET_INPUT!r} (already shared), got {o!r}")
        flat.extend([o] * len(jax.tree_util.tree_leaves(sub)))

    try:
        jax.tree_util.tree_map(put, owners, tuple(args), is_leaf=lambda x: x is None)
    except ValueError as e:
        raise LoweringError(f"owners must be a pytree prefix of the arguments tuple: {e}") \
            from None
    return flat


def lower(traced, owners_flat, config, keep_secret=None) -> ir.Program:
    """Lower a Traced (trace.trace / rewrite.rewrite output) given one owner per input leaf.

    keep_secret: one bool per output leaf (default all False): True leaves the output
    secret-shared (no reveal; e.g. a KV cache carried to the next decoding step)."""
    closed = traced.closed_jaxpr
    L = Lowerer(frac_bits=config.frac_bits, reveal_to=config.reveal_to,
                ring_bits=config.ring_bits, root=getattr(traced, "root", None))
    inputs = []
    for var, owner in zip(closed.jaxpr.invars, owners_flat):
        aval = var.aval
        if owner == SECRET_INPUT:
            scale = config.frac_bits if np.issubdtype(np.dtype(aval.dtype), np.floating) else 0
            inputs.append(L.new(aval.shape, aval.dtype, SECRET, scale))
            continue
        vis = PUBLIC if owner is None else PRIVATE(owner)
        inputs.append(L.new(aval.shape, aval.dtype, vis, L.plain_scale(aval.dtype)))
    outs = lower_jaxpr(L, closed.jaxpr, list(closed.consts), inputs)
    keep_secret = [False] * len(outs) if keep_secret is None else list(keep_secret)
    final = []
    for v, keep in zip(outs, keep_secret):
        if keep:   # stays shared, at the scale a secret input of this dtype has
            target = config.frac_bits if v.is_float else 0
            v = L.to_secret(v, target) if not v.vis.is_secret else v
            if v.scale > target:
                v = L.truncate(v, target)
            elif v.scale < target:
                v = L.lift(v, target)
            final.append(v)
            continue
        if v.vis.is_private and v.vis.party != config.reveal_to:
            v = L.to_secret(v)
        if v.vis.is_secret:
            target = config.frac_bits if v.is_float else 0
            if v.scale > target:
                v = L.truncate(v, target)
            r = L.new(v.shape, v.dtype, PRIVATE(config.reveal_to), v.scale)
            L.emit("reveal", [v], [r], to=config.reveal_to)
            v = r
        final.append(v)
    ops, _ = batch_comparisons(L.ops, L.next_id, config)
    return ir.Program(tuple(inputs), tuple(ops), tuple(final),
                      tuple(str(np.dtype(a.dtype)) for a in traced.out_avals), config.frac_bits)


# ==================================================================== batching pass
BATCHED = ("drelu",)


def _entry(op, family: str):
    """The registry entry of a protocol op in the run's family, or a LoweringError naming the
    op, its source line and module path, and the families that have it."""
    entry = registry.find(op.name, family)
    if entry is None:
        others = [f for f in registry.families() if registry.find(op.name, f) is not None]
        raise LoweringError(
            f"protocol op {op.name!r} has no protocol in family {family!r}"
            + (f"; it exists in {others} (MPCConfig(protocols={others[0]!r}), CLI "
               f"--protocols={others[0]})" if others else "")
            + f" [at {op.where or '<unknown>'}, module {op.scope or '<top>'}]")
    return entry


def batch_comparisons(ops: list[Op], next_id: int, config) -> tuple[list[Op], int]:
    """Merge independent comparisons into one protocol call.

    Why: an approximation such as the octave scaling of a reciprocal issues dozens of
    independent `drelu`s on the same input; one call on their concatenation sends the same bits
    in the same round but is one step instead of dozens, and one circuit for XLA to compile.
    Rule: a `drelu` is deferred (its operand is ready where it stood) until an op consumes one of
    the deferred results; then every deferred group is emitted. Only ops with the same input
    depth, scope and operator class are merged, so the critical path and the per-scope and
    per-class attribution are unchanged.
    """
    L = Lowerer(next_id=next_id)
    depth: dict[int, int] = {}
    groups: dict[tuple, list[Op]] = {}
    pending: set[int] = set()
    out: list[Op] = []

    def flush():
        for (_, scope, op_class), group in groups.items():
            if len(group) == 1:
                out.append(group[0])
                continue
            L.ops = []
            flat = []
            for op in group:
                x = op.operands[0]
                flat.append(L.per_share("reshape", [x], (x.size,), x.dtype, x.scale,
                                        primitive=jax.lax.reshape_p,
                                        params=dict(new_sizes=(x.size,), dimensions=None,
                                                    sharding=None)))
            total = sum(v.shape[0] for v in flat)
            cat = L.per_share("concatenate", flat, (total,), flat[0].dtype, flat[0].scale,
                              primitive=jax.lax.concatenate_p, params=dict(dimension=0),
                              n_data=len(flat))
            bits = L.new((total,), "bool", SECRET, 0)
            L.ops.append(Op("drelu", (cat,), (bits,), {}, scope, group[0].where, "protocol",
                            op_class=op_class))
            start = 0
            for op in group:
                r = op.results[0]
                piece = L.new((r.size,), r.dtype, SECRET, 0)
                L.ops.append(Op("slice", (bits,), (piece,),
                                dict(primitive=jax.lax.slice_p,
                                     params=dict(start_indices=(start,),
                                                 limit_indices=(start + r.size,),
                                                 strides=(1,))), scope, op.where,
                                "share_local", op_class=op_class))
                L.ops.append(Op("reshape", (piece,), (r,),
                                dict(primitive=jax.lax.reshape_p,
                                     params=dict(new_sizes=r.shape, dimensions=None,
                                                 sharding=None)), scope, op.where,
                                "share_local", op_class=op_class))
                start += r.size
            for op in L.ops:
                if op.scope == "" and op.name in ("reshape", "concatenate"):
                    object.__setattr__(op, "scope", scope)
                    object.__setattr__(op, "op_class", op_class)
            out.extend(L.ops)
        groups.clear()
        pending.clear()

    def place(op):
        d_in = max((depth.get(v.id, 0) for v in op.operands if v.vis.is_secret), default=0)
        d_out = d_in
        if op.kind == "protocol":     # the op's own rounds, from its registry entry's formula
            entry = _entry(op, config.protocols)
            d_out = 0 if op.name == "share" else d_in + rounds(entry.messages(op, config))
        for r in op.results:
            depth[r.id] = d_out
        return d_in

    # a stable sort by input depth is a topological order (a consumer's input depth is at least
    # its producer's); it puts all comparisons of one depth before any of their consumers
    level = {id(op): place(op) for op in ops}
    ops = sorted(ops, key=lambda op: level[id(op)])
    for op in ops:
        if pending and any(v.id in pending for v in op.operands):
            flush()
        d_in = level[id(op)]
        if op.kind == "protocol" and op.name in BATCHED:
            groups.setdefault((d_in, op.scope, op.op_class), []).append(op)
            pending.update(r.id for r in op.results)
        else:
            out.append(op)
    flush()
    return out, L.next_id
