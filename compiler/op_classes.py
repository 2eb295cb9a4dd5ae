"""The operator class of an IR op: decided once, at lowering, and carried as structured metadata.

`ir.Op.op_class` is set by `Lowerer.emit` from the equation's module path and the op's name;
the executor runs the op under `ctx.scope(op.scope, op.op_class)`, the channel copies it into
every ledger `Entry`, and the static cost (compiler/cost.py) copies it the same way, so both
ledgers agree entry by entry. Readers (pcformer/plots.py) group by the field and never parse a
scope string for a class.

The rule, first that applies:

1. approximation: the op belongs to an approximation the rewrite pass inserted; its class is the
   rewrite rule's (a Policy field: `gelu`, `softmax`, `rsqrt`, `exp`, `reciprocal`, `tanh`,
   `logistic`, `erf`, `math`), read from the marker by `rewrite.approximation_of`;
2. layernorm: the op lies inside a LayerNorm module (`LAYERNORM_MODULE` below: Flax/HF BERT's
   `LayerNorm`, LLaMA's `input_layernorm`, GPT-2's `ln_1`, `ln_2`, `ln_f`): `layernorm`;
3. linear: the op is a matrix product protocol (`PRODUCTS`): `linear`;
4. otherwise `""` (no class: truncations, comparisons and products of other layers' glue).
"""
from __future__ import annotations

import functools
import re

from .rewrite import approximation_of

# A module-path component naming a layer-normalisation module. This is the only module-path
# rule of operator classes: a module's name is the model author's, but these names are the
# conventions of the model families pcformer ships (and of Hugging Face's Flax ports).
LAYERNORM_MODULE = re.compile(r"layernorm|^ln_(\d+|f)$", re.IGNORECASE)

# Protocol ops that are matrix products (a dense layer, attention's two products).
PRODUCTS = frozenset({"dot_general", "dot_general_private"})

LINEAR = "linear"
LAYERNORM = "layernorm"


@functools.lru_cache(maxsize=4096)
def class_of_scope(scope: str) -> str:
    """The class every op lowered under `scope` shares (rules 1 and 2), or ""."""
    found = approximation_of(scope)
    if found is not None:
        return found[0]
    if any(LAYERNORM_MODULE.search(part) for part in scope.split("/")):
        return LAYERNORM
    return ""


def op_class_of(scope: str, op_name: str) -> str:
    """The operator class of an op named `op_name` lowered under `scope` (the module rule)."""
    return class_of_scope(scope) or (LINEAR if op_name in PRODUCTS else "")


__all__ = ["op_class_of", "class_of_scope", "LAYERNORM_MODULE", "PRODUCTS", "LINEAR", "LAYERNORM"]
