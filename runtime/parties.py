"""The party axis as the code running it sees it: both rows in one process, one row per device.

In-process (one simulated program) every share, every piece of a party's dealer material and
every party-local value carries a leading party axis of 2: row p is party p's. Party-sharded
(`runtime/mesh.py`: the program runs under `shard_map` over a `party` axis) each device holds
ONLY its own row: the leading axis has size 1, and the other party's row does not exist on the
device: a protocol that reads it (`x.data[1]` on party 0's device) gets the device's own row
again (JAX clamps an index past the axis), never the other party's. Separation is enforced by
the shapes, not only tested (tests/e2e/mesh_checks.py `separation`).

Protocols never index a share's party row directly (an opened value's first row is public and
the same on every row); they use the few helpers below, which do the same thing in both
settings:

- `mine(both)`: a [2, ...] array of both parties' values (what the dealer draws for both,
  `[value, 0]` for a public term only party 0 adds, `[0, 1]` for the DPF's first control bits)
  as the code running holds it: all of it in-process, row p on party p's device;
- `row(x, q)`: party q's own row of a party-axis array, as party q holds it (on a device: the
  device's row). It is meaningful on party q's device only; what the other device computes
  from it is dropped: `mine`/`rows` keep party q's formula on party q's row, and a one-way
  `channel.send` from q carries only q's value;
- `rows`, `only_party0`, `by_party`, `per_party`: `mine` of the usual stacks;
  `by_party_lazy` computes only the device's own row (a conditional on its party index).

The simulated dealer still computes both parties' material on each device (it is a third party
living in the program); a separated deployment gives each device only its own
(runtime/dealer_tape.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .mesh import PARTY


def device_party():
    """This device's party (traced) inside a party-sharded program, None in one process."""
    am = jax.sharding.get_abstract_mesh()
    if PARTY in getattr(am, "axis_names", ()) and PARTY in getattr(am, "manual_axes", ()):
        return lax.axis_index(PARTY)
    return None


def mine(both):
    """A [2, ...] array of both parties' values, as the code running holds it: all of it in one
    process, its own row ([1, ...]) on a party's device."""
    p = device_party()
    if p is None:
        return both
    return lax.dynamic_index_in_dim(both, p, 0, keepdims=True)


def row(x, q: int):
    """Party q's row of a party-axis array, as party q holds it: x[q] in one process, the
    device's own row on a device (meaningful on party q's device only)."""
    return x[q] if device_party() is None else x[0]


def rows(first, second):
    """Party 0's and party 1's local values (same shape) as a party-axis array."""
    return mine(jnp.stack([first, second]))


def only_party0(value):
    """[value, 0]: a public term that only party 0 adds (so the sum gains it once)."""
    return rows(value, jnp.zeros_like(value))


def by_party(p: int, own, other):
    """`own` at party p's row, `other` at party 1-p's."""
    return rows(own, other) if p == 0 else rows(other, own)


def by_party_lazy(p: int, own, other):
    """`own()` at party p's row, `other()` at party 1-p's: both in one process, only the
    device's own on a device (a conditional on its party index: a private product's matrix
    product is computed once per device, not twice)."""
    q = device_party()
    if q is None:
        return by_party(p, own(), other())
    return lax.cond(q == p, own, other)[None]


def per_party(x, f0, f1):
    """Party 0 computes f0 of its row of x, party 1 f1 of its own."""
    return rows(f0(row(x, 0)), f1(row(x, 1)))


def party_ids(shape, dtype):
    """[0, 1] over the party axis, broadcast to `shape` (each party's index, as it holds it)."""
    return mine(jnp.stack([jnp.zeros(shape, dtype), jnp.ones(shape, dtype)]))
