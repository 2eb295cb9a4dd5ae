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

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import ir
from .ir import PUBLIC, SECRET, PRIVATE, Value, Op

# Operators the rewrite pass must have replaced before lowering (error if left on a secret).
HEAVY = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv",
    "rsqrt", "sqrt", "cbrt", "pow", "sin", "cos", "tan", "atan2", "lgamma", "digamma",
})
# Sub-jaxpr wrappers inlined during lowering (trace.trace already inlines them; this is a
# second line of defence so that lowering also works on a raw jax.make_jaxpr).
CALLS = frozenset({"pjit", "jit", "closed_call", "core_call", "custom_jvp_call",
                   "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint",
                   "custom_lin"})
MAX_FOLD = 1 << 20          # constant-fold public values up to this many elements
MAX_INT_CONST = 1 << 20     # integer-valued public constants up to this magnitude get scale 0


class LoweringError(ValueError):
    """A program that cannot be lowered to the two-party protocols, with the reason."""


def _scope(eqn, root=None) -> str:
    try:
        from . import trace as _trace
        return _trace.scope_of(eqn, root)
    except Exception:  # trace module not there yet, or an eqn without name stack
        try:
            return str(eqn.source_info.name_stack)
        except Exception:
            return ""


def _where(eqn, root=None) -> str:
    try:
        from . import trace as _trace
        return _trace.where(eqn, root)
    except Exception:
        try:
            from jax._src import source_info_util  # fallback only; compat.py owns JAX internals
            return source_info_util.summarize(eqn.source_info)
        except Exception:
            return "<unknown location>"


def _sub_jaxpr(eqn):
    """The (closed) sub-jaxpr of a call-like equation, as (jaxpr, consts)."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr") and hasattr(j, "consts"):
            return j.jaxpr, list(j.consts)
        if hasattr(j, "eqns"):
            return j, []
    raise LoweringError(f"cannot find the body of {eqn.primitive.name} at {_where(eqn)}")


def _is_literal(x) -> bool:
    return hasattr(x, "val") and not hasattr(x, "count") and type(x).__name__ == "Literal"


@dataclasses.dataclass
class Lowerer:
    """Mutable state of one lowering: the op list, fresh ids, and the share cache."""

    frac_bits: int = 16
    reveal_to: int = 1
    ring_bits: int = 64
    ops: list = dataclasses.field(default_factory=list)
    next_id: int = 0
    shared: dict = dataclasses.field(default_factory=dict)   # (private id, scale) -> secret
    truncated: dict = dataclasses.field(default_factory=dict)  # (secret id, scale) -> secret
    scaled: dict = dataclasses.field(default_factory=dict)     # id of c*s -> (s, public c)
    eqn: Any = None                                           # equation being lowered
    root: str | None = None                                   # root module name (scopes)
    _loc: Any = dataclasses.field(default=None, repr=False)   # (eqn, scope, where) memo

    # ---------------------------------------------------------------- values and ops
    def new(self, shape, dtype, vis, scale=0, const=None) -> Value:
        v = Value(self.next_id, tuple(int(d) for d in shape), str(np.dtype(dtype)), vis,
                  int(scale), const)
        self.next_id += 1
        return v

    def _location(self, eqn) -> tuple[str, str]:
        """(scope, where) of an equation, computed once per equation: one equation emits many
        ops, and reading a source location walks its traceback (a hot spot on large models)."""
        if eqn is None:
            return "", ""
        if self._loc is None or self._loc[0] is not eqn:
            self._loc = (eqn, _scope(eqn, self.root), _where(eqn, self.root))
        return self._loc[1], self._loc[2]

    def emit(self, name, operands, results, kind="protocol", party=None, **attrs) -> Op:
        if kind == "protocol" and party is not None:
            attrs["party"] = party        # the protocol's party argument
        scope, where = self._location(self.eqn)
        op = Op(name, tuple(operands), tuple(results), dict(attrs), scope, where, kind, party)
        self.ops.append(op)
        return op

    def fail(self, msg: str):
        eqn = self.eqn
        if eqn is None:
            raise LoweringError(msg)
        name = eqn.primitive.name
        raise LoweringError(f"{msg} [primitive '{name}' at {_where(eqn, self.root)}]")

    def plain_scale(self, dtype, const=None) -> int:
        """Scale at which a non-secret value is encoded when it meets a secret."""
        if not np.issubdtype(np.dtype(dtype), np.floating):
            return 0
        if const is not None:
            c = np.asarray(const)
            if c.size and np.all(np.isfinite(c)) and np.all(c == np.round(c)) and \
                    np.all(np.abs(c) <= MAX_INT_CONST):
                return 0
        return self.frac_bits

    def factor_scale(self, plain: Value) -> int:
        """Encoding scale of a public constant FACTOR of a product: enough fraction bits that
        its largest magnitude keeps f + k significant bits (1/1000 at f + 13 instead of f, where
        it kept 6 bits and the mean of 1000 threes came out 3.02), so x * (1/n) is a mean within
        a few ulps. The encoded integer stays below 2^(f+k): the product keeps the headroom of a
        product by 2^k (k = 4 on the 64-bit ring, 0 where the ring has no room to spare).
        Non-constants and constants of magnitude >= 2^k keep `plain.scale`."""
        if plain.const is None or plain.scale < self.frac_bits:
            return plain.scale
        c = np.abs(np.asarray(plain.const, np.float64))
        top = float(np.max(c)) if c.size else 0.0
        if not (np.isfinite(top) and top > 0.0):
            return plain.scale
        f, l = self.frac_bits, self.ring_bits
        k = int(np.clip((l - 2 - 3 * f) // 2, 0, 4))
        s = int(np.clip(f + k - 1 - int(np.floor(np.log2(top))), plain.scale,
                        max(plain.scale, l - 2 - f)))
        # the fewest bits that encode it as precisely: 0.125 or 0.5 stay at f (no extra scale,
        # so no extra truncation where the product meets other values)
        for t in range(plain.scale, s):
            if np.all(np.ldexp(c, t) == np.round(np.ldexp(c, t))):
                return t
        return s

    def finite(self, plain: Value):
        """A public constant meeting a secret must be encodable: inf/nan has no fixed-point
        code (it would silently become garbage)."""
        if plain.const is not None and np.issubdtype(np.asarray(plain.const).dtype,
                                                     np.floating) \
                and not np.all(np.isfinite(plain.const)):
            self.fail("a public constant that is not finite (inf or nan) meets a secret: it "
                      "has no fixed-point encoding")

    def const(self, value, dtype=None) -> Value:
        arr = np.asarray(value, dtype=dtype)
        v = self.new(arr.shape, arr.dtype, PUBLIC, self.plain_scale(arr.dtype, arr), const=arr)
        self.emit("const", [], [v], kind="local", party=None, value=arr)
        return v

    # ---------------------------------------------------------------- fixed point helpers
    def truncate(self, v: Value, target: int) -> Value:
        if not v.vis.is_secret or v.scale <= target:
            return v
        key = (v.id, target)
        if key not in self.truncated:   # one truncation per value, however many consumers
            r = self.new(v.shape, v.dtype, SECRET, target)
            self.emit("truncate", [v], [r], shift=v.scale - target)
            self.truncated[key] = r
        return self.truncated[key]

    def lift(self, v: Value, target: int) -> Value:
        """Raise a secret's scale for free (multiply each share by the public 2^d)."""
        if v.scale >= target:
            return v
        r = self.new(v.shape, v.dtype, SECRET, target)
        self.emit("lift", [v], [r], kind="share_local", shift=target - v.scale)
        return r

    def for_product(self, v: Value) -> Value:
        """Secrets feeding a product must sit at scale <= f."""
        return self.truncate(v, self.frac_bits) if v.vis.is_secret else v

    def to_secret(self, v: Value, scale: int | None = None) -> Value:
        """A secret version of v: private values are shared by their holder (runtime `share`),
        public values become a trivial sharing (party 0 holds the encoding) for free."""
        if v.vis.is_secret:
            return v if scale is None else self.lift(v, scale)
        s = v.scale if scale is None else scale
        if v.vis.is_private:
            key = (v.id, s)
            if key not in self.shared:
                r = self.new(v.shape, v.dtype, SECRET, s)
                self.emit("share", [v], [r], party=v.vis.party, enc=s)
                self.shared[key] = r
            return self.shared[key]
        r = self.new(v.shape, v.dtype, SECRET, s)
        self.emit("from_public", [v], [r], kind="share_local", enc=s)
        return r

    def common(self, vals: list[Value]) -> tuple[list[Value], int]:
        """Bring secrets to one scale (raising, never truncating) for a sum/concat/select."""
        vals = self.cap_scales(vals)
        target = max(v.scale for v in vals)
        return [self.lift(v, target) if v.vis.is_secret else v for v in vals], target

    def cap_scales(self, vals: list[Value]) -> list[Value]:
        """A secret above scale 2f (a product by a precise constant, `factor_scale`) meeting
        values at other scales is truncated to 2f first: lifting the others to its scale would
        shrink their headroom below that of an ordinary product."""
        cap = 2 * self.frac_bits
        if len({v.scale for v in vals}) > 1 and any(v.scale > cap for v in vals):
            vals = [self.truncate(v, cap) if v.vis.is_secret else v for v in vals]
        return vals

    def per_share(self, name, operands, shape, dtype, scale, **attrs) -> Value:
        """A free op applied by each party to its own share (structural ops, sums, ...)."""
        r = self.new(shape, dtype, SECRET, scale)
        self.emit(name, operands, [r], kind="share_local", **attrs)
        return r

    # ---------------------------------------------------------------- arithmetic building blocks
    def add(self, a: Value, b: Value, sub: bool = False, shape=None, dtype=None) -> Value:
        """a + b (or a - b) with at least one secret or two different holders: free."""
        shape = shape if shape is not None else np.broadcast_shapes(a.shape, b.shape)
        dtype = dtype or _result_dtype(a, b)
        if not a.vis.is_secret and not b.vis.is_secret:   # private(0) + private(1)
            s, _ = self._pick_shared(a, b)
            a, b = (self.to_secret(a), b) if s is a else (a, self.to_secret(b))
        if a.vis.is_secret and b.vis.is_secret:
            (a, b), s = self.common([a, b])
            return self.per_share("sub" if sub else "add", [a, b], shape, dtype, s)
        plain_index = 0 if not a.vis.is_secret else 1
        self.finite((a, b)[plain_index])
        a, b = self.cap_scales([a, b])
        target = max(a.scale, b.scale)
        a, b = (a, self.lift(b, target)) if plain_index == 0 else (self.lift(a, target), b)
        plain = (a, b)[plain_index]
        holder = 0 if plain.vis.is_public else plain.vis.party
        return self.per_share("sub" if sub else "add", [a, b], shape, dtype, target,
                              holder=holder, enc=target, plain_index=plain_index)

    def _pick_shared(self, a: Value, b: Value) -> tuple[Value, Value]:
        """Of two values private to different parties, share the smaller (ties: the client's)."""
        if a.size < b.size or (a.size == b.size and a.vis.party == 1):
            return a, b
        return b, a

    def mul(self, a: Value, b: Value, shape=None, dtype=None) -> Value:
        shape = shape if shape is not None else np.broadcast_shapes(a.shape, b.shape)
        dtype = dtype or _result_dtype(a, b)
        if a is b and a.vis.is_secret:
            a = self.for_product(a)
            r = self.new(shape, dtype, SECRET, 2 * a.scale)
            self.emit("square", [a], [r])
            return r
        if not a.vis.is_secret and not b.vis.is_secret:
            s, o = self._pick_shared(a, b)
            a, b = self.to_secret(s), o
        if a.vis.is_secret and b.vis.is_secret:
            for x, y in ((a, b), (b, a)):   # (c * s) * s -> c * square(s): half the opening
                if x.id in self.scaled and self.for_product(y) is self.scaled[x.id][0]:
                    src, c = self.scaled[x.id]
                    return self.mul(self.mul(src, src, shape=src.shape, dtype=src.dtype), c,
                                    shape=shape, dtype=dtype)
            a, b = self.for_product(a), self.for_product(b)
            r = self.new(shape, dtype, SECRET, a.scale + b.scale)
            self.emit("mul", [a, b], [r])
            return r
        sec, plain = (a, b) if a.vis.is_secret else (b, a)
        self.finite(plain)
        if plain.vis.is_private and not self.reusable(plain):
            return self.mul(self.to_secret(a), self.to_secret(b), shape=shape, dtype=dtype)
        if plain.scale > 0:
            sec = self.for_product(sec)
        enc = self.factor_scale(plain) if plain.vis.is_public else plain.scale
        r_scale = sec.scale + enc
        operands = [sec, plain]
        if plain.vis.is_public:
            r = self.per_share("mul_public", operands, shape, dtype, r_scale, enc=enc,
                               plain_index=1)
            if plain.size == 1 and tuple(sec.shape) == tuple(shape):
                self.scaled[r.id] = (sec, plain)
            return r
        r = self.new(shape, dtype, SECRET, r_scale)
        self.emit("mul_private", operands, [r], party=plain.vis.party, enc=plain.scale)
        return r

    def reusable(self, v: Value) -> bool:
        """Whether a party's plaintext operand is a deployment constant (the server's
        parameters and what it computes from them): then `mul_private`/`dot_general_private`
        open its mask F = W - B once, at setup. The client's values change every run, so a
        fixed mask would leak their differences across runs: they are shared instead and
        multiplied with Beaver triples."""
        return v.vis.is_private and v.vis.party == 0

    def relu(self, x: Value) -> Value:
        x = self.for_compare(x)
        r = self.new(x.shape, x.dtype, SECRET, x.scale)
        self.emit("relu", [x], [r])
        return r

    def for_compare(self, x: Value) -> Value:
        return self.truncate(x, self.frac_bits) if x.scale > self.frac_bits else x

    def ge_zero(self, d: Value, shape) -> Value:
        """[d >= 0] as an arithmetic bit (secret, scale 0)."""
        d = self.for_compare(d)
        r = self.new(shape, "bool", SECRET, 0)
        self.emit("drelu", [d], [r])
        return r

    def one_minus(self, bit: Value) -> Value:
        one = self.const(np.asarray(1, dtype=np.int32))
        r = self.add(one, bit, sub=True, shape=bit.shape, dtype="bool")
        return r

    def select(self, pred: Value, on_true: Value, on_false: Value, shape, dtype) -> Value:
        """pred ? on_true : on_false, by the cheapest protocol for pred's visibility: a public
        predicate selects share by share (free); otherwise on_false + pred * (on_true - on_false)
        with pred a 0/1 integer at scale 0 (Beaver mul, mul_private or free mul_public,
        depending on who knows the difference)."""
        vals, s = self.common([on_true, on_false])
        if pred.vis.is_public:
            vals = [v if v.vis.is_secret else self.to_secret(v, s) for v in vals]
            return self.per_share("select_public", [pred, vals[0], vals[1]], shape, dtype, s)
        diff = self.add(vals[0], vals[1], sub=True, shape=shape, dtype=dtype) \
            if (vals[0].vis.is_secret or vals[1].vis.is_secret or
                _join(vals) is None) else self._local_fn("sub", vals, shape, dtype)
        prod = self.mul(diff, pred, shape=shape, dtype=dtype)
        return self.add(prod, vals[1], shape=shape, dtype=dtype)

    def _local_fn(self, fn: str, vals: list[Value], shape, dtype) -> Value:
        """A small plaintext helper op (fn names a function in execute.LOCAL_FNS)."""
        vis = _join(vals)
        r = self.new(shape, dtype, vis, self.plain_scale(dtype))
        self.emit(fn, vals, [r], kind="local", party=vis.party, fn=fn)
        return r


def _result_dtype(a: Value, b: Value) -> str:
    return str(jnp.result_type(np.dtype(a.dtype), np.dtype(b.dtype)))


def _out(eqn, i=0):
    aval = eqn.outvars[i].aval
    return tuple(aval.shape), str(np.dtype(aval.dtype))


# ==================================================================== the registry
LOWER_RULES: dict[str, Callable] = {}


def rule(*names):
    def deco(f):
        for n in names:
            LOWER_RULES[n] = f
        return f
    return deco


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
               "convert_element_type", "split", "real", "stop_gradient", "tile")


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


def _slice(L, x: Value, axis: int, start: int, stop: int, step: int = 1) -> Value:
    """x[start:stop:step] along axis, share by share (free)."""
    lo, hi, st = [0] * len(x.shape), list(x.shape), [1] * len(x.shape)
    lo[axis], hi[axis], st[axis] = start, stop, step
    shape = list(x.shape)
    shape[axis] = len(range(start, stop, step))
    params = dict(start_indices=tuple(lo), limit_indices=tuple(hi), strides=tuple(st))
    if x.vis.is_secret:
        return L.per_share("slice", [x], tuple(shape), x.dtype, x.scale,
                           primitive=jax.lax.slice_p, params=params)
    r = L.new(tuple(shape), x.dtype, x.vis, x.scale)
    L.emit("slice", [x], [r], kind="local", party=x.vis.party, primitive=jax.lax.slice_p,
           params=params)
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

    Each level compares the even and odd halves: bit = [a >= b] (drelu of a - b), then
    max = b + bit * (a - b) and, for the index, ib + bit * (ia - ib). While the indices are
    still public, selecting them is a free product by a public difference; afterwards one
    Beaver mul per level. Ties keep the earlier index, like jnp.argmax."""
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


# ==================================================================== the driver
def _join(vals: list[Value]):
    """The party/publicity of a plaintext op, or None if it needs a protocol."""
    holders = {v.vis.party for v in vals if v.vis.is_private}
    if any(v.vis.is_secret for v in vals) or len(holders) > 1:
        return None
    return PRIVATE(holders.pop()) if holders else PUBLIC


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
    env: dict = {}

    def read(x):
        if _is_literal(x):
            return L.const(np.asarray(x.val, dtype=x.aval.dtype))
        return env[x]

    for var, c in zip(jaxpr.constvars, consts):
        env[var] = c if isinstance(c, Value) else L.const(np.asarray(c))
    for var, a in zip(jaxpr.invars, args):
        env[var] = a
    for eqn in jaxpr.eqns:
        L.eqn = eqn
        vals = [read(x) for x in eqn.invars]
        name = eqn.primitive.name
        if name in CALLS:
            sub, sub_consts = _sub_jaxpr(eqn)
            outs = lower_jaxpr(L, sub, sub_consts, vals)
        elif _join(vals) is not None:
            outs = _local(L, eqn, vals)
        else:
            rule_ = LOWER_RULES.get(name)
            if rule_ is None:
                L.fail(f"unsupported primitive '{name}' on secret or cross-party data "
                       f"(see docs/compiler.md for the supported list)")
            outs = rule_(L, eqn, *vals)
            L.eqn = eqn
        for var, v in zip(eqn.outvars, outs):
            if type(var).__name__ != "DropVar":
                env[var] = v
    L.eqn = None
    return [read(x) for x in jaxpr.outvars]


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
