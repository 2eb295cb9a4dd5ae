"""The FSS family's op-label decorator and its own ideal-rule table.

Why a table of its own: the FSS ops carry the Beaver family's op names (drelu, relu, truncate...)
so a family registry can swap one for the other, but some functionalities differ (FSS truncation
is exact, the Beaver dealer truncation is off by up to one LSB), so their ideal rules must not
share `_base.IDEAL_RULES`. The wrapper behaves like `_base.protocol` otherwise.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

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
