"""pcformer.runtime: a two-party secret-sharing simulator in JAX with an exact ledger.

Both parties run inside one jitted program: shares carry a leading party axis [2, ...], every
message passes through `channel` (the only writer of the `Ledger`), and `costs` holds the static
per-op formulas the ledger must equal. See docs/protocols.md.
"""
from . import channel, costs, dealer, ledger, protocols, ring
from .config import MPCConfig
from .ledger import Entry, Ledger
from .program import run
from .protocols import arith, boolean, compare
from .ring import decode, encode, encode_traced, ring_dtype, ring_matmul, x64
from .shares import AShare, BShare, Context

__all__ = ["MPCConfig", "Context", "run", "AShare", "BShare", "Entry", "Ledger", "encode",
           "encode_traced", "decode", "ring_dtype", "ring_matmul", "x64", "protocols", "arith",
           "boolean", "compare", "costs", "channel", "dealer", "ledger", "ring"]
