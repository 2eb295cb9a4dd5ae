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

from . import ir
from .ir import PUBLIC, SECRET, PRIVATE, Value, Op
from .lower_base import (CALLS, HEAVY, LOWER_RULES, MAX_FOLD, MAX_INT_CONST,  # noqa: F401
                         LoweringError, Lowerer, _join, _out, _result_dtype, _sub_jaxpr,
                         rule)
from .lower_walk import _concat, _local, _slice, _squeeze, lower_jaxpr, tree_max  # noqa: F401


@rule("add", "add_any")
def _add(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.add(a, b, shape=shape, dtype=dtype)]


@rule("sub")
def _sub(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.add(a, b, sub=True, shape=shape, dtype=dtype)]


@rule("neg")
def _neg(L, eqn, x):
    shape, dtype = _out(eqn)
    return [L.per_share("neg", [x], shape, dtype, x.scale)]


@rule("mul")
def _mul(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [L.mul(a, b, shape=shape, dtype=dtype)]


@rule("square")
def _square(L, eqn, x):
    shape, dtype = _out(eqn)
    return [L.mul(x, x, shape=shape, dtype=dtype)]


@rule("integer_pow")
def _integer_pow(L, eqn, x):
    shape, dtype = _out(eqn)
    y = int(eqn.params["y"])
    if y < 1:
        L.fail(f"integer_pow with exponent {y} on a secret needs a reciprocal")
    result, base = None, x
    while True:      # square-and-multiply, truncating lazily between products
        if y & 1:
            result = base if result is None else L.mul(result, base, shape=shape, dtype=dtype)
        y >>= 1
        if not y:
            break
        base = L.mul(base, base, shape=shape, dtype=dtype)
    return [result]


@rule("div")
def _div(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if not np.issubdtype(np.dtype(dtype), np.floating):
        L.fail("secret integer division is not supported (it needs a secret quotient "
               "and remainder); divide by a public value in floating point instead")
    if b.vis.is_secret:
        L.fail("division by a secret: the policy does not approximate it (use a policy with a "
               "reciprocal approximation)")
    if not a.vis.is_secret and not (a.vis.is_private and b.vis.is_private):
        L.fail("unexpected division of a public value")  # pragma: no cover
    # the divisor's holder computes 1/b locally, then a product
    recip = L.new(b.shape, b.dtype, b.vis, L.frac_bits if b.const is None else
                  L.plain_scale(b.dtype, 1.0 / np.asarray(b.const)),
                  None if b.const is None else (1.0 / np.asarray(b.const)).astype(b.dtype))
    L.emit("reciprocal", [b], [recip], kind="local", party=b.vis.party, fn="reciprocal")
    return [L.mul(a, recip, shape=shape, dtype=dtype)]


def _maximum(L, a, b, shape, dtype, minimum=False):
    # max(a, b) = b + relu(a - b);  min(a, b) = a - relu(a - b): one relu either way
    if b.vis.is_secret and not a.vis.is_secret:
        a, b = b, a
    zero = b.const is not None and np.all(np.asarray(b.const) == 0)
    if zero:
        r = L.relu(a if a.vis.is_secret else L.to_secret(a))
        if minimum:
            return L.add(a, r, sub=True, shape=shape, dtype=dtype)
        return r
    d = L.add(a, b, sub=True, shape=shape, dtype=dtype)
    r = L.relu(d if d.vis.is_secret else L.to_secret(d))
    if minimum:
        return L.add(a, r, sub=True, shape=shape, dtype=dtype)
    return L.add(b, r, shape=shape, dtype=dtype)


@rule("max")
def _max(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [_maximum(L, a, b, shape, dtype)]


@rule("min")
def _min(L, eqn, a, b):
    shape, dtype = _out(eqn)
    return [_maximum(L, a, b, shape, dtype, minimum=True)]


@rule("clamp")
def _clamp(L, eqn, lo, x, hi):
    shape, dtype = _out(eqn)
    return [_maximum(L, _maximum(L, x, lo, shape, dtype), hi, shape, dtype, minimum=True)]


@rule("abs")
def _abs(L, eqn, x):
    shape, dtype = _out(eqn)
    # |x| = 2 relu(x) - x: one relu
    x = L.for_compare(x)
    r = L.relu(x)
    two_r = L.add(r, r, shape=shape, dtype=dtype)
    return [L.add(two_r, x, sub=True, shape=shape, dtype=dtype)]


def _compare(L, eqn, a, b, kind):
    shape, _ = _out(eqn)
    # a >= b  <=>  drelu(a - b);  a < b = 1 - [a >= b];  a <= b <=> drelu(b - a)
    if kind in ("ge", "lt"):
        d = L.add(a, b, sub=True, shape=np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
    else:
        d = L.add(b, a, sub=True, shape=np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
    if not d.vis.is_secret:
        d = L.to_secret(d)
    bit = L.ge_zero(d, shape)
    return [bit if kind in ("ge", "le") else L.one_minus(bit)]


for _k in ("lt", "gt", "le", "ge"):
    LOWER_RULES[_k] = (lambda k: lambda L, eqn, a, b: _compare(L, eqn, a, b, k))(_k)


@rule("not")
def _not(L, eqn, x):
    if eqn.outvars[0].aval.dtype != np.bool_:
        L.fail("bitwise not of a secret integer is not supported")
    return [L.one_minus(x)]


@rule("and")
def _and(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if dtype != "bool":
        L.fail("bitwise and of secret integers is not supported")
    return [L.mul(a, b, shape=shape, dtype=dtype)]


@rule("or")
def _or(L, eqn, a, b):
    shape, dtype = _out(eqn)
    if dtype != "bool":
        L.fail("bitwise or of secret integers is not supported")
    ab = L.mul(a, b, shape=shape, dtype=dtype)
    return [L.add(L.add(a, b, shape=shape, dtype=dtype), ab, sub=True, shape=shape, dtype=dtype)]


@rule("select_n")
def _select_n(L, eqn, pred, *cases):
    shape, dtype = _out(eqn)
    if len(cases) == 1:
        return [cases[0]]
    if len(cases) != 2 and not pred.vis.is_public:
        L.fail("select_n with more than two cases and a non-public index")
    if pred.vis.is_public:
        if len(cases) != 2:
            L.fail("select_n with more than two cases on secrets")
    return [L.select(pred, cases[1], cases[0], shape, dtype)]


@rule("dot_general")
def _dot_general(L, eqn, a, b):
    shape, dtype = _out(eqn)
    dn = eqn.params["dimension_numbers"]
    if not a.vis.is_secret and not b.vis.is_secret:
        s, _ = L._pick_shared(a, b)
        if s is a:
            a = L.to_secret(a)
        else:
            b = L.to_secret(b)
    if a.vis.is_secret and b.vis.is_secret:
        a, b = L.for_product(a), L.for_product(b)
        r = L.new(shape, dtype, SECRET, a.scale + b.scale)
        L.emit("dot_general", [a, b], [r], dimension_numbers=dn)
        return [r]
    plain = b if a.vis.is_secret else a
    if plain.vis.is_private and not L.reusable(plain):
        return _dot_general(L, eqn, L.to_secret(a), L.to_secret(b))
    if plain.scale > 0:
        a, b = L.for_product(a), L.for_product(b)
    r_scale = a.scale + b.scale
    plain_index = 1 if a.vis.is_secret else 0
    if plain.vis.is_public:
        return [L.per_share("dot_general_public", [a, b], shape, dtype, r_scale,
                            dimension_numbers=dn, enc=plain.scale, plain_index=plain_index)]
    r = L.new(shape, dtype, SECRET, r_scale)
    L.emit("dot_general_private", [a, b], [r], dimension_numbers=dn, party=plain.vis.party,
           enc=plain.scale, plain_index=plain_index)
    return [r]


# ------------------------------------------------------------------ structural: free per share
_STRUCTURAL = ("reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
               "rev", "reduce_sum", "cumsum", "copy", "copy_p", "reduce_precision",
               "convert_element_type", "split", "real", "stop_gradient")


def _structural(L, eqn, *vals):
    name = eqn.primitive.name
    if name == "convert_element_type":
        x = vals[0]
        new = np.dtype(eqn.params["new_dtype"])
        if np.issubdtype(new, np.complexfloating):
            L.fail(f"complex numbers ({new}) are not supported on secrets (fixed-point reals "
                   f"only; e.g. jnp.fft converts its input to complex)")
        if not np.issubdtype(new, np.floating) and np.issubdtype(np.dtype(x.dtype), np.floating) \
                and x.scale > 0:
            L.fail("converting a secret real to an integer (floor/round of a secret) is not "
                   "supported")
    if name in ("cumsum",) and eqn.params.get("reverse", False) not in (False, True):
        pass  # pragma: no cover
    if name in ("reduce_precision", "stop_gradient"):  # identities on the values we compute
        return [vals[0]]
    results = []
    for i, _ in enumerate(eqn.outvars):
        shape, dtype = _out(eqn, i)
        results.append(L.new(shape, dtype, SECRET, vals[0].scale))
    L.emit(name, vals, results, kind="share_local", primitive=eqn.primitive,
           params=dict(eqn.params))
    return results


for _n in _STRUCTURAL:
    LOWER_RULES[_n] = _structural


@rule("concatenate", "pad", "dynamic_slice", "dynamic_update_slice")
def _mixed_structural(L, eqn, *vals):
    """Ops whose data operands may mix secrets with plaintext; index operands must be public."""
    name = eqn.primitive.name
    n_data = {"concatenate": len(vals), "pad": 2, "dynamic_slice": 1,
              "dynamic_update_slice": 2}[name]
    data, idx = list(vals[:n_data]), list(vals[n_data:])
    for v in idx:
        if not v.vis.is_public:
            L.fail(f"{name} with indices that are not public ({v.vis}): only public indices "
                   f"are supported on secret data")
    data, s = L.common(data)
    data = [L.to_secret(v, s) if not v.vis.is_secret else v for v in data]
    if name == "pad" and data[1].vis.is_secret:
        pass
    shape, dtype = _out(eqn)
    r = L.new(shape, dtype, SECRET, s)
    L.emit(name, data + idx, [r], kind="share_local", primitive=eqn.primitive,
           params=dict(eqn.params), n_data=n_data)
    return [r]


@rule("gather")
def _gather(L, eqn, table, idx):
    shape, dtype = _out(eqn)
    if idx.vis.is_secret:
        L.fail("gather with secret indices is not supported: a lookup at a secret position "
               "needs a one-hot of a secret index (a comparison per table row); keep the "
               "indices private to one party so that party builds the one-hot locally")
    if idx.vis.is_public:
        t = L.to_secret(table) if not table.vis.is_secret else table
        return [L.per_share("gather", [t, idx], shape, dtype, t.scale, primitive=eqn.primitive,
                            params=dict(eqn.params), n_data=1)]
    # indices private to one party, table held by the other or secret: one-hot, then a product
    dn = eqn.params["dimension_numbers"]
    ok = (tuple(dn.collapsed_slice_dims) == (0,) and tuple(dn.start_index_map) == (0,)
          and tuple(eqn.params["slice_sizes"])[0] == 1
          and tuple(eqn.params["slice_sizes"][1:]) == tuple(table.shape[1:])
          and idx.shape[-1] == 1 and not tuple(getattr(dn, "operand_batching_dims", ())))
    if not ok:
        L.fail("gather of a table by indices private to a party is supported only as a row "
               "lookup (jnp.take(table, ids, axis=0), an embedding)")
    vocab = table.shape[0]
    party = idx.vis.party
    onehot = L.new(idx.shape[:-1] + (vocab,), "int32", PRIVATE(party), 0)
    L.emit("one_hot", [idx], [onehot], kind="local", party=party, fn="one_hot", depth=vocab)
    rows = len(onehot.shape) - 1
    flat = L.new((int(np.prod(onehot.shape[:-1], dtype=np.int64)), vocab), "int32",
                 PRIVATE(party), 0)
    L.emit("reshape_local", [onehot], [flat], kind="local", party=party, fn="reshape",
           new_shape=flat.shape)
    tbl = table
    if table.vis.is_private and table.vis.party == party:
        raise AssertionError("local gather reached the protocol rule")  # pragma: no cover
    tflat_shape = (vocab, int(np.prod(table.shape[1:], dtype=np.int64)))
    dn2 = (((1,), (0,)), ((), ()))
    if table.vis.is_secret:
        t2 = L.per_share("reshape", [tbl], tflat_shape, tbl.dtype, tbl.scale,
                         primitive=jax.lax.reshape_p,
                         params=dict(new_sizes=tflat_shape, dimensions=None, sharding=None))
        r = L.new((flat.shape[0], tflat_shape[1]), dtype, SECRET, t2.scale)
        L.emit("dot_general_private", [flat, t2], [r], dimension_numbers=dn2, party=party,
               enc=0, plain_index=0)
    else:
        # the client shares its one-hot (0/1 integers, scale 0); the server's table stays
        # private to it: dot_general_private, result at the table's scale
        t2 = L.new(tflat_shape, tbl.dtype, tbl.vis, tbl.scale)
        L.emit("reshape_local", [tbl], [t2], kind="local", party=tbl.vis.party, fn="reshape",
               new_shape=tflat_shape)
        sflat = L.to_secret(flat)
        r = L.new((flat.shape[0], tflat_shape[1]), dtype, SECRET, t2.scale)
        L.emit("dot_general_private", [sflat, t2], [r], dimension_numbers=dn2,
               party=t2.vis.party, enc=t2.scale, plain_index=1)
    del rows
    return [L.per_share("reshape", [r], shape, dtype, r.scale, primitive=jax.lax.reshape_p,
                        params=dict(new_sizes=shape, dimensions=None, sharding=None))]


@rule("reduce_max", "reduce_min", "argmax", "argmin")
def _reduce_max(L, eqn, x):
    shape, dtype = _out(eqn)
    name = eqn.primitive.name
    axes = tuple(eqn.params["axes"])
    if len(axes) != 1:
        L.fail(f"{name} over several axes {axes} on a secret: reduce one axis at a time")
    if name in ("reduce_min", "argmin"):
        x = L.per_share("neg", [x], x.shape, x.dtype, x.scale)
    m, idx = tree_max(L, x, axes[0], name in ("argmax", "argmin"),
                      str(np.dtype(eqn.params.get("index_dtype", np.int32))))
    if name in ("argmax", "argmin"):
        return [_squeeze(L, idx, axes[0])]
    m = _squeeze(L, m, axes[0])
    if name == "reduce_min":
        m = L.per_share("neg", [m], m.shape, m.dtype, m.scale)
    return [m]


@rule("cond")
def _cond(L, eqn, index, *args):
    branches = eqn.params["branches"]
    if index.const is not None:   # a compile-time predicate: lower the chosen branch only
        i = int(np.clip(int(np.asarray(index.const)), 0, len(branches) - 1))
        return lower_jaxpr(L, branches[i].jaxpr, list(branches[i].consts), list(args))
    if len(branches) != 2:
        L.fail("cond with more than two branches and a non-constant index")
    for br in branches:
        for e in br.jaxpr.eqns:
            if getattr(e.primitive, "name", "") in ("io_callback", "debug_callback"):
                L.fail("cond with a secret predicate needs pure branches")
    outs = [lower_jaxpr(L, br.jaxpr, list(br.consts), list(args)) for br in branches]
    results = []
    for i, (f_, t_) in enumerate(zip(*outs)):
        L.eqn = eqn
        shape, dtype = _out(eqn, i)
        if f_ is t_:
            results.append(f_)
        elif _join([index, f_, t_]) is not None:
            results.append(L._local_fn("select", [index, f_, t_], shape, dtype))
        else:
            results.append(L.select(index, t_, f_, shape, dtype))
    return results


@rule("while", "scan", "fori_loop")
def _loops(L, eqn, *args):
    L.fail("secret-dependent control flow: a loop whose carried state is secret cannot branch "
           "on it; make the trip count public (e.g. a Python loop or unrolled scan)")


for _h in HEAVY:
    LOWER_RULES[_h] = (lambda h: lambda L, eqn, *a: L.fail(
        f"'{h}' on a secret: the policy does not approximate it (the rewrite pass should have "
        f"replaced it; choose a policy that covers this operator)"))(_h)


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


def batch_comparisons(ops: list[Op], next_id: int, config) -> tuple[list[Op], int]:
    """Merge independent comparisons into one protocol call.

    Why: an approximation such as the octave scaling of a reciprocal issues dozens of
    independent `drelu`s on the same input; one call on their concatenation sends the same bits
    in the same round but is one step instead of dozens, and one circuit for XLA to compile.
    Rule: a `drelu` is deferred (its operand is ready where it stood) until an op consumes one of
    the deferred results; then every deferred group is emitted. Only ops with the same input
    depth and scope are merged, so the critical path and the per-scope attribution are unchanged.
    """
    L = Lowerer(next_id=next_id)
    depth: dict[int, int] = {}
    groups: dict[tuple, list[Op]] = {}
    pending: set[int] = set()
    out: list[Op] = []

    def flush():
        for (_, scope), group in groups.items():
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
            L.ops.append(Op("drelu", (cat,), (bits,), {}, scope, group[0].where, "protocol"))
            start = 0
            for op in group:
                r = op.results[0]
                piece = L.new((r.size,), r.dtype, SECRET, 0)
                L.ops.append(Op("slice", (bits,), (piece,),
                                dict(primitive=jax.lax.slice_p,
                                     params=dict(start_indices=(start,),
                                                 limit_indices=(start + r.size,),
                                                 strides=(1,))), scope, op.where,
                                "share_local"))
                L.ops.append(Op("reshape", (piece,), (r,),
                                dict(primitive=jax.lax.reshape_p,
                                     params=dict(new_sizes=r.shape, dimensions=None,
                                                 sharding=None)), scope, op.where,
                                "share_local"))
                start += r.size
            for op in L.ops:
                if op.scope == "" and op.name in ("reshape", "concatenate"):
                    object.__setattr__(op, "scope", scope)
            out.extend(L.ops)
        groups.clear()
        pending.clear()

    from .cost import op_messages

    def place(op):
        d_in = max((depth.get(v.id, 0) for v in op.operands if v.vis.is_secret), default=0)
        d_out = d_in
        if op.kind == "protocol":
            d_out = 0 if op.name == "share" else d_in + max(
                (m.depth_offset for m in op_messages(op, config) if m.phase == "online"),
                default=0)
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
            groups.setdefault((d_in, op.scope), []).append(op)
            pending.update(r.id for r in op.results)
        else:
            out.append(op)
    flush()
    return out, L.next_id



# rules of further operators live in their own modules (issue 16); importing them registers them
from . import lower_cmp, lower_ops, lower_order  # noqa: E402,F401  (after LOWER_RULES is complete)
