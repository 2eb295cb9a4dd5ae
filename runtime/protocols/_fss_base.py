"""The FSS family's op-label decorator and its own ideal-rule table.

Why a table of its own: the FSS ops carry the Beaver family's op names (drelu, relu, truncate...)
so a family registry can swap one for the other, but some functionalities differ (FSS truncation
is exact, the Beaver dealer truncation is off by up to one LSB), so their ideal rules must not
share `_base.IDEAL_RULES`. The wrapper behaves like `_base.protocol` otherwise.
"""
from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp

from pcformer.runtime import fss_costs

from . import registry

FAMILY = "fss"

FSS_IDEAL_RULES: dict = {}
"""op name -> ideal rule(ctx, like, *args, **kwargs) for the FSS family (filled by fss_ideal)."""


def _functionality_or_protocol(ctx, name, fn, args, kwargs):
    """In ideal mode with a rule: the rule's output, the protocol shadowed for its ledger."""
    rule = FSS_IDEAL_RULES.get(name)
    if rule is None or not getattr(ctx, "ideal", False):
        return fn(ctx, *args, **kwargs)
    shadow_out = ctx.shadow(lambda: fn(ctx, *args, **kwargs))
    return rule(ctx, shadow_out, *args, **kwargs)


def fss_protocol(name: str):
    """Label the ledger's messages with `name` (ctx.op), with the FSS family's ideal rules."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapped(ctx, *args, **kwargs):
            with ctx.op(name):
                return _functionality_or_protocol(ctx, name, fn, args, kwargs)
        wrapped.op_name = name
        return wrapped
    return deco


def low_bits(v, n: int):
    """v mod 2^n in v's own dtype."""
    if n >= jnp.iinfo(v.dtype).bits:
        return v
    return v & jnp.asarray((1 << n) - 1, v.dtype)


def fss_entry(name: str, run, from_ir=None, elementwise: bool = False,
              chunks: bool = False) -> registry.ProtocolOp:
    """The family's registry entry of op `name`: its cost formula from fss_costs.COSTS and its
    ideal rule from FSS_IDEAL_RULES (the same rule the decorator applies). No traced
    attributes: a DCF's depth is its bit width, so an FSS truncation's shift stays static."""
    return registry.ProtocolOp(name, run, fss_costs.COSTS[name], FSS_IDEAL_RULES[name], from_ir,
                               family=FAMILY, elementwise=elementwise, chunks=chunks)


def inherited_beaver_ops(own) -> list:
    """The Beaver family's ops the FSS family does not replace (share, reveal, the products, the
    boolean ops), as entries of family "fss": FSS multiplications stay Beaver's.
    Call it once every Beaver module has registered (protocols/__init__.py imports them first)."""
    mine = {op.name for op in own}
    return [dataclasses.replace(registry.lookup(name), family=FAMILY)
            for name in registry.names(registry.DEFAULT_FAMILY) if name not in mine]
