"""Lowering rules: structural operators (free per share: reshape, transpose, slices,
concatenation, padding, dynamic slices) and maximum/argmax trees over one axis.

Registered into `lower_base.LOWER_RULES` on import (compiler/lower.py imports this module)."""
from __future__ import annotations

import numpy as np

from .ir import SECRET
from .lower_base import LOWER_RULES, _out, rule
from .lower_walk import _squeeze, tree_max


# ------------------------------------------------------------------ structural: free per share
_STRUCTURAL = ("reshape", "broadcast_in_dim", "transpose", "squeeze", "expand_dims", "slice",
               "rev", "reduce_sum", "cumsum", "copy", "copy_p", "reduce_precision",
               "convert_element_type", "split", "real", "stop_gradient", "tile")


def _structural(L, eqn, *vals):
    # convert_element_type reaches here through lower_cmp._convert, which has already handled
    # complex targets, float -> bool and float -> int of a secret real
    name = eqn.primitive.name
    if name in ("reduce_precision", "stop_gradient"):  # identities on the values we compute
        return [vals[0]]
    results = []
    for i, _ in enumerate(eqn.outvars):
        shape, dtype = _out(eqn, i)
        results.append(L.new(shape, dtype, SECRET, vals[0].scale))
    L.emit(name, vals, results, kind="share_local", primitive=eqn.primitive,
           params=dict(eqn.params))
    return results


for _n in _STRUCTURAL:
    LOWER_RULES[_n] = _structural


@rule("concatenate", "pad", "dynamic_slice", "dynamic_update_slice")
def _mixed_structural(L, eqn, *vals):
    """Ops whose data operands may mix secrets with plaintext; index operands must be public."""
    name = eqn.primitive.name
    n_data = {"concatenate": len(vals), "pad": 2, "dynamic_slice": 1,
              "dynamic_update_slice": 2}[name]
    data, idx = list(vals[:n_data]), list(vals[n_data:])
    for v in idx:
        if not v.vis.is_public:
            L.fail(f"{name} with indices that are not public ({v.vis}): only public indices "
                   f"are supported on secret data")
    data, s = L.common(data)
    data = [L.to_secret(v, s) if not v.vis.is_secret else v for v in data]
    if name == "pad" and data[1].vis.is_secret:
        pass
    shape, dtype = _out(eqn)
    r = L.new(shape, dtype, SECRET, s)
    L.emit(name, data + idx, [r], kind="share_local", primitive=eqn.primitive,
           params=dict(eqn.params), n_data=n_data)
    return [r]


@rule("reduce_max", "reduce_min", "argmax", "argmin")
def _reduce_max(L, eqn, x):
    shape, dtype = _out(eqn)
    name = eqn.primitive.name
    axes = tuple(eqn.params["axes"])
    if len(axes) != 1:
        L.fail(f"{name} over several axes {axes} on a secret: reduce one axis at a time")
    if name in ("reduce_min", "argmin"):
        x = L.per_share("neg", [x], x.shape, x.dtype, x.scale)
    m, idx = tree_max(L, x, axes[0], name in ("argmax", "argmin"),
                      str(np.dtype(eqn.params.get("index_dtype", np.int32))))
    if name in ("argmax", "argmin"):
        return [_squeeze(L, idx, axes[0])]
    m = _squeeze(L, m, axes[0])
    if name == "reduce_min":
        m = L.per_share("neg", [m], m.shape, m.dtype, m.scale)
    return [m]
