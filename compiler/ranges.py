"""Static range analysis: interval propagation through the IR, from declared or observed input
ranges, to the places where a secret can exceed the ring's safe bound.

Why static. The runtime oracle (`check_overflow`) sees the values of ONE run; this pass bounds
every value for ALL inputs within the given ranges, before anything runs, and names the op, its
source line and module path. It is sound but pessimistic (intervals forget correlations: x - x
is [-2|x|, 2|x|]), so a finding says "can exceed", not "does".

A value's interval is (lo, hi) of its REAL value; a secret at fixed-point scale s is safe while
max(|lo|, |hi|) < 2^(l-2-s) (`ring.safe_bound`), the bound of the dealer truncation and of the
comparisons. Values whose range the pass cannot bound (a plaintext op it has no rule for) are
None and raise no finding; `analyze` counts them in `unknown`.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np

from pcformer.runtime import ring

from . import ir

Interval = tuple  # (lo, hi) floats


@dataclasses.dataclass(frozen=True)
class Finding:
    """A secret whose range can reach the safe bound of its fixed-point scale."""

    op: str
    value: int
    where: str
    scope: str
    lo: float
    hi: float
    bound: float

    why: str = "the ring's safe bound at its scale"

    def __str__(self):
        return (f"range: %{self.value} = {self.op} can reach |x| = {max(-self.lo, self.hi):g} "
                f">= {self.bound:g} ({self.why}) at "
                f"{self.where or '<unknown>'} (scope {self.scope or '<top>'})")


@dataclasses.dataclass
class Analysis:
    findings: list
    ranges: dict          # value id -> (lo, hi) or None
    unknown: int          # secrets whose range could not be bounded

    def __iter__(self):
        return iter(self.findings)

    def __len__(self):
        return len(self.findings)


# ------------------------------------------------------------------ interval arithmetic
def _hull(*ivs):
    if any(i is None for i in ivs):
        return None
    return (min(i[0] for i in ivs), max(i[1] for i in ivs))


def _add(a, b):
    return None if a is None or b is None else (a[0] + b[0], a[1] + b[1])


def _neg(a):
    return None if a is None else (-a[1], -a[0])


def _mul(a, b):
    if a is None or b is None:
        return None
    p = [x * y for x in a for y in b if not (math.isinf(x) or math.isinf(y)) or (x and y)]
    return (min(p), max(p)) if p else (0.0, 0.0)


def _scaled(a, n):
    """The sum of n values each in a."""
    return None if a is None else (min(a[0] * n, a[0]), max(a[1] * n, a[1]))


def _square(a):
    if a is None:
        return None
    m = max(a[0] * a[0], a[1] * a[1])
    return (0.0 if a[0] <= 0 <= a[1] else min(a[0] * a[0], a[1] * a[1]), m)


def _recip(a):
    if a is None or a[0] <= 0 <= a[1]:
        return None
    return (1.0 / a[1], 1.0 / a[0])


def _of_array(x) -> Interval | None:
    a = np.asarray(x, np.float64)
    if a.size == 0:
        return (0.0, 0.0)
    if not np.isfinite(a).all():
        return None
    return (float(a.min()), float(a.max()))


def _contraction(op) -> int:
    dn = op.attrs.get("dimension_numbers")
    x = op.operands[0]
    if not dn:
        return x.shape[-1] if x.shape else 1
    return int(np.prod([x.shape[i] for i in dn[0][0]], dtype=np.int64))


def _reduced(op) -> int:
    x, r = op.operands[0], op.results[0]
    return max(1, x.size // max(1, r.size))


_MONOTONE = {"exp": math.exp, "tanh": math.tanh, "logistic": lambda v: 1 / (1 + math.exp(-v)),
             "log": math.log, "sqrt": math.sqrt, "floor": math.floor, "ceil": math.ceil,
             "round": round, "erf": math.erf}
_STRUCTURAL = {"reshape", "transpose", "slice", "concatenate", "gather", "pad", "broadcast_in_dim",
               "squeeze", "expand_dims", "dynamic_slice", "dynamic_update_slice", "rev",
               "convert_element_type", "copy", "reduce_max", "reduce_min", "select_n", "max",
               "min", "sort", "stop_gradient", "reshape_local", "select", "select_public"}


def _safe_monotone(f, a):
    try:
        return (float(f(a[0])), float(f(a[1])))
    except (ValueError, OverflowError):
        return None


def _rule(op: ir.Op, ins: list):
    """The interval of op's first result from its operands' intervals (None: unknown)."""
    name = op.attrs.get("fn") or (op.attrs["primitive"].name if "primitive" in op.attrs
                                  else op.name) if op.kind == "local" else op.name
    a = ins[0] if ins else None
    if op.kind == "local" and op.name == "const":
        return _of_array(op.attrs["value"])
    if name == "one_hot" or name in ("drelu", "lt", "gt", "le", "ge", "eq", "ne", "and", "or",
                                     "not", "xor"):
        return (0.0, 1.0)
    if name == "argmax":
        return (0.0, float(op.operands[0].shape[op.attrs["axis"]] - 1))
    if name in ("add", "add_any"):
        return _add(ins[0], ins[1])
    if name == "sub":
        return _add(ins[0], _neg(ins[1]))
    if name == "neg":
        return _neg(a)
    if name in ("mul", "mul_private", "mul_public"):
        return _mul(ins[0], ins[1])
    if name in ("square",) or (name == "integer_pow" and op.attrs["params"].get("y") == 2):
        return _square(a)
    if name in ("dot_general", "dot_general_private", "dot_general_public"):
        return _scaled(_mul(ins[0], ins[1]), _contraction(op))
    if name in ("reduce_sum", "cumsum"):
        return _scaled(a, _reduced(op) if name == "reduce_sum" else op.operands[0].size)
    if name in ("truncate", "lift", "share", "from_public", "reveal"):
        return a
    if name == "relu":
        return None if a is None else (max(a[0], 0.0), max(a[1], 0.0))
    if name == "lut":
        return (min(op.attrs["table"]), max(op.attrs["table"]))
    if name in ("reciprocal", "div") and (name == "reciprocal" or len(ins) == 2):
        r = _recip(ins[-1])
        return r if name == "reciprocal" else _mul(ins[0], r)
    if name in _MONOTONE and a is not None:
        return _safe_monotone(_MONOTONE[name], a)
    if name == "abs" and a is not None:
        return (0.0 if a[0] <= 0 <= a[1] else min(abs(a[0]), abs(a[1])), max(-a[0], a[1]))
    if name in _STRUCTURAL or op.kind == "share_local":
        n_data = op.attrs.get("n_data", len(ins))
        data = ins[:n_data]
        if name in ("select", "select_n", "select_public"):
            data = ins[1:]
        return _hull(*data) if data else None
    return None


# ------------------------------------------------------------------ the pass
def analyze(prog: ir.Program, config, input_ranges) -> Analysis:
    """Propagate `input_ranges` (one (lo, hi) or None per flat input) through `prog`."""
    env: dict[int, Interval | None] = {}
    for v, r in zip(prog.inputs, input_ranges):
        env[v.id] = None if r is None else (float(r[0]), float(r[1]))
    findings, unknown = [], 0
    compared = comparison_bounds(prog, config)
    over: set = set()      # values already past the bound: only where it first happens is reported
    for op in prog.ops:
        inherited = any(v.id in over for v in op.operands)
        ins = [env.get(v.id) if v.const is None else _of_array(v.const) for v in op.operands]
        try:
            r = _rule(op, ins)
        except (KeyError, IndexError, TypeError):
            r = None
        for res in op.results:
            env[res.id] = r
            if not res.vis.is_secret:
                continue
            if r is None:
                unknown += 1
                continue
            bound, why = value_bound(res, config, compared)
            if max(-r[0], r[1]) >= bound:
                over.add(res.id)
                if not inherited:
                    findings.append(Finding(op.name, res.id, op.where, op.scope, r[0], r[1],
                                            bound, why))
    return Analysis(findings, env, unknown)


# IR ops that compare a secret operand, and k in the bound |x| < 2^(n-k) (ring units) that the
# comparison width n needs: drelu and relu read x's own sign; less, max and argmax the sign of a
# difference of two operands
_COMPARED = {"drelu": 1, "relu": 1, "less": 2, "less_public": 2, "max": 2, "argmax": 2}


def comparison_bounds(prog: ir.Program, config) -> dict:
    """value id -> the real bound 2^(n - k - scale) that `MPCConfig.compare_bits` (n) declares for
    each secret a comparison reads; empty when compare_bits is unset (the ring's safe bound,
    2^(l-2-scale), already keeps every comparison exact)."""
    n = getattr(config, "compare_bits", None)
    if not n:
        return {}
    out: dict = {}
    for op in prog.ops:
        k = _COMPARED.get(op.name)
        for v in op.operands if k is not None else ():
            if v.vis.is_secret:
                out[v.id] = min(float(2 ** (n - k - v.scale)), out.get(v.id, math.inf))
    return out


def value_bound(v: ir.Value, config, compared: dict) -> tuple[float, str]:
    """(bound, why): the tighter of the ring's safe bound and a comparison's declared width."""
    safe = ring.safe_bound(v.scale, config.ring_bits)
    if compared.get(v.id, math.inf) < safe:
        return compared[v.id], (f"a comparison's declared width, compare_bits="
                                f"{config.compare_bits}")
    return safe, "the ring's safe bound at its scale"


def _leaf_range(x):
    if x is None:
        return None
    if isinstance(x, (int, float)):
        return (-abs(float(x)), abs(float(x)))
    if isinstance(x, tuple) and len(x) == 2 and all(isinstance(t, (int, float)) for t in x):
        return (float(x[0]), float(x[1]))
    return _of_array(x)      # observed: the range of an example array


def flat_bounds(bounds, in_tree) -> list:
    """One (lo, hi) or None per flat input from per-argument bounds: a number m (|x| <= m), a
    (lo, hi) pair, None (unknown), or arrays / a pytree of arrays (observed ranges)."""
    import jax
    args = in_tree.children()
    if len(bounds) != len(args):
        raise ValueError(f"give one range per argument ({len(args)}), got {len(bounds)}")
    out = []
    for b, sub in zip(bounds, args):
        n = sub.num_leaves
        if b is None or isinstance(b, (int, float)) or (
                isinstance(b, tuple) and len(b) == 2 and all(isinstance(t, (int, float)) for t in b)):
            out += [_leaf_range(b)] * n
            continue
        leaves = jax.tree_util.tree_leaves(b)
        if len(leaves) != n:
            raise ValueError(f"a range pytree has {len(leaves)} leaves, its argument {n}")
        out += [_leaf_range(x) for x in leaves]
    return out


def warn(analysis: Analysis, limit: int = 10, stacklevel: int = 3) -> None:
    """One RuntimeWarning per finding (the first `limit`, then a count)."""
    for f in analysis.findings[:limit]:
        warnings.warn(str(f), RuntimeWarning, stacklevel=stacklevel)
    if len(analysis.findings) > limit:
        warnings.warn(f"range: {len(analysis.findings) - limit} more values can exceed the "
                      f"ring's safe bound", RuntimeWarning, stacklevel=stacklevel)
