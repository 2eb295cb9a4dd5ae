"""Lowering, the base layer: the `Lowerer` (state of one lowering and its protocol-choosing
helpers), the rule registry `LOWER_RULES` with its `rule` decorator, and small shared helpers.

Every rule family (lower_arith, lower_products, lower_struct, lower_control, lower_cmp,
lower_ops, lower_order) imports from here and from lower_walk; nothing here imports a family,
so the imports point one way. compiler/lower.py imports every family (which registers its
rules) and holds the entry point `lower()`."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from . import compat
from .ir import PUBLIC, SECRET, PRIVATE, Value, Op
from .op_classes import op_class_of

# Operators the rewrite pass must have replaced before lowering (error if left on a secret).
HEAVY = frozenset({
    "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "erf", "erfc", "erf_inv",
    "rsqrt", "sqrt", "cbrt", "pow", "sin", "cos", "tan", "atan2", "lgamma", "digamma",
})
# Sub-jaxpr wrappers inlined during lowering (trace.trace already inlines them; this is a
# second line of defence so that lowering also works on a raw jax.make_jaxpr): compat's list.
CALLS = compat.CALL_PRIMITIVES
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
    """The sub-jaxpr of a call-like equation, as (jaxpr, consts)."""
    try:
        return compat.sub_jaxpr(eqn)
    except KeyError:
        raise LoweringError(f"cannot find the body of {eqn.primitive.name} at {_where(eqn)}")


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
        op = Op(name, tuple(operands), tuple(results), dict(attrs), scope, where, kind, party,
                op_class_of(scope, name))
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
        """Bring secrets to one scale (raising, never truncating) for a sum/concat/select. A
        secret whose truncation to the others' scale already exists (made for another
        consumer) meets them there: its result then needs no truncation of its own. Only at
        scale >= f: a truncation below f drops fraction bits the sum still needs (round's tie
        test subtracts floor(y), at scale 0, from y itself)."""
        vals = self.cap_scales(vals)
        low = min(v.scale for v in vals)
        if low >= self.frac_bits and len({v.scale for v in vals}) > 1 and all(
                v.scale == low or (v.id, low) in self.truncated for v in vals):
            vals = [self.truncated[(v.id, low)] if v.scale > low else v for v in vals]
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


def _join(vals: list[Value]):
    """The party/publicity of a plaintext op, or None if it needs a protocol."""
    holders = {v.vis.party for v in vals if v.vis.is_private}
    if any(v.vis.is_secret for v in vals) or len(holders) > 1:
        return None
    return PRIVATE(holders.pop()) if holders else PUBLIC
