"""The supported-primitive list, generated from the registries (so docs cannot drift).

- `lower.LOWER_RULES`: primitives with a lowering rule on secret or cross-party data (each
  rule's first docstring line says how), minus the refusals below;
- `rewrite.RULES`: single primitives a policy replaces by an approximation before lowering;
- `REFUSED`: primitives refused on secrets with the reason (a rule that raises it);
- `runtime.protocols.registry`: each protocol op's cost formula (first docstring line), in the
  default family.

`markdown()` is the section of docs/compiler.md between the GENERATED markers;
`python -m pcformer.compiler.supported` rewrites it; tests/compiler/test_ops_registry.py checks it.
"""
from __future__ import annotations

import inspect
import pathlib
import re

from pcformer.runtime.protocols import registry

from . import lower as _lower
from . import rewrite as _rewrite
from .lower_ops import REFUSED

BEGIN = "<!-- BEGIN GENERATED: supported primitives (python -m pcformer.compiler.supported) -->"
END = "<!-- END GENERATED -->"


def _summary(fn) -> str:
    doc = inspect.getdoc(fn) or ""
    line = " ".join(doc.split("\n\n")[0].split())
    return line.replace("|", "\\|")


# how the core rules of compiler/lower.py lower (they predate docstrings per rule); a rule
# missing here and without a docstring is listed by its function name
CORE = {
    "abs": "2 relu(x) - x: one `relu`",
    "add": "free (the holder adds its plaintext to its share)",
    "add_any": "free",
    "and": "bools: one product (`mul`, `mul_private` or free by a public bit)",
    "argmax": "tree of ceil(log2 k) levels: `drelu` + `mul` per level (indices selected too)",
    "argmin": "argmax of -x",
    "clamp": "two `relu`s",
    "cond": "public predicate: the taken branch; secret predicate: both branches + a select",
    "div": "by a value a party knows: its reciprocal (local), then a product",
    "dot_general": "`dot_general` (matrix triple), `dot_general_private` (a party's matrix, "
                   "mask opened at setup) or free by a public matrix",
    "ge": "`drelu(a - b)`", "gt": "1 - `drelu(b - a)`", "le": "`drelu(b - a)`",
    "lt": "1 - `drelu(a - b)`",
    "gather": "public indices: per share (free); indices one party holds: one-hot by that party, "
              "then `dot_general_private`",
    "max": "b + relu(a - b): one `relu` (max(x, -inf) = x)",
    "min": "a - relu(a - b): one `relu` (min(x, inf) = x)",
    "mul": "`mul` (Beaver), `square`, `mul_private`, or free by a public value (a precise "
           "encoding of non-integer constants, one truncation)",
    "neg": "free", "sub": "free",
    "not": "bools: 1 - x (free)", "or": "bools: a + b - ab (one product)",
    "select_n": "public predicate: per share (free); secret: f + p (t - f), one product",
    "square": "`square` (one opening)",
    "stack": "per share (free); plaintext parts shared first",
    "sign": "`drelu(x) - drelu(-x)`: two comparisons in one batched call",
    "eq": "zero test `drelu(d) + drelu(-d) - 1` of d = a - b (a == a: public true)",
    "ne": "1 - zero test of a - b (a != a: public false, so isnan is free)",
    "floor": "`truncate` to scale 0, then `drelu` corrects its +1: exact",
    "ceil": "-floor(-x)", "round": "floor(x + 1/2) with the sign (away) or tie/odd fix (even)",
}


def lowered() -> dict[str, str]:
    """primitive -> how it is lowered on secret data (its rule's summary)."""
    out = {}
    for name, fn in sorted(_lower.LOWER_RULES.items()):
        if name in REFUSED or name in _lower.HEAVY:
            continue
        if fn is _lower._structural:
            out[name] = "per share (free)"
            continue
        out[name] = CORE.get(name) or _summary(fn) or f"`{getattr(fn, '__name__', 'rule')}`"
    return out


def approximated() -> dict[str, str]:
    """primitive -> the policy class whose method replaces it (rewrite pass)."""
    return {r.name: r.op_class for r in sorted(_rewrite.RULES.values(), key=lambda r: r.name)
            if not r.composite}


def protocols() -> dict[str, str]:
    """protocol op -> its cost formula's summary, from the registry (default family); a formula
    without a docstring is composed of others and is named by its module and function."""
    out = {}
    for name in registry.names():
        fn = registry.lookup(name).cost
        where = f"`runtime/protocols/{fn.__module__.rsplit('.', 1)[-1]}.py` `{fn.__name__}`"
        out[name] = _summary(fn) or f"composed of the protocols above ({where})"
    return out


def markdown() -> str:
    lines = [BEGIN, "", "#### Lowered on secret (or cross-party) data", "",
             "| primitive | lowering |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in lowered().items()]
    lines += ["", "Also inlined: " + " ".join(f"`{c}`" for c in sorted(_lower.CALLS)) + ".",
              "", "#### Replaced by the policy's approximation (rewrite pass), then lowered", "",
              "| primitive | policy class |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in approximated().items()]
    lines += ["", "#### Refused on secret data", "", "| primitive | reason |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in sorted(REFUSED.items())]
    lines += ["", "#### Protocols and their cost (`runtime/protocols/registry.py`)", "",
              "| protocol | messages |", "|---|---|"]
    lines += [f"| `{k}` | {v} |" for k, v in protocols().items()]
    lines += ["", END]
    return "\n".join(lines)


def doc_path() -> pathlib.Path:
    return pathlib.Path(__file__).resolve().parent.parent / "docs" / "compiler.md"


def current_section(text: str) -> str | None:
    m = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    return m.group(0) if m else None


def write(path: pathlib.Path | None = None) -> None:
    path = path or doc_path()
    text = path.read_text()
    old = current_section(text)
    if old is None:
        raise ValueError(f"{path} has no generated section ({BEGIN})")
    path.write_text(text.replace(old, markdown()))


if __name__ == "__main__":
    write()
