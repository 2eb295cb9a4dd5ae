"""Lowering rules: products of matrices -- dot_general (matrix triple, a party's matrix, or free
by a public one) and gather (per share by public indices; by indices one party holds: a one-hot
built by that party, then a product).

Registered into `lower_base.LOWER_RULES` on import (compiler/lower.py imports this module)."""
from __future__ import annotations

import jax
import numpy as np

from .ir import SECRET, PRIVATE
from .lower_base import _out, rule


@rule("dot_general")
def _dot_general(L, eqn, a, b):
    shape, dtype = _out(eqn)
    dn = eqn.params["dimension_numbers"]
    if not a.vis.is_secret and not b.vis.is_secret:
        s, _ = L._pick_shared(a, b)
        if s is a:
            a = L.to_secret(a)
        else:
            b = L.to_secret(b)
    if a.vis.is_secret and b.vis.is_secret:
        a, b = L.for_product(a), L.for_product(b)
        r = L.new(shape, dtype, SECRET, a.scale + b.scale)
        L.emit("dot_general", [a, b], [r], dimension_numbers=dn)
        return [r]
    plain = b if a.vis.is_secret else a
    if plain.vis.is_private and not L.reusable(plain):
        return _dot_general(L, eqn, L.to_secret(a), L.to_secret(b))
    if plain.scale > 0:
        a, b = L.for_product(a), L.for_product(b)
    r_scale = a.scale + b.scale
    plain_index = 1 if a.vis.is_secret else 0
    if plain.vis.is_public:
        return [L.per_share("dot_general_public", [a, b], shape, dtype, r_scale,
                            dimension_numbers=dn, enc=plain.scale, plain_index=plain_index)]
    r = L.new(shape, dtype, SECRET, r_scale)
    L.emit("dot_general_private", [a, b], [r], dimension_numbers=dn, party=plain.vis.party,
           enc=plain.scale, plain_index=plain_index)
    return [r]


@rule("gather")
def _gather(L, eqn, table, idx):
    shape, dtype = _out(eqn)
    if idx.vis.is_secret:
        L.fail("gather with secret indices is not supported: a lookup at a secret position "
               "needs a one-hot of a secret index (a comparison per table row); keep the "
               "indices private to one party so that party builds the one-hot locally")
    if idx.vis.is_public:
        t = L.to_secret(table) if not table.vis.is_secret else table
        return [L.per_share("gather", [t, idx], shape, dtype, t.scale, primitive=eqn.primitive,
                            params=dict(eqn.params), n_data=1)]
    # indices private to one party, table held by the other or secret: one-hot, then a product
    dn = eqn.params["dimension_numbers"]
    ok = (tuple(dn.collapsed_slice_dims) == (0,) and tuple(dn.start_index_map) == (0,)
          and tuple(eqn.params["slice_sizes"])[0] == 1
          and tuple(eqn.params["slice_sizes"][1:]) == tuple(table.shape[1:])
          and idx.shape[-1] == 1 and not tuple(getattr(dn, "operand_batching_dims", ())))
    if not ok:
        L.fail("gather of a table by indices private to a party is supported only as a row "
               "lookup (jnp.take(table, ids, axis=0), an embedding)")
    vocab = table.shape[0]
    party = idx.vis.party
    onehot = L.new(idx.shape[:-1] + (vocab,), "int32", PRIVATE(party), 0)
    L.emit("one_hot", [idx], [onehot], kind="local", party=party, fn="one_hot", depth=vocab)
    rows = len(onehot.shape) - 1
    flat = L.new((int(np.prod(onehot.shape[:-1], dtype=np.int64)), vocab), "int32",
                 PRIVATE(party), 0)
    L.emit("reshape_local", [onehot], [flat], kind="local", party=party, fn="reshape",
           new_shape=flat.shape)
    tbl = table
    if table.vis.is_private and table.vis.party == party:
        raise AssertionError("local gather reached the protocol rule")  # pragma: no cover
    tflat_shape = (vocab, int(np.prod(table.shape[1:], dtype=np.int64)))
    dn2 = (((1,), (0,)), ((), ()))
    if table.vis.is_secret:
        t2 = L.per_share("reshape", [tbl], tflat_shape, tbl.dtype, tbl.scale,
                         primitive=jax.lax.reshape_p,
                         params=dict(new_sizes=tflat_shape, dimensions=None, sharding=None))
        r = L.new((flat.shape[0], tflat_shape[1]), dtype, SECRET, t2.scale)
        L.emit("dot_general_private", [flat, t2], [r], dimension_numbers=dn2, party=party,
               enc=0, plain_index=0)
    else:
        # the client shares its one-hot (0/1 integers, scale 0); the server's table stays
        # private to it: dot_general_private, result at the table's scale
        t2 = L.new(tflat_shape, tbl.dtype, tbl.vis, tbl.scale)
        L.emit("reshape_local", [tbl], [t2], kind="local", party=tbl.vis.party, fn="reshape",
               new_shape=tflat_shape)
        sflat = L.to_secret(flat)
        r = L.new((flat.shape[0], tflat_shape[1]), dtype, SECRET, t2.scale)
        L.emit("dot_general_private", [sflat, t2], [r], dimension_numbers=dn2,
               party=t2.vis.party, enc=t2.scale, plain_index=1)
    del rows
    return [L.per_share("reshape", [r], shape, dtype, r.scale, primitive=jax.lax.reshape_p,
                        params=dict(new_sizes=shape, dimensions=None, sharding=None))]
