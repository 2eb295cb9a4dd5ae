"""Lowering rules of order and window operators on secrets (issue 16): sort / argsort / top_k by
Batcher's odd-even merge sorting network, pooling (reduce_window max / sum) and convolution
(conv_general_dilated) as im2col + one product.

Sorting network: ceil(log2 n) (ceil(log2 n) + 1) / 2 rounds of disjoint compare-and-swaps; a
round gathers its pairs' two sides with public 0/1 matrices (free per-share products), compares
them all in one batched `drelu`, swaps with one Beaver product per operand (the bit times the
difference) and scatters back with public matrices. Non-powers of two: the network of the next
power of two without the comparators that touch the padding (padding is +inf and stays put).
Registered into `lower_base.LOWER_RULES` on import.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from .ir import Value
from .lower_base import LOWER_RULES, _out, rule
from .lower_walk import _as_secrets, _concat, _plain_reshape, _squeeze, _transpose, tree_max


@functools.lru_cache(maxsize=None)
def batcher_rounds(n: int) -> tuple:
    """Rounds of (i, j) compare-and-swap pairs (i < j, disjoint within a round) sorting n
    elements ascending: Batcher's odd-even merge sort."""
    size = 1
    while size < n:
        size *= 2
    rounds = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            pairs = []
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p) and i + j + k < n:
                        pairs.append((i + j, i + j + k))
            if pairs:
                rounds.append(tuple(pairs))
            k //= 2
        p *= 2
    return tuple(rounds)


def _matmul_public(L, x: Value, m: np.ndarray) -> Value:
    """x[..., n] @ m[n, k] with a public integer matrix: free per share."""
    c = L.const(m.astype(np.int32))
    nd = len(x.shape)
    dn = (((nd - 1,), (0,)), ((), ()))
    shape = tuple(x.shape[:-1]) + (m.shape[1],)
    return L.per_share("dot_general_public", [x, c], shape, x.dtype, x.scale,
                       dimension_numbers=dn, enc=0, plain_index=1)


def _selector(n: int, idx) -> np.ndarray:
    m = np.zeros((n, len(idx)), np.int32)
    m[list(idx), np.arange(len(idx))] = 1
    return m


def sort_last(L, keys: Value, payloads: list, descending: bool = False):
    """Sort along the last axis by `keys` (secret), permuting `payloads` the same way."""
    n = keys.shape[-1]
    vals = [v if v.vis.is_secret else L.to_secret(v) for v in [keys] + list(payloads)]
    for pairs in batcher_rounds(n):
        I, J = [p[0] for p in pairs], [p[1] for p in pairs]
        PI, PJ = _selector(n, I), _selector(n, J)
        rest = np.eye(n, dtype=np.int32)
        rest[I + J, I + J] = 0
        a, b = _matmul_public(L, vals[0], PI), _matmul_public(L, vals[0], PJ)
        shape = a.shape
        # swap where out of order: a > b ascending (a < b descending); ties stay
        d = L.add(b, a, sub=True, shape=shape, dtype=a.dtype) if not descending else \
            L.add(a, b, sub=True, shape=shape, dtype=a.dtype)
        swap = L.one_minus(L.ge_zero(d, shape))
        new = []
        for v in vals:
            va, vb = _matmul_public(L, v, PI), _matmul_public(L, v, PJ)
            diff = L.add(vb, va, sub=True, shape=shape, dtype=v.dtype)
            t = L.mul(diff, swap, shape=shape, dtype=v.dtype)
            lo = L.add(va, t, shape=shape, dtype=v.dtype)
            hi = L.add(vb, t, sub=True, shape=shape, dtype=v.dtype)
            parts = [_matmul_public(L, v, rest), _matmul_public(L, lo, PI.T),
                     _matmul_public(L, hi, PJ.T)]
            parts, _ = _as_secrets(L, parts)
            acc = L.add(parts[0], parts[1], shape=v.shape, dtype=v.dtype)
            new.append(L.add(acc, parts[2], shape=v.shape, dtype=v.dtype))
        vals = [L.for_compare(new[0])] + new[1:]
    return vals


def _to_last(L, v: Value, axis: int) -> Value:
    nd = len(v.shape)
    perm = [i for i in range(nd) if i != axis] + [axis]
    return _transpose(L, v if v.vis.is_secret else L.to_secret(v), perm)


def _from_last(L, v: Value, axis: int) -> Value:
    nd = len(v.shape)
    perm = [i for i in range(nd) if i != axis] + [axis]
    inv = list(np.argsort(perm))
    return _transpose(L, v, inv)


@rule("sort")
def _sort(L, eqn, *operands):
    """Batcher's odd-even merge sort along `dimension`: O(log^2 n) rounds of compare-and-swap
    (one batched `drelu`, one `mul` per operand per round); argsort carries the indices."""
    if int(eqn.params.get("num_keys", 1)) != 1:
        L.fail("sort by several keys on secrets is not supported (sort by one key)")
    axis = int(eqn.params["dimension"]) % len(operands[0].shape)
    vals = [_to_last(L, v, axis) for v in operands]
    vals = sort_last(L, vals[0], vals[1:])
    return [_from_last(L, v, axis) for v in vals]


@rule("top_k")
def _top_k(L, eqn, x, *rest):
    """The k largest along the last axis (descending) and their indices: the sorting network
    in descending order carrying public indices, then the first k (free)."""
    k = int(eqn.params["k"])
    n = x.shape[-1]
    iota = L.const(np.broadcast_to(np.arange(n, dtype=np.int32), x.shape).copy())
    x = x if x.vis.is_secret else L.to_secret(x)
    vals, idx = sort_last(L, x, [iota], descending=True)
    shape_v, dtype_v = _out(eqn, 0)
    shape_i, dtype_i = _out(eqn, 1)
    take = _selector(n, list(range(k)))
    v = _matmul_public(L, vals, take)
    i = _matmul_public(L, idx, take)
    i = L.per_share("convert_element_type", [i], shape_i, dtype_i, 0,
                    primitive=jax.lax.convert_element_type_p,
                    params=dict(new_dtype=np.dtype(dtype_i), weak_type=False, sharding=None))
    return [v, i]


# ------------------------------------------------------------------ windows: pooling, convolution
_PAD_MAX = -float(2 ** 30)   # padding of a max window: below any value in range, still encodable


def _pad(L, x: Value, pads, value: float) -> Value:
    """x padded (lo, hi) per axis with a public value (free per share)."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    pv = L.to_secret(L.const(np.asarray(value, np.float32)), x.scale)
    cfg = tuple((int(lo), int(hi), 0) for lo, hi in pads)
    shape = tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, pads))
    return L.per_share("pad", [x, pv], shape, x.dtype, x.scale, primitive=jax.lax.pad_p,
                       params=dict(padding_config=cfg), n_data=2)


def _window_slices(L, x: Value, window, strides, wdil, out_shape):
    """One strided slice of x per window offset (free): x[off*wdil :: stride] of out_shape."""
    slices = []
    for off in np.ndindex(*window):
        start = tuple(int(o) * int(d) for o, d in zip(off, wdil))
        limit = tuple(s + (n - 1) * st + 1 for s, n, st in zip(start, out_shape, strides))
        slices.append(L.per_share("slice", [x], tuple(out_shape), x.dtype, x.scale,
                                  primitive=jax.lax.slice_p,
                                  params=dict(start_indices=start, limit_indices=limit,
                                              strides=tuple(int(s) for s in strides))))
    return slices


def _window_params(L, eqn):
    p = eqn.params
    if any(int(b) != 1 for b in p.get("base_dilation", ())):
        L.fail("reduce_window with base dilation on secrets is not supported")
    return (tuple(p["window_dimensions"]), tuple(p["window_strides"]), tuple(p["padding"]),
            tuple(p.get("window_dilation", (1,) * len(p["window_dimensions"]))))


@rule("reduce_window_sum", "reduce_window_max", "reduce_window_min")
def _reduce_window(L, eqn, x):
    """Pooling: one strided slice per window offset (free), then a sum (free) or a max tree
    over the offsets (ceil(log2 window) levels of `drelu` + `mul`)."""
    name = eqn.primitive.name
    window, strides, pads, wdil = _window_params(L, eqn)
    shape, dtype = _out(eqn)
    x = L.for_compare(x if x.vis.is_secret else L.to_secret(x))
    if name == "reduce_window_min":
        x = L.per_share("neg", [x], x.shape, x.dtype, x.scale)
    x = _pad(L, x, pads, 0.0 if name == "reduce_window_sum" else _PAD_MAX)
    slices = _window_slices(L, x, window, strides, wdil, shape)
    if name == "reduce_window_sum":
        acc = slices[0]
        for s in slices[1:]:
            acc = L.add(acc, s, shape=shape, dtype=dtype)
        return [acc]
    cols = [_plain_reshape(L, s, tuple(shape) + (1,)) for s in slices]
    m, _ = tree_max(L, _concat(L, cols, len(shape)), len(shape), False)
    m = _squeeze(L, m, len(shape))
    if name == "reduce_window_min":
        m = L.per_share("neg", [m], m.shape, m.dtype, m.scale)
    return [m]


class _DotEqn:
    """The shape of a dot_general equation, for reusing the dot_general rule inside another
    rule (it reads the output aval, the dimension numbers and the primitive's name)."""

    def __init__(self, shape, dtype, dn):
        self.outvars = [type("V", (), {"aval": jax.core.ShapedArray(shape, dtype)})()]
        self.params = {"dimension_numbers": dn}
        self.primitive = jax.lax.dot_general_p


def _plain_transpose(L, v: Value, perm) -> Value:
    if v.vis.is_secret:
        return _transpose(L, v, perm)
    perm = tuple(int(p) for p in perm)
    shape = tuple(v.shape[p] for p in perm)
    r = L.new(shape, v.dtype, v.vis, v.scale)
    L.emit("transpose", [v], [r], kind="local", party=v.vis.party,
           primitive=jax.lax.transpose_p, params=dict(permutation=perm))
    return r


@rule("conv_general_dilated")
def _conv(L, eqn, lhs, rhs):
    """Convolution as im2col + one product: the input's patches by strided slices (free), the
    kernel reshaped to (window * in, out), then the dot_general rule (a server-owned kernel:
    `dot_general_private`, its mask opened once at setup; a secret kernel: a matrix triple)."""
    p = eqn.params
    if int(p["feature_group_count"]) != 1 or int(p["batch_group_count"]) != 1:
        L.fail("grouped (depthwise) convolution on secrets is not supported")
    if any(int(d) != 1 for d in p["lhs_dilation"]):
        L.fail("transposed convolution (lhs dilation) on secrets is not supported")
    dn = p["dimension_numbers"]
    lspec, rspec, ospec = tuple(dn.lhs_spec), tuple(dn.rhs_spec), tuple(dn.out_spec)
    shape, dtype = _out(eqn)
    x = lhs if lhs.vis.is_secret else L.to_secret(lhs)
    x = _transpose(L, x, (lspec[0],) + lspec[2:] + (lspec[1],))       # N, spatial..., C
    nsp = len(lspec) - 2
    window = tuple(rhs.shape[d] for d in rspec[2:])
    out_sp = tuple(shape[d] for d in ospec[2:])
    n, c = x.shape[0], x.shape[-1]
    x = _pad(L, x, ((0, 0),) + tuple(tuple(pp) for pp in p["padding"]) + ((0, 0),), 0.0)
    slices = _window_slices(L, x, (1,) + window + (1,), (1,) + tuple(p["window_strides"]) + (1,),
                            (1,) + tuple(p["rhs_dilation"]) + (1,), (n,) + out_sp + (c,))
    cols = [_plain_reshape(L, s, (n,) + out_sp + (1, c)) for s in slices]
    k = len(cols)
    patches = _plain_reshape(L, _concat(L, cols, nsp + 1), (n,) + out_sp + (k * c,))
    w = _plain_transpose(L, rhs, rspec[2:] + (rspec[1], rspec[0]))      # spatial..., I, O
    w = _plain_reshape(L, w, (k * c, rhs.shape[rspec[0]]))
    o = rhs.shape[rspec[0]]
    dot_dn = (((nsp + 1,), (0,)), ((), ()))
    y = LOWER_RULES["dot_general"](L, _DotEqn((n,) + out_sp + (o,), dtype, dot_dn), patches, w)[0]
    L.eqn = eqn
    inv = np.argsort((ospec[0],) + ospec[2:] + (ospec[1],))
    return [_transpose(L, y, tuple(int(i) for i in inv))]
