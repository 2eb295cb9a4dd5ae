"""pcformer: compile JAX/Flax transformers into simulated two-party secret-sharing programs.

    prog = pcformer.compile(fn, *example_args, owners=..., policy="mpcformer")
    print(prog.ir); prog.cost; outputs, report = prog.run(*args); prog.plaintext(*args)

Everything is imported lazily (on first use of `pcformer.compile`, `pcformer.models`, ...), so
`import pcformer` and `pcformer --help` start without JAX, and a missing or broken optional part
never breaks `import pcformer`.
"""
from __future__ import annotations

import importlib

from . import _allocator

_allocator.tune()  # before anything starts JAX's CPU threads; see pcformer/_allocator.py

from . import compile_cache as _compile_cache

_compile_cache.enable()  # before the first compile (no JAX import); see pcformer/compile_cache.py


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("pcformer")
    except metadata.PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

__all__ = ["compile", "cost", "Program", "Secret", "MPCConfig", "Network", "Report", "policies", "models",
           "distill", "__version__"]

_LAZY = {"models": "pcformer.models", "distill": "pcformer.distill",
         "policies": "pcformer.compiler.policies"}
_ATTRS = {"compile": "pcformer.api", "cost": "pcformer.costing", "Program": "pcformer.api", "Secret": "pcformer.api",
          "MPCConfig": "pcformer.config", "Network": "pcformer.config", "Report": "pcformer.report"}


def __getattr__(name):
    if name in _LAZY:
        mod = importlib.import_module(_LAZY[name])
        globals()[name] = mod
        return mod
    if name in _ATTRS:
        value = getattr(importlib.import_module(_ATTRS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pcformer' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
