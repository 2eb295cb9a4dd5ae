"""The one table of approximations: every friendly replacement a policy can choose, by operator
class and name, with the policy parameters it reads, the inputs it is valid on and its error there.

An entry is declared next to its function (compiler/approximations*.py) with `@approximation`:

    @approximation("reciprocal", "goldschmidt", params=("recip_iters", "recip_range"),
                   valid=(2.0 ** -12, 2.0 ** 20), error=("rel", 2.8e-7), reference=np.reciprocal)
    def _goldschmidt(pol):
        lo, hi = pol.recip_range
        return lambda x: reciprocal_goldschmidt(x, pol.recip_iters, lo, hi)

The decorated binder takes a Policy and returns the function with that policy's parameters
(it may ask the policy for the other approximations it builds on: `pol.fn("exp")`). A Policy
field names an entry of its class (compiler/policies.py checks it against this table), so a new
approximation is one decorated binder in one module, plus its tests and docs.

`valid` and `error` are the claim: a bound on the error over `valid`, with the default Policy
parameters unless `measured_with` names others (docs/approximations.md has the measured figures); tests/compiler/test_approximations.py holds every entry with a scalar
`reference` to its claim. Replacements that are not approximations (Quad GeLU, 2Quad softmax)
state no error: distillation recovers the accuracy.
"""
from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Approximation:
    """One entry: what a Policy's `op_class` field set to `name` computes."""
    op_class: str                       # the Policy field that chooses it: gelu, softmax, exp, ...
    name: str                           # that field's value
    bind: Callable                      # bind(policy) -> the function with its parameters
    params: tuple[str, ...] = ()        # the Policy fields it reads
    valid: tuple[float, float] | None = None   # inputs where `error` holds (None: all reals)
    error: tuple[str, float] | None = None     # ("abs" | "rel", max error); None: a replacement
    reference: Callable | None = None   # numpy float64 function it approximates (scalar classes)
    measured_with: tuple = ()           # Policy fields the claim was measured with, if not default

    @property
    def doc(self) -> str:
        """The binder's first docstring line: what the entry is."""
        lines = (self.bind.__doc__ or "").strip().splitlines()
        return lines[0] if lines else ""


TABLE: dict[str, dict[str, Approximation]] = {}


def approximation(op_class: str, name: str, *, params: tuple[str, ...] = (),
                  valid: tuple[float, float] | None = None,
                  error: tuple[str, float] | None = None, reference: Callable | None = None,
                  measured_with: dict | None = None):
    """Declare the decorated binder as the entry (op_class, name) of the table."""
    def register(bind: Callable) -> Callable:
        entries = TABLE.setdefault(op_class, {})
        if name in entries:
            raise ValueError(f"approximation {op_class}={name!r} is declared twice")
        entries[name] = Approximation(op_class, name, bind, tuple(params), valid, error,
                                      reference, tuple(sorted((measured_with or {}).items())))
        return bind
    return register


def names(op_class: str) -> tuple[str, ...]:
    """The names a Policy's `op_class` field may take, sorted."""
    return tuple(sorted(TABLE.get(op_class, {})))


def lookup(op_class: str, name: str) -> Approximation:
    """The entry (op_class, name); a ValueError names the choices."""
    try:
        return TABLE[op_class][name]
    except KeyError:
        raise ValueError(f"no approximation {op_class}={name!r}; choices: "
                         f"{list(names(op_class))}") from None


def entries() -> list[Approximation]:
    """Every entry, by class then name (docs and tests walk this)."""
    return [TABLE[c][n] for c in sorted(TABLE) for n in names(c)]
