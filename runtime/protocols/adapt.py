"""Helpers shared by the IR adapters (`registry.FromIR`) of the protocol tables.

An IR op is read duck-typed (`.attrs`, `.operands`, `.results`; values have `.shape`, `.id`):
the runtime never imports the compiler. Its input values are AShares for secrets and plaintext
arrays for a party's own values, which the holder encodes into the ring here.
"""
from __future__ import annotations

import jax.numpy as jnp

from pcformer.runtime import ring
from pcformer.runtime.shares import AShare

from .registry import FromIR


def encode(config, x, scale: int):
    """Fixed-point encode a plaintext array at `scale` (ints/bools at any scale are exact)."""
    return ring.encode_traced(jnp.asarray(x).astype(jnp.float64), scale, config.ring_bits)


def bcast(x: AShare, shape) -> AShare:
    """A share broadcast to `shape` (each party's row broadcast alike)."""
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return x
    lead = x.data.shape[:1]                  # the party axis: 2 in one process, 1 on a device
    data = x.data.reshape(lead + (1,) * (len(shape) - len(x.shape)) + tuple(x.shape))
    return AShare(jnp.broadcast_to(data, lead + shape), x.depth)


def weight_id(v) -> str:
    """Per-value id of a party's plaintext operand: its setup mask B derives from it, so two
    different weights never share a mask."""
    return f"v{v.id}"


def out_shape(op) -> tuple:
    return tuple(op.results[0].shape)


def input_shape(op) -> tuple:
    return (op.operands[0].shape,)


def first_arg(op, args, config) -> tuple:
    return (args[0],)


def unary(kwargs=None) -> FromIR:
    """The adapter of an op on its first input as is, with static kwargs `kwargs(op)`."""
    return FromIR(input_shape, first_arg, kwargs) if kwargs else FromIR(input_shape, first_arg)
