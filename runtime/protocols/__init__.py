"""The protocols, by module: `arith`, `boolean`, `compare` (family "beaver"; all names
re-exported here) and `fss`, `fss_compare` (family "fss", docs/fss.md; import them by module).

Each module registers its table of ops in `registry` on import (see registry.py).
"""
from . import arith, boolean, compare, registry  # importing a module registers its table
from . import fss, fss_compare  # family "fss": after the Beaver modules, whose ops it inherits
from .arith import (add, add_public, dot_general, dot_general_private, mul, mul_private,
                    mul_public, neg, reveal, share, share_fixed, square, sub, truncate)
from .boolean import a2b, and_, b2a, msb, not_, xor
from .compare import argmax, drelu, less, less_public, max_, max_argmax, relu, select

max = max_  # noqa: A001  (the architecture's name; `max_` avoids shadowing the builtin here)
