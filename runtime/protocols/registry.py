"""The protocol-op registry: ONE entry per protocol op, owned by the runtime.

An entry (`ProtocolOp`) holds everything the rest of the system needs to know about an op:
- `run`: the protocol function `run(ctx, *operands, **kwargs)` (writes the ledger);
- `cost`: its message formula `cost(*shapes, config=config, **kwargs) -> [Msg]` (runtime/costs.py
  explains Msg and placement); tests hold it equal to the ledger `run` writes;
- `ideal`: the op's functionality for ideal mode, `ideal(ctx, like, *operands, **kwargs)` (see
  protocols/ideal.py), or None (local ops and reveal run as in protocol mode);
- `from_ir`: a `FromIR` adapter from a compiler IR op to the call, or None for ops the lowering
  never emits (helpers that other protocols call);
- `family`: the protocol family the op belongs to ("beaver": dealer-assisted Beaver triples);
- `elementwise`: the op acts on each element alone, sends nothing at setup, and its messages
  depend only on the element count (not the shape), each message's bits in proportion to it:
  the op executor runs it on flattened operands, so ops of one element count share one
  compiled program (compiler/opcache_plan.program_op), and it may run an op as calls of a
  smaller count's program on slices, summing the calls' bits (opcache_plan.chunk_sizes; the
  static cost == measured tests hold the formulas to it);
- `chunks` (elementwise ops only): the op executor runs an op of n elements as a few calls of
  the program of a smaller count that divides n (compiler/opcache_plan.chunk_sizes). Set where
  a program is slow to compile and a call's time per element barely depends on its size (the
  comparison circuits, the FSS truncation's DCF); not on cheap ops (a Beaver truncation, a
  product), whose slices and extra calls cost more run time than the compile they save;
- `traced_attrs`: IR attributes the protocol accepts as traced integers (a truncation's shift):
  the op executor passes them at run time instead of compiling one program per value.

Each protocol module declares its table of ProtocolOps at its bottom, next to the functions, and
registers it; the compiler's executor and static cost only look ops up here (by the op name and
`MPCConfig.protocols`), so a new op, or a whole new family, is one runtime module plus its tests.
This module imports nothing else of the runtime: every protocol module may import it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

from pcformer.runtime.config import DEFAULT_PROTOCOLS as DEFAULT_FAMILY  # "beaver"


def no_kwargs(op) -> dict:
    return {}


@dataclasses.dataclass(frozen=True)
class FromIR:
    """How an IR op (duck-typed: `.attrs`, `.operands`, `.results` with `.shape`) calls its op.

    shapes(op): the operand shapes the cost formula takes;
    kwargs(op): static keyword arguments, passed to both `run` and `cost`;
    operands(op, args, config): `run`'s positional arguments after ctx, from the IR op's input
        values (AShares for secrets, plaintext arrays for a party's values).
    """

    shapes: Callable[[Any], tuple]
    operands: Callable[[Any, list, Any], tuple]
    kwargs: Callable[[Any], dict] = no_kwargs


@dataclasses.dataclass(frozen=True)
class ProtocolOp:
    name: str
    run: Callable
    cost: Callable
    ideal: Callable | None = None
    from_ir: FromIR | None = None
    family: str = DEFAULT_FAMILY
    elementwise: bool = False
    traced_attrs: tuple[str, ...] = ()
    chunks: bool = False

    def messages(self, op, config) -> list:
        """The cost messages (Msg) of one IR op: the formula on the adapter's shapes/kwargs."""
        a = self._adapter()
        return list(self.cost(*a.shapes(op), config=config, **a.kwargs(op)))

    def call(self, ctx, op, args):
        """Run the protocol for one IR op on its input values (inside ctx.op(op.name))."""
        a = self._adapter()
        return self.run(ctx, *a.operands(op, args, ctx.config), **a.kwargs(op))

    def _adapter(self) -> FromIR:
        if self.from_ir is None:
            raise NotImplementedError(
                f"protocol op {self.name!r} ({self.family}) has no IR adapter (from_ir): the "
                f"lowering does not emit it")
        return self.from_ir


_OPS: dict[str, dict[str, ProtocolOp]] = {}


def register(*ops: ProtocolOp) -> None:
    """Add ops to their families (a name registered twice in one family is refused)."""
    for op in ops:
        table = _OPS.setdefault(op.family, {})
        if op.name in table and table[op.name] is not op:
            raise ValueError(f"protocol op {op.name!r} is already registered in family "
                             f"{op.family!r}")
        table[op.name] = op


def unregister(name: str, family: str = DEFAULT_FAMILY) -> None:
    """Remove one op (tests that register a toy op); an emptied family disappears."""
    table = _OPS.get(family, {})
    table.pop(name, None)
    if not table:
        _OPS.pop(family, None)


def lookup(name: str, family: str = DEFAULT_FAMILY) -> ProtocolOp:
    """The entry of op `name` in `family`, or a KeyError that says what exists."""
    _load()
    table = _OPS.get(family)
    if table is None:
        raise KeyError(f"no protocol family {family!r}: registered families are {families()}")
    op = table.get(name)
    if op is None:
        raise KeyError(f"protocol op {name!r} is not registered in family {family!r}; it has: "
                       f"{', '.join(sorted(table))}")
    return op


def find(name: str, family: str = DEFAULT_FAMILY) -> ProtocolOp | None:
    """The entry, or None (no error) when the family or op does not exist."""
    _load()
    return _OPS.get(family, {}).get(name)


def families() -> tuple[str, ...]:
    _load()
    return tuple(sorted(_OPS))


def names(family: str = DEFAULT_FAMILY) -> tuple[str, ...]:
    _load()
    return tuple(sorted(_OPS.get(family, {})))


def _load() -> None:
    """Import the protocol modules (they register their tables on import): a caller that
    imported only this module still sees every op."""
    from pcformer.runtime import protocols  # noqa: F401  (import side effect: registration)
