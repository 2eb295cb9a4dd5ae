"""The protocol IR: SSA values with a visibility and a fixed-point scale, and ops.

Why an IR between the jaxpr and the runtime: the jaxpr says *what* is computed; the IR also says
*who* knows each value (public, private to one party, secret-shared) and *at which fixed-point
scale* a secret sits, which is what decides the protocol, its cost and where truncations go.
Both the static cost (cost.py) and the executor (execute.py) walk this one structure.

Op kinds:
- ``local``: plaintext JAX computed by one party (``party`` 0 or 1) or publicly (``party`` None);
  free. ``attrs["primitive"]``/``attrs["params"]`` hold the jax primitive, or ``attrs["fn"]`` a
  small helper (one-hot, encoding constants).
- ``share_local``: each party transforms its own share (reshape, add of two secrets, add of a
  value the holder knows, multiplication by a public integer, ...): no message, zero cost.
- ``protocol``: communicates; named exactly as the runtime's ledger and protocol-op registry.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Vis:
    """Who knows a value: ``public``, ``private`` (to ``party``) or ``secret``."""

    kind: str = "public"
    party: int | None = None

    def __str__(self) -> str:
        return f"private{self.party}" if self.kind == "private" else self.kind

    @property
    def is_secret(self) -> bool:
        return self.kind == "secret"

    @property
    def is_public(self) -> bool:
        return self.kind == "public"

    @property
    def is_private(self) -> bool:
        return self.kind == "private"


PUBLIC = Vis("public", None)
SECRET = Vis("secret", None)


def PRIVATE(party: int) -> Vis:  # noqa: N802 - reads like the constants above
    """Private to ``party`` (0 = server, 1 = client)."""
    if party not in (0, 1):
        raise ValueError(f"party must be 0 or 1, got {party!r}")
    return Vis("private", int(party))


@dataclasses.dataclass(frozen=True, eq=False)
class Value:
    """One SSA value. ``scale`` = fractional bits of a secret's fixed-point encoding
    (0 for integers/bools and for integer-valued public constants, f for reals, 2f for an
    untruncated product). ``const`` holds the numpy value of a compile-time public constant."""

    id: int
    shape: tuple[int, ...]
    dtype: str
    vis: Vis
    scale: int = 0
    const: Any = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def is_float(self) -> bool:
        return np.issubdtype(np.dtype(self.dtype), np.floating)

    def type_str(self) -> str:
        parts = ["x".join(str(d) for d in self.shape)] if self.shape else []
        if self.dtype != "float32":
            parts.append(self.dtype)
        if self.vis.is_secret:
            parts.append(f"@f{self.scale}")
        return f"{self.vis}<{' '.join(parts)}>"

    def __repr__(self) -> str:
        return f"%{self.id}:{self.type_str()}"


@dataclasses.dataclass(frozen=True, eq=False)
class Op:
    """One IR operation. ``kind`` in {local, share_local, protocol}; ``party`` only for local ops
    (None = computed publicly). ``scope`` is the module path, ``where`` the source line,
    ``op_class`` the operator class the op serves ("softmax", "gelu", "layernorm", "linear", ...
    or "": set at lowering by compiler/op_classes.py, copied into every ledger entry)."""

    name: str
    operands: tuple[Value, ...]
    results: tuple[Value, ...]
    attrs: dict = dataclasses.field(default_factory=dict)
    scope: str = ""
    where: str = ""
    kind: str = "protocol"
    party: int | None = None
    op_class: str = ""


def _fmt_attr(v: Any) -> str:
    if callable(v) and not hasattr(v, "bind"):
        return getattr(v, "__name__", "fn")
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    return str(v)


@dataclasses.dataclass(frozen=True, eq=False)
class Program:
    """A lowered program: flat inputs (one Value per flattened argument leaf), ops in
    execution order, flat outputs (revealed or plaintext to ``reveal_to``)."""

    inputs: tuple[Value, ...]
    ops: tuple[Op, ...]
    outputs: tuple[Value, ...]
    out_dtypes: tuple[str, ...] = ()
    frac_bits: int = 16
    # the argument pytree path of each input, e.g. "params/encoder/layer_0/attention/query/kernel"
    # (set by pcformer.compile; only the printer reads it)
    input_names: tuple[str, ...] = ()

    def protocol_ops(self) -> list[Op]:
        return [op for op in self.ops if op.kind == "protocol"]

    def __str__(self) -> str:
        return format_program(self)


_SHOWN_ATTRS = ("party", "to", "bits", "axes", "axis", "lhs_private", "private_party", "shift")


_INLINE = 8   # constants up to this many elements are printed with their value


def _const_text(v: Any) -> str:
    """A constant's value when small, else its shape and dtype (the value would be a wall)."""
    arr = np.asarray(v)
    if arr.size <= _INLINE:
        return np.array2string(arr, separator=", ", precision=6).replace("\n", "")
    return f"<{'x'.join(map(str, arr.shape))} {arr.dtype}>"


def _ref(v: Value, names: dict) -> str:
    """An operand: %name for a named input, %id=value for a scalar constant, else %id."""
    if v.id in names:
        return f"%{names[v.id]}"
    if v.const is not None and np.size(v.const) == 1:
        return f"%{v.id}={_const_text(v.const)}"
    return f"%{v.id}"


def format_op(op: Op, names: dict | None = None) -> str:
    """`%12 = dot_general_private %3, %7 : secret<128x384 @f16> -> secret<128x384 @f32>  # scope`."""
    names = names or {}
    res = ", ".join(f"%{r.id}" for r in op.results)
    args = ", ".join(_ref(o, names) for o in op.operands)
    shown = {k: op.attrs[k] for k in _SHOWN_ATTRS if k in op.attrs}
    if op.kind == "local" and op.name == "const" and "value" in op.attrs:
        return f"{res} = const {_const_text(op.attrs['value'])} : {op.results[0].type_str()}"
    if op.kind == "local":
        prim = op.attrs.get("primitive")
        name = f"local[{'public' if op.party is None else 'p%d' % op.party}] " + (
            str(prim) if prim is not None else op.name)
    elif op.kind == "share_local":
        name = f"{op.name} (local)"
    else:
        name = op.name
    if shown:
        name += "{" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in shown.items()) + "}"
    ins = ", ".join(o.type_str() for o in op.operands)
    outs = ", ".join(r.type_str() for r in op.results)
    text = f"{res} = {name} {args} : {ins} -> {outs}"
    if op.scope:
        text += f"  # {op.scope}"
    return text


def input_names(prog: Program) -> dict:
    """Value id -> the input's argument path, for the inputs that have one."""
    return {v.id: n for v, n in zip(prog.inputs, prog.input_names) if n}


def format_program(prog: Program, margin: list[str] | None = None, margin_head: str = "") -> str:
    """The program, one op a line. `margin`: one string per op, printed to its left (a column
    of per-op figures such as its cost, all the same width; `margin_head` titles it)."""
    names = input_names(prog)
    pad = " " * len(margin_head) if margin is not None else ""
    ins = [f"{_ref(v, names)}: {v.type_str()}" for v in prog.inputs]
    head = ("program(" + ", ".join(ins) + ") {" if not names else
            "program(\n" + "".join(f"    {t},\n" for t in ins) + ") {")
    body = [f"{margin[i] if margin is not None else ''}  {format_op(op, names)}"
            for i, op in enumerate(prog.ops)]
    tail = pad + "  return " + ", ".join(_ref(v, names) for v in prog.outputs)
    lines = [head] + ([margin_head] if margin is not None else []) + body + [tail, "}"]
    return "\n".join(lines)
