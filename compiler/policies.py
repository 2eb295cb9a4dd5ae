"""Rewrite policies: which approximation replaces each heavy operator class, and its parameters.

A field set to `None` means "leave that operator alone" (the lowering then sees the original
primitive, and refuses it if it has no protocol). The defaults of `Policy()` are the `exact`
policy's choices, so every default is visible in one place.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

from . import approximation_table as table
# the modules that declare the table's entries (importing them fills it)
from . import approximations, approximations_gelu_softmax, approximations_math  # noqa: F401


@dataclasses.dataclass(frozen=True)
class Policy:
    """One approximation name per operator class, plus the parameters they use: a mapping from
    operator class to an entry of the approximation table (compiler/approximation_table.py).

    Operator classes: `gelu` (quad | relu | puma | sigma | exact), `softmax` (2quad | relu | puma |
    sigma | exact), `exp` (taylor | limit), `reciprocal` (goldschmidt | lut | newton), `rsqrt`
    (newton | lut | crypten), `tanh` (logistic), `logistic` (exp), `erf` (poly), `math` (poly).
    `reciprocal` also serves the division inside every softmax; `exp` applies to a standalone
    `exp` only (softmax has its own). `sigma` and `lut` read lookup tables: protocols="fss".
    """
    name: str = "custom"
    doc: str = dataclasses.field(default="", compare=False)  # what the policy is, its sources
    gelu: str | None = "exact"
    softmax: str | None = "exact"
    exp: str | None = "taylor"
    reciprocal: str | None = "goldschmidt"
    rsqrt: str | None = "newton"
    tanh: str | None = "logistic"
    logistic: str | None = "exp"
    erf: str | None = "poly"
    math: str | None = "poly"       # log, trigonometric, hyperbolic, pow, cbrt (issue 16)
    # parameters
    quad_c: float = 5.0             # 2Quad softmax shift c in (x + c)^2 (MPCFormer: 5)
    softmax_eps: float = 1e-3       # added to the row sum of 2quad/relu softmax (empty rows)
    exp_iters: int = 4              # squarings s: exp(x) = p(x / 2^s)^(2^s) (limit method: 8)
    exp_degree: int = 8             # Taylor degree of p for exp="taylor" (limit method: 1)
    exp_cutoff: float = -14.0       # exp(x) = 0 below this (softmax and standalone exp)
    recip_iters: int = 3            # Goldschmidt iterations (newton: use 10)
    recip_range: tuple[int, int] = (-12, 20)   # exponents [lo, hi): 1/x valid on [2^lo, 2^hi)
    rsqrt_iters: int = 3            # Newton iterations for 1/sqrt
    rsqrt_range: tuple[int, int] = (-8, 10)    # exponents [lo, hi): valid on [4^lo, 4^hi)
    erf_degree: int = 21            # odd Chebyshev degree of erf on [-3.5, 3.5]
    seed_bits: int = 8              # table bits of the reciprocal / rsqrt `lut` seeds
    # (field, value) pairs that replace the fields above under protocols="fss": the FSS
    # family's own construction of the same functions (lookup tables, one round each) where it
    # is as accurate and cheaper; () = the same choices under every family
    fss: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "recip_range", tuple(self.recip_range))
        object.__setattr__(self, "rsqrt_range", tuple(self.rsqrt_range))
        object.__setattr__(self, "fss", _pairs(self.name, self.fss))
        for op_class in table.TABLE:
            value = getattr(self, op_class)
            if value is not None and value not in table.names(op_class):
                raise ValueError(f"policy {self.name!r}: {op_class}={value!r} is not one of "
                                 f"{list(table.names(op_class))} (or None to leave {op_class} "
                                 f"alone)")
        if self.fss:
            self.for_protocols("fss")      # its values checked now, not at the first fss compile

    def for_protocols(self, protocols: str) -> "Policy":
        """The policy a program compiled for `protocols` rewrites with: under "fss", the fields
        `fss` names replaced by its values (the name kept; the doc says what changed)."""
        if protocols != "fss" or not self.fss:
            return self
        changes = dict(self.fss)
        said = ", ".join(f"{k}={v}" for k, v in self.fss)
        return dataclasses.replace(self, fss=(), doc=f"{self.doc} Under protocols='fss': {said}."
                                   .strip(), **changes)

    def fn(self, op_class: str):
        """The approximation this policy chooses for `op_class`, bound to its parameters (the
        approximation table, compiler/approximation_table.py). A class the policy leaves alone
        (None) still serves the approximations built on it (softmax's reciprocal, a standalone
        exp) with the default choice."""
        name = getattr(self, op_class) or _DEFAULT_CHOICE[op_class]
        return table.lookup(op_class, name).bind(self)


# What an unset class means where another approximation builds on it: the field's default.
_DEFAULT_CHOICE = {f.name: f.default for f in dataclasses.fields(Policy)
                   if f.name in table.TABLE}


def _pairs(name: str, fss) -> tuple:
    """`fss` as a tuple of (field, value) pairs (from a dict or JSON lists), each field a Policy
    field other than name, doc and fss itself; ranges as tuples."""
    items = fss.items() if isinstance(fss, Mapping) else fss
    valid = {f.name for f in dataclasses.fields(Policy)} - {"name", "doc", "fss"}
    out = []
    for item in items:
        try:
            key, value = item
        except (TypeError, ValueError):
            raise ValueError(f"policy {name!r}: fss takes (field, value) pairs, got "
                             f"{item!r}") from None
        if key not in valid:
            raise ValueError(f"policy {name!r}: fss names {key!r}, not one of {sorted(valid)}")
        out.append((str(key), tuple(value) if isinstance(value, list) else value))
    return tuple(out)

# exact's functions built the FSS family's way: one lookup where Beaver needs a polynomial
EXACT_UNDER_FSS = (("gelu", "spline"), ("softmax", "sigma"), ("reciprocal", "lut"),
                   ("rsqrt", "lut"), ("recip_iters", 1), ("rsqrt_iters", 1),
                   ("recip_range", (-12, 17)), ("rsqrt_range", (-8, 8)), ("seed_bits", 12))

EXACT = Policy(name="exact", fss=EXACT_UNDER_FSS, doc=(
    "High-accuracy approximations of every heavy operator (max errors in "
    "docs/approximations.md): erf/tanh GeLU forms kept with polynomial erf / logistic tanh, "
    "max-subtracted softmax with scaling-and-squaring Taylor exp and normalised Goldschmidt "
    "reciprocal, normalised Newton rsqrt. Under protocols='fss' the same functions from the "
    "family's lookups (errors at the 16-bit fixed point's resolution): GeLU as relu minus a "
    "line per step of a two-column 9-bit table on |x| (1.2e-5), softmax's exp from two 8-bit tables, "
    "reciprocal and rsqrt seeded by 12-bit tables with one Goldschmidt / Newton step."))

MPCFORMER = Policy(name="mpcformer", gelu="quad", softmax="2quad", exp=None, tanh=None,
                   logistic=None, erf=None, exp_iters=8, doc=(
    "MPCFormer (Li et al., ICLR 2023): Quad GeLU 0.125x^2+0.25x+0.5 and 2Quad softmax "
    "(x+c)^2/sum, c=5; LayerNorm's rsqrt and divisions by secrets approximated (needed to run "
    "at all); other operators left alone. Needs distillation."))

PUMA = Policy(name="puma", gelu="puma", softmax="puma", exp=None, tanh=None, logistic=None,
              erf=None, exp_iters=8, doc=(
    "PUMA (Dong et al., arXiv 2307.12533): piecewise-polynomial GeLU, max-subtracted "
    "limit-exp softmax with cut-off at -14; rsqrt and divisions approximated."))

PAPER = Policy(name="paper", gelu="relu", softmax="2quad", exp=None, tanh=None, logistic=None,
               erf=None, exp_iters=8, doc=(
    "An INTERPRETATION of Liu & Liu, 'LLMs Can Understand Encrypted Prompt' (arXiv "
    "2305.18396), whose exact replacement formulas we could not read: following PUMA's "
    "description of this line of work, GeLU -> ReLU and softmax -> a quadratic-kernel "
    "attention ((x+c)^2 / sum, 2Quad-style); LayerNorm's rsqrt approximated; fine-tuning "
    "(distillation) recovers accuracy."))

SIGMA = Policy(name="sigma", gelu="sigma", softmax="sigma", reciprocal="lut", rsqrt="lut",
               recip_iters=1, rsqrt_iters=1, recip_range=(-12, 17), rsqrt_range=(-8, 8), doc=(
    "SIGMA (Gupta et al., PoPETs 2024)'s lookup tables: GeLU as relu(x) minus an 8-bit table "
    "of relu - gelu on |x| < 4 (max error 4e-3), softmax's exp from two 8-bit tables (relative "
    "error 1.3e-4), reciprocal and rsqrt seeded by 8-bit tables with one Goldschmidt / Newton "
    "step (relative 4e-6 / 2.3e-5) on [2^-12, 2^17) / [4^-8, 4^8), the octaves whose scale "
    "factors are 16-bit fixed-point numbers; every other operator as `exact`; no distillation "
    "needed. "
    "Lookup tables need protocols='fss' (one-round DPF lookups)."))

NAMED: dict[str, Policy] = {p.name: p for p in (EXACT, MPCFORMER, PUMA, PAPER, SIGMA)}


def to_dict(policy: Policy) -> dict:
    """A JSON-ready dict of every field (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(policy).items()}


def from_dict(d: Mapping[str, Any]) -> Policy:
    """A Policy from a dict; unknown keys are refused, missing keys take the defaults.

    A dict may name a base policy under "base" (e.g. {"base": "puma", "gelu": "relu"}).
    """
    d = dict(d)
    base = d.pop("base", None)
    fields = {f.name for f in dataclasses.fields(Policy)}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ValueError(f"unknown policy field(s) {unknown}; valid fields: {sorted(fields)}")
    start = to_dict(get(base)) if base is not None else {}
    if start.get("fss") and "fss" not in d:    # a field set here wins under every family
        start["fss"] = [(k, v) for k, v in start["fss"] if not _set_by(k, d)]
    if base is not None and "name" not in d:
        d["name"] = f"{start['name']}+custom"
    if base is not None and "doc" not in d:
        d["doc"] = f"{start['name']} with changes: {sorted(d)}"
    start.update(d)
    return Policy(**start)


# a class's parameters: setting the class drops the base's fss values of its parameters too
_PARAMS_OF = {"recip_iters": "reciprocal", "recip_range": "reciprocal",
              "rsqrt_iters": "rsqrt", "rsqrt_range": "rsqrt"}


def _set_by(field: str, d: Mapping) -> bool:
    return field in d or _PARAMS_OF.get(field) in d


class PolicyError(ValueError):
    """A policy spec that cannot be read (unknown name, missing or malformed file): one line."""


POLICY_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def _read_file(path: str) -> Policy:
    """A policy file: a JSON or YAML mapping of Policy fields, optionally `base: <name>`; its
    name defaults to the file's stem. Every error names the file."""
    if not os.path.isfile(path):
        raise PolicyError(f"policy file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PolicyError(f"policy file {path} cannot be read: {e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml  # PyYAML, installed with transformers' hub client
            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - json / yaml parse errors of any kind
        mark = getattr(e, "problem_mark", None)   # YAML: the problem and where, not its dump
        detail = (f"{e.problem} at line {mark.line + 1}" if mark is not None and getattr(e, "problem", None)
                  else " ".join(str(e).split()))
        raise PolicyError(f"policy file {path} is not valid "
                          f"{'JSON' if path.endswith('.json') else 'YAML'}: {detail}") from None
    if not isinstance(data, Mapping):
        raise PolicyError(f"policy file {path} must hold a mapping of Policy fields, "
                          f"not a {type(data).__name__}")
    data = dict(data)
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    try:
        return from_dict(data)
    except (TypeError, ValueError) as e:
        raise PolicyError(f"policy file {path}: {e}") from None


def load(spec: str | Policy | Mapping | os.PathLike) -> Policy:
    """THE way to a Policy, used by `pcformer.compile`, `pcformer run` and `pcformer distill`:
    a name (exact | mpcformer | puma | paper), a Policy, a dict of Policy fields, or the path of a
    .json / .yaml / .yml policy file (format: docs/compiler.md, "Policy files")."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, Mapping):
        return from_dict(spec)
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if s in NAMED:
            return NAMED[s]
        if s.endswith(POLICY_FILE_SUFFIXES):
            return _read_file(s)
        raise PolicyError(f"unknown policy {s!r}: valid names are {sorted(NAMED)}, or a Policy, "
                          f"a dict of Policy fields, or a .json/.yaml policy file")
    raise TypeError(f"policy must be a name, Policy, dict or policy file path, not "
                    f"{type(spec).__name__}")


def load_many(spec: str) -> list[Policy]:
    """Comma-separated policy specs (names or files), each through `load`."""
    items = [p.strip() for p in str(spec).split(",") if p.strip()]
    if not items:
        raise PolicyError("no policy given")
    return [load(p) for p in items]


get = load  # the older name


__all__ = ["Policy", "PolicyError", "load", "load_many", "get", "to_dict", "from_dict", "NAMED", "EXACT", "MPCFORMER", "PUMA",
           "PAPER"]
