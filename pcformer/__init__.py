"""pcformer: compile JAX/Flax transformers into simulated two-party secret-sharing programs.

    prog = pcformer.compile(fn, *example_args, owners=..., policy="mpcformer")
    print(prog.ir); prog.cost; outputs, report = prog.run(*args); prog.plaintext(*args)

`models` and `distill` are imported lazily, so a missing or broken one never breaks
`import pcformer`.
"""
from __future__ import annotations

import importlib

from . import _allocator

_allocator.tune()  # before anything starts JAX's CPU threads; see pcformer/_allocator.py

from . import compile_cache as _compile_cache

_compile_cache.enable()  # before the first compile; see pcformer/compile_cache.py

from .api import Program, Secret, compile  # noqa: A004
from .costing import cost
from .config import MPCConfig, Network
from .report import Report

__all__ = ["compile", "cost", "Program", "Secret", "MPCConfig", "Network", "Report", "policies", "models",
           "distill"]

_LAZY = {"models": "pcformer.models", "distill": "pcformer.distill",
         "policies": "pcformer.compiler.policies"}


def __getattr__(name):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'pcformer' has no attribute {name!r}")
