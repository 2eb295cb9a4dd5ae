"""The one door: every value moving between parties, or from the dealer to a party, passes here.

Only this module writes the ledger, and it counts exactly the payload it passes: ring payloads
`bits_per_element` = l, packed boolean payloads their bit width. Payloads may be pytrees of
[2, ...] arrays (several openings merged into one step). With `ctx.audit` every payload is also
kept in `ctx.audit_log` as (kind, sender, payload) so tests can check what each party sent.
"""
from __future__ import annotations

import jax
import numpy as np

from . import mesh
from .ledger import Entry


def _count(payload, party_axis: bool) -> int:
    leaves = jax.tree_util.tree_leaves(payload)
    if party_axis:
        return sum(int(np.prod(x.shape[1:], dtype=np.int64)) for x in leaves)
    return sum(int(np.prod(x.shape, dtype=np.int64)) for x in leaves)


def _record(ctx, phase: str, bits: tuple[int, int], depth: int) -> None:
    ctx.ledger.record(Entry(op=ctx.current_op, detail=ctx.current_detail,
                            scope=ctx.current_scope, phase=phase, bits=bits, depth=depth,
                            op_class=ctx.current_op_class))


def exchange(ctx, payload, depth: int, bits_per_element: int):
    """Both parties send at once (one step): returns (received, depth + 1), received[i] = payload[1-i].

    payload: a party-axis array ([2, ...] in one process, the device's [1, ...] block when
    party-sharded) or a pytree of them; row i is what party i sends.
    """
    n = _count(payload, party_axis=True)
    _record(ctx, ctx.current_phase, (n * bits_per_element, n * bits_per_element), depth + 1)
    if ctx.audit:
        ctx.audit_log.append(("exchange", None, payload))
    if getattr(ctx, "party_axis", None) is not None:   # party-sharded: a collective permute
        return mesh.exchange_rows(payload, ctx.party_axis), depth + 1
    received = jax.tree_util.tree_map(lambda x: x[::-1], payload)
    if getattr(ctx, "fence_messages", False):
        received = jax.tree_util.tree_map(ctx.fence, received)
    return received, depth + 1


def send(ctx, sender: int, value, depth: int, bits_per_element: int):
    """Party `sender` sends `value` (its own local array, no party axis) to the other party.

    Returns (value as received, depth + 1).
    """
    n = _count(value, party_axis=False)
    bits = (n * bits_per_element, 0) if sender == 0 else (0, n * bits_per_element)
    _record(ctx, ctx.current_phase, bits, depth + 1)
    if ctx.audit:
        ctx.audit_log.append(("send", sender, value))
    if getattr(ctx, "party_axis", None) is not None:   # party-sharded: a one-way permute
        return mesh.send_value(value, sender, ctx.party_axis), depth + 1
    return value, depth + 1


def deal(ctx, to_party: int, value, bits_per_element: int):
    """Dealer-to-party material (offline phase, depth 1): only what is not PRG output is dealt.

    `value` may be a thunk: in a party's own process (`ctx.material`) the dealer's correction is
    not computed there (it needs the other party's material) but read from the party's tape,
    zeros on the other party's device; the thunk then only gives the payload's shapes.
    """
    material = getattr(ctx, "material", None)
    if material is not None:
        like = jax.eval_shape(value) if callable(value) else value
        received = material.receive(to_party, like, bits_per_element)
        _record(ctx, "offline", _deal_bits(like, to_party, bits_per_element), 1)
        return received
    value = value() if callable(value) else value
    _record(ctx, "offline", _deal_bits(value, to_party, bits_per_element), 1)
    if ctx.audit:
        ctx.audit_log.append(("deal", to_party, value))
    if getattr(ctx, "deal_log", None) is not None:
        ctx.deal_log.append((to_party, value, bits_per_element))
    return value


def _deal_bits(value, to_party: int, bits_per_element: int) -> tuple[int, int]:
    n = _count(value, party_axis=False)
    return (n * bits_per_element, 0) if to_party == 0 else (0, n * bits_per_element)


def opened(ctx, value):
    """The public result of an opening (every row holds it): the first row (party 0's in one
    process, the device's own when party-sharded)."""
    return value[0]
