"""`run`: execute fn(ctx, *args) as one jitted two-party program and return its ledger."""
from __future__ import annotations

import jax

from .config import MPCConfig
from .ring import x64
from .shares import Context, run_key


def run(fn, *args, config: MPCConfig | None = None, key=None, jit: bool = True):
    """Run `fn(ctx, *args)` inside x64 (and jax.jit unless jit=False).

    Returns (outputs, ledger). The ledger is filled while tracing, so it is available even though
    the outputs come from the compiled program. key defaults to `run_key(config)`: fresh OS
    entropy per call (a traced argument, so a new key does not recompile), or PRNGKey(seed) in
    the reproducible mode.
    """
    config = config or MPCConfig()
    key = run_key(config) if key is None else key
    holder = {}

    def program(k, *a):
        ctx = Context(config, k)
        holder["ledger"] = ctx.ledger
        return fn(ctx, *a)

    with x64():
        out = (jax.jit(program) if jit else program)(key, *args)
    return out, holder["ledger"]
