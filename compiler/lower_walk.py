"""Lowering, the walker and shared value helpers: `lower_jaxpr` lowers one jaxpr equation by
equation (plaintext ops stay local; the others go to their rule in `LOWER_RULES`), and the
free per-share helpers several rule families use (slices, concatenation, tree maximum)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import compat
from .ir import Value
from .lower_base import LOWER_RULES, MAX_FOLD, Lowerer, _join, _sub_jaxpr


def _local(L: Lowerer, eqn, vals: list[Value]) -> list[Value]:
    vis = _join(vals)
    consts = [v.const for v in vals]
    folded = None
    if vis.is_public and all(c is not None for c in consts) and \
            all(int(np.prod(v.aval.shape, dtype=np.int64)) <= MAX_FOLD for v in eqn.outvars):
        try:
            out = eqn.primitive.bind(*[jnp.asarray(c) for c in consts], **eqn.params)
            folded = [np.asarray(o) for o in (out if eqn.primitive.multiple_results else [out])]
        except Exception:  # not foldable (effects, ...): computed at run time instead
            folded = None
    results = []
    for i, ov in enumerate(eqn.outvars):
        shape, dtype = tuple(ov.aval.shape), str(np.dtype(ov.aval.dtype))
        c = folded[i] if folded is not None else None
        results.append(L.new(shape, dtype, vis, L.plain_scale(dtype, c), const=c))
    if folded is not None:
        for r, c in zip(results, folded):
            L.emit("const", [], [r], kind="local", party=None, value=c)
    else:
        L.emit(eqn.primitive.name, vals, results, kind="local", party=vis.party,
               primitive=eqn.primitive, params=dict(eqn.params))
    return results


def lower_jaxpr(L: Lowerer, jaxpr, consts: list, args: list[Value]) -> list[Value]:
    """Lower one jaxpr given its operand Values; returns the output Values."""
    consts = [c if isinstance(c, Value) else L.const(np.asarray(c)) for c in consts]

    def literal(x) -> Value:
        return L.const(np.asarray(x.val, dtype=x.aval.dtype))

    def step(_, eqn, read) -> list[Value]:
        L.eqn = eqn
        vals = [read(x) for x in eqn.invars]
        name = eqn.primitive.name
        if name in compat.CALL_PRIMITIVES:
            sub, sub_consts = _sub_jaxpr(eqn)
            return lower_jaxpr(L, sub, sub_consts, vals)
        if _join(vals) is not None:
            return _local(L, eqn, vals)
        rule_ = LOWER_RULES.get(name)
        if rule_ is None:
            L.fail(f"unsupported primitive '{name}' on secret or cross-party data "
                   f"(see docs/compiler.md for the supported list)")
        outs = rule_(L, eqn, *vals)
        L.eqn = eqn
        return outs

    outs = compat.walk(jaxpr, consts, args, step, literal)
    L.eqn = None
    return outs


def _slice(L, x: Value, axis: int, start: int, stop: int, step: int = 1) -> Value:
    """x[start:stop:step] along axis, share by share (free)."""
    lo, hi, st = [0] * len(x.shape), list(x.shape), [1] * len(x.shape)
    lo[axis], hi[axis], st[axis] = start, stop, step
    shape = list(x.shape)
    shape[axis] = len(range(start, stop, step))
    params = dict(start_indices=tuple(lo), limit_indices=tuple(hi), strides=tuple(st))
    return _shape_op(L, jax.lax.slice_p, x, shape, params)


def _shape_op(L, primitive, x: Value, shape, params: dict) -> Value:
    """A free shape primitive on x: per share if x is secret, else local to its holder."""
    name = primitive.name
    if x.vis.is_secret:
        return L.per_share(name, [x], tuple(shape), x.dtype, x.scale, primitive=primitive,
                           params=params)
    r = L.new(tuple(shape), x.dtype, x.vis, x.scale)
    L.emit(name, [x], [r], kind="local", party=x.vis.party, primitive=primitive, params=params)
    return r


def _concat(L, parts: list[Value], axis: int) -> Value:
    shape = list(parts[0].shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    parts, s = L.common(parts)
    parts = [p if p.vis.is_secret else L.to_secret(p, s) for p in parts]
    return L.per_share("concatenate", parts, tuple(shape), parts[0].dtype, s,
                       primitive=jax.lax.concatenate_p, params=dict(dimension=axis),
                       n_data=len(parts))


def tree_max(L, x: Value, axis: int, with_index: bool, index_dtype="int32"):
    """Maximum (and first argmax) over one axis by a tree of ceil(log2 k) levels.

    Each level compares the even and odd halves: without the index, max = b + relu(a - b);
    with it, bit = [a >= b] (drelu of a - b), max = b + bit * (a - b) and ib + bit * (ia - ib).
    While the indices are still public, selecting them is a free product by a public
    difference; afterwards one Beaver mul per level. Ties keep the earlier index, like
    jnp.argmax."""
    x = L.for_compare(x)
    k = x.shape[axis]
    idx = None
    if with_index:
        shape = [1] * len(x.shape)
        shape[axis] = k
        ar = np.broadcast_to(np.arange(k, dtype=index_dtype).reshape(shape), x.shape).copy()
        idx = L.const(ar)
    while x.shape[axis] > 1:
        n = x.shape[axis]
        h = n // 2
        a, b = _slice(L, x, axis, 0, 2 * h, 2), _slice(L, x, axis, 1, 2 * h, 2)
        d = L.add(a, b, sub=True, shape=a.shape, dtype=a.dtype)
        if not with_index:     # b + relu(a - b): one op (the FSS family's relu is one round)
            m = L.for_compare(L.add(L.relu(d), b, shape=a.shape, dtype=a.dtype))
            x = _concat(L, [m, _slice(L, x, axis, 2 * h, n)], axis) if n % 2 else m
            continue
        bit = L.ge_zero(d, a.shape)
        m = L.add(L.mul(d, bit, shape=a.shape, dtype=a.dtype), b, shape=a.shape, dtype=a.dtype)
        m = L.for_compare(m)
        if with_index:
            ia, ib = _slice(L, idx, axis, 0, 2 * h, 2), _slice(L, idx, axis, 1, 2 * h, 2)
            di = L.add(ia, ib, sub=True, shape=ia.shape, dtype=index_dtype) \
                if (ia.vis.is_secret or ib.vis.is_secret) else \
                L._local_fn("sub", [ia, ib], ia.shape, index_dtype)
            sel = L.add(L.mul(di, bit, shape=ia.shape, dtype=index_dtype), ib,
                        shape=ia.shape, dtype=index_dtype)
            idx = _concat(L, [sel, _slice(L, idx, axis, 2 * h, n)], axis) if n % 2 else sel
        x = _concat(L, [m, _slice(L, x, axis, 2 * h, n)], axis) if n % 2 else m
    return x, idx


def _squeeze(L, v: Value, axis: int) -> Value:
    shape = tuple(d for i, d in enumerate(v.shape) if i != axis)
    return L.per_share("reshape", [v], shape, v.dtype, v.scale, primitive=jax.lax.reshape_p,
                       params=dict(new_sizes=shape, dimensions=None, sharding=None))


def _as_secrets(L, vals):
    vals, s = L.common(list(vals))
    return [v if v.vis.is_secret else L.to_secret(v, s) for v in vals], s


def _plain_reshape(L, v: Value, shape) -> Value:
    params = dict(new_sizes=tuple(shape), dimensions=None, sharding=None)
    return _shape_op(L, jax.lax.reshape_p, v, shape, params)


def _transpose(L, v: Value, perm) -> Value:
    perm = tuple(int(p) for p in perm)
    if perm == tuple(range(len(perm))):
        return v
    shape = tuple(v.shape[p] for p in perm)
    return L.per_share("transpose", [v], shape, v.dtype, v.scale, primitive=jax.lax.transpose_p,
                       params=dict(permutation=perm))
