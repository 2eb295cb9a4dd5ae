"""Lowering rules of the structural operators beyond the transformer core (issue 16).

Each rule is small and built from the Lowerer's building blocks (`add`, `mul`, `select`,
`ge_zero`, `truncate`, per-share structural ops), so its protocol cost is the sum of existing
protocol ops: no new runtime protocol, cost formula or ideal rule is needed, and the static cost
equals the measured ledger by construction. Registered into `lower_base.LOWER_RULES` on import
(`compiler/lower.py` imports this module at its end).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from .ir import Value
# the rules this module refines or replaces (integer_pow, max, min, reduce_max, stop_gradient,
# scan) must be registered first: imported here, so the order holds whoever imports first
from . import lower_arith, lower_control, lower_struct  # noqa: F401
from .lower_base import LOWER_RULES, _out, rule
from .lower_walk import (_as_secrets, _concat, _plain_reshape, _slice, _squeeze, _transpose,
                         lower_jaxpr, tree_max)


@dataclasses.dataclass(frozen=True)
class Permuted:
    """A primitive whose operands the per-share executor passes in another order: it binds
    data operands (the shares) first, then public ones; scatter wants (operand, indices,
    updates). `order[i]` is the position, among the executor's arguments, of operand i."""

    prim: object
    order: tuple

    @property
    def multiple_results(self):
        return self.prim.multiple_results

    def bind(self, *args, **params):
        args = [args[i] for i in self.order]
        if getattr(self.prim, "name", "") == "scatter-add":
            # the traced update_jaxpr adds floats; the shares are ring integers
            params = {k: v for k, v in params.items() if k not in ("update_jaxpr",
                                                                   "update_consts")}
            return jax.lax.scatter_add(*args, **params)
        return self.prim.bind(*args, **params)

    def __repr__(self):
        return f"Permuted({self.prim}, {self.order})"


def _public_only(L, name, vals):
    for v in vals:
        if not v.vis.is_public:
            L.fail(f"{name} with indices that are not public ({v.vis}): only public indices "
                   f"are supported on secret data")


def merge_axes_last(L, x: Value, axes) -> Value:
    """x with `axes` moved to the end and merged into one trailing axis (free, per share)."""
    axes = tuple(sorted(int(a) % len(x.shape) for a in axes))
    keep = [i for i in range(len(x.shape)) if i not in axes]
    t = _transpose(L, x, keep + list(axes))
    k = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    return _plain_reshape(L, t, tuple(x.shape[i] for i in keep) + (k,))


# ------------------------------------------------------------------ identity-like
@rule("stop_gradient", "optimization_barrier")
def _identity(L, eqn, *vals):
    """No gradient flows in a forward pass: stop_gradient is the identity."""
    return list(vals)


@rule("stack")
def _stack(L, eqn, *vals):
    data, s = _as_secrets(L, vals)
    shape, dtype = _out(eqn)
    return [L.per_share("stack", data, shape, dtype, s, primitive=eqn.primitive,
                        params=dict(eqn.params), n_data=len(data))]


_integer_pow_base = LOWER_RULES["integer_pow"]


@rule("integer_pow")
def _integer_pow(L, eqn, x):
    """x ** 0 = 1 (public, free); other exponents as before (square-and-multiply)."""
    if int(eqn.params["y"]) == 0:
        shape, dtype = _out(eqn)
        return [L.const(np.ones(shape, dtype))]
    return _integer_pow_base(L, eqn, x)


@rule("is_finite")
def _is_finite(L, eqn, x):
    """A fixed-point share is always finite: true, public, free."""
    shape, _ = _out(eqn)
    return [L.const(np.ones(shape, bool))]


# ------------------------------------------------------------------ scatter with public indices
@rule("scatter", "scatter-add", "scatter_add")
def _scatter(L, eqn, operand, indices, updates):
    """operand.at[idx].set/add(updates) with public indices: applied to each share (a sum of
    shares scatters to the sum; a set overwrites both shares)."""
    _public_only(L, eqn.primitive.name, [indices])
    (operand, updates), s = _as_secrets(L, [operand, updates])
    shape, dtype = _out(eqn)
    return [L.per_share(eqn.primitive.name, [operand, updates, indices], shape, dtype, s,
                        primitive=Permuted(eqn.primitive, (0, 2, 1)),
                        params=dict(eqn.params), n_data=2)]


# ------------------------------------------------------------------ reductions
_reduce_max_base = LOWER_RULES["reduce_max"]


@rule("reduce_max", "reduce_min")
def _reduce_max_axes(L, eqn, x):
    """max/min over any number of axes: the axes merged into one (free), then the tree."""
    axes = tuple(eqn.params["axes"])
    if len(axes) == 1:
        return _reduce_max_base(L, eqn, x)
    if not axes:
        return [x]
    name = eqn.primitive.name
    flat = merge_axes_last(L, x, axes)
    if name == "reduce_min":
        flat = L.per_share("neg", [flat], flat.shape, flat.dtype, flat.scale)
    m, _ = tree_max(L, flat, len(flat.shape) - 1, False)
    m = _squeeze(L, m, len(flat.shape) - 1)
    if name == "reduce_min":
        m = L.per_share("neg", [m], m.shape, m.dtype, m.scale)
    return [m]


@rule("reduce_prod")
def _reduce_prod(L, eqn, x):
    """Product over axes by a tree: ceil(log2 k) levels of Beaver products (one round each)."""
    axes = tuple(eqn.params["axes"])
    shape, dtype = _out(eqn)
    if not axes:
        return [x]
    v = merge_axes_last(L, x, axes)
    ax = len(v.shape) - 1
    while v.shape[ax] > 1:
        n = v.shape[ax]
        h = n // 2
        a, b = _slice(L, v, ax, 0, 2 * h, 2), _slice(L, v, ax, 1, 2 * h, 2)
        m = L.mul(a, b, shape=a.shape, dtype=dtype)
        v = _concat(L, [m, _slice(L, v, ax, 2 * h, n)], ax) if n % 2 else m
    if not v.vis.is_secret:
        v = L.to_secret(v)
    return [_plain_reshape(L, v, shape)]


@rule("reduce_and", "reduce_or")
def _reduce_and_or(L, eqn, x):
    """all: the product tree of the bits; any: 1 - all(1 - x) (De Morgan), same tree."""
    if eqn.primitive.name == "reduce_or":
        x = L.one_minus(x)
    v = _reduce_prod(L, eqn, x)[0]
    if eqn.primitive.name == "reduce_or":
        v = L.one_minus(v)
    return [v]


# ------------------------------------------------------------------ loops with a public trip count
def _index0(L, v: Value, i: int) -> Value:
    """v[i] along the leading axis (free)."""
    piece = _slice(L, v, 0, i, i + 1)
    return _plain_reshape(L, piece, tuple(v.shape[1:]))


@rule("scan")
def _scan(L, eqn, *args):
    """lax.scan with a public trip count: unrolled (the body lowered `length` times). Each
    iteration's ops are the body's; ys are stacked at the end (free)."""
    p = eqn.params
    n_c, n_carry, length = p["num_consts"], p["num_carry"], int(p["length"])
    body = p["jaxpr"]
    consts, carry, xs = list(args[:n_c]), list(args[n_c:n_c + n_carry]), list(args[n_c + n_carry:])
    ys_by_step: dict[int, list] = {}
    steps = range(length - 1, -1, -1) if p.get("reverse", False) else range(length)
    for i in steps:
        x_i = [_index0(L, x, i) for x in xs]
        outs = lower_jaxpr(L, body.jaxpr, list(body.consts), consts + carry + x_i)
        L.eqn = eqn
        carry, ys_by_step[i] = list(outs[:n_carry]), list(outs[n_carry:])
    results = list(carry)
    for k in range(len(eqn.outvars) - n_carry):
        shape, dtype = _out(eqn, n_carry + k)
        parts = [_plain_reshape(L, ys_by_step[i][k], (1,) + tuple(ys_by_step[i][k].shape))
                 for i in range(length)]
        if not parts:
            results.append(L.const(np.zeros(shape, dtype)))
            continue
        results.append(_concat(L, parts, 0))
    return results


# ------------------------------------------------------------------ max/min with infinite bounds
def _infinite(v: Value, sign: float) -> bool:
    return v.const is not None and np.issubdtype(np.asarray(v.const).dtype, np.floating) and \
        bool(np.all(np.asarray(v.const) == sign * np.inf))


def _with_infinite_bounds(base, identity_sign: float):
    """max(x, -inf) = x and min(x, +inf) = x (jnp.max's `initial=-inf`, as in log_softmax);
    max(x, +inf) = +inf and min(x, -inf) = -inf, public. Everything else: `base`."""
    def lower_rule(L, eqn, a, b):
        shape, dtype = _out(eqn)
        for x, c in ((a, b), (b, a)):
            if _infinite(c, identity_sign):
                return [_broadcast(L, x, shape)]
            if _infinite(c, -identity_sign):
                return [L.const(np.full(shape, -identity_sign * np.inf, dtype))]
        return base(L, eqn, a, b)
    return lower_rule


def _broadcast(L, x: Value, shape) -> Value:
    if tuple(x.shape) == tuple(shape):
        return x
    x = x if x.vis.is_secret else L.to_secret(x)
    dims = tuple(range(len(shape) - len(x.shape), len(shape)))
    return L.per_share("broadcast_in_dim", [x], tuple(shape), x.dtype, x.scale,
                       primitive=jax.lax.broadcast_in_dim_p,
                       params=dict(shape=tuple(shape), broadcast_dimensions=dims,
                                   sharding=None))


LOWER_RULES["max"] = _with_infinite_bounds(LOWER_RULES["max"], -1.0)
LOWER_RULES["min"] = _with_infinite_bounds(LOWER_RULES["min"], 1.0)


# ------------------------------------------------------------------ refusals, with the reason
REFUSED = {
    "nextafter": "the next float is a property of the float encoding; shares are fixed point",
    "bitcast_convert_type": "a secret's IEEE bit pattern does not exist (shares are fixed "
                            "point); use comparisons (e.g. x < 0 for signbit)",
    "fft": "no secure FFT protocol here (it is linear: a public DFT matrix product works; "
           "write it as a matmul)",
    "shift_left": "bit shifts of secret integers need a bit decomposition",
    "shift_right_logical": "bit shifts of secret integers need a bit decomposition",
    "shift_right_arithmetic": "bit shifts of secret integers need a bit decomposition",
    "population_count": "needs a bit decomposition of the secret",
    "clz": "needs a bit decomposition of the secret",
    "random_bits": "randomness inside a private program must come from the runtime",
    "lgamma": "no MPC approximation of lgamma here",
    "digamma": "no MPC approximation of digamma here",
    "igamma": "no MPC approximation of the incomplete gamma function here",
    "erf_inv": "no MPC approximation of erf_inv here",
    "lu": "matrix decompositions of secrets are not supported (no pivoting on secrets)",
    "cholesky": "matrix decompositions of secrets are not supported",
    "qr": "matrix decompositions of secrets are not supported",
    "svd": "matrix decompositions of secrets are not supported",
    "eig": "matrix decompositions of secrets are not supported",
    "eigh": "matrix decompositions of secrets are not supported",
    "triangular_solve": "solving with a secret matrix needs secret divisions per row; not "
                        "supported",
    "cumprod": "write the running product as a scan (unrolled) or reduce_prod",
    "cummax": "write the running maximum with jnp.maximum in a scan (unrolled)",
    "cummin": "write the running minimum with jnp.minimum in a scan (unrolled)",
    "cumlogsumexp": "not supported on secrets",
    "while": "secret-dependent control flow: a loop cannot branch on a secret; give it a public "
             "trip count (lax.scan / fori_loop with constant bounds is unrolled)",
}


def _refuse(reason: str):
    def lower_rule(L, eqn, *vals):
        L.fail(f"'{eqn.primitive.name}' on a secret is not supported: {reason}")
    lower_rule.__doc__ = f"Refused: {reason}."
    return lower_rule


for _name, _reason in REFUSED.items():
    LOWER_RULES.setdefault(_name, _refuse(_reason))
