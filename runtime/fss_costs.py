"""Static communication cost of the FSS family's ops: docs/fss.md as code.

One rule per op, a pure function of static shapes, attributes and the MPCConfig returning the
messages the protocol sends, in the order the ledger records them (offline key material first,
then the online openings), as `costs.Msg`. Rules never call a protocol; tests hold them equal to
the measured ledger message by message.

Notation: N elements, l ring bits, lambda = 128 seed bits, n the comparison width (`bits`,
default `MPCConfig.compare_bits`, else l), f the truncation shift.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from . import fss_dpf
from .config import MPCConfig
from .costs import Msg
from .fss_keys import LAMBDA_BITS


def _n(shape) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def _to(party: int, bits: int, detail: str) -> Msg:
    return Msg("offline", (bits, 0) if party == 0 else (0, bits), 1, detail)


def dcf_msgs(levels: int, payload: int, n_el: int, l: int, detail: str):
    """A DCF's correction words, dealt to each party: levels*lambda seed bits, 2*levels control
    bits and (levels + 1)*payload*l group bits per element, in three messages per party."""
    per = [levels * LAMBDA_BITS * n_el, 2 * levels * n_el, (levels + 1) * payload * l * n_el]
    return [_to(p, b, detail) for p in (0, 1) for b in per]


def dpf_msgs(n: int, n_el: int, l: int, detail: str):
    """An n-bit DPF's correction words to each party, with early termination (fss_dpf: m =
    max(n - 3, 0) levels, w = 2^min(n, 3) outputs a leaf): m*lambda + 2m + w*l bits per element."""
    m = fss_dpf.levels(n)
    per = [m * LAMBDA_BITS * n_el, 2 * m * n_el, fss_dpf.leaf_words(n) * l * n_el]
    return [_to(p, b, detail) for p in (0, 1) for b in per]


def _corrections(values: int, n_el: int, l: int, detail: str):
    """`values` ring values per element correlated with the mask, to party 1 in one message."""
    return [_to(1, values * n_el * l, detail)]


def _open(bits: int, off: int, detail: str) -> Msg:
    return Msg("online", (bits, bits), off, detail)


def compare_width(config: MPCConfig, bits) -> int:
    """The comparison width n: the op's `bits`, else `MPCConfig.compare_bits`, else l (the one
    place the protocols, their ideal rules and these formulas read it from)."""
    return (config.compare_bits or config.ring_bits) if bits is None else int(bits)


def drelu(x_shape, config: MPCConfig = MPCConfig(), bits=None, prg="splitmix"):
    """Offline: DCF on n-1 bits (payload 1) to both + msb(r) (l bits) to party 1.
    Online: one round, n bits per element each."""
    n, l, N = compare_width(config, bits), config.ring_bits, _n(x_shape)
    return (dcf_msgs(n - 1, 1, N, l, "drelu") + _corrections(1, N, l, "drelu")
            + [_open(n * N, 1, "drelu")])


def relu(x_shape, config: MPCConfig = MPCConfig(), bits=None, prg="splitmix"):
    """Offline: DCF on n-1 bits (payload 2) to both + msb(r), msb(r)*r (2l) to party 1.
    Online: one round, l bits per element each."""
    n, l, N = compare_width(config, bits), config.ring_bits, _n(x_shape)
    return (dcf_msgs(n - 1, 2, N, l, "relu") + _corrections(2, N, l, "relu")
            + [_open(l * N, 1, "relu")])


def select(b_shape, x_shape, y_shape, config: MPCConfig = MPCConfig()):
    """Offline: r_b and r_b*r_d (2l bits) to party 1. Online: one round, 1 + l bits per element
    each (two messages in the same round)."""
    l, N = config.ring_bits, _n(np.broadcast_shapes(tuple(x_shape), tuple(y_shape)))
    return _corrections(2, N, l, "select") + [_open(N, 1, "select"), _open(l * N, 1, "select")]


def truncate(x_shape, config: MPCConfig = MPCConfig(), bits=None, mode=None, prg="splitmix"):
    """Offline: DCF on f bits (payload 1) to both + r >> f and msb(r) (2l) to party 1.
    Online: one round, l bits per element each. trunc_mode "local": free (SecureML's shift)."""
    if (mode or config.trunc_mode) == "local":
        return []
    f = config.frac_bits if bits is None else int(bits)
    l, N = config.ring_bits, _n(x_shape)
    return (dcf_msgs(f, 1, N, l, "truncate") + _corrections(2, N, l, "truncate")
            + [_open(l * N, 1, "truncate")])


def lut(x_shape, config: MPCConfig = MPCConfig(), table=None, bits=None, prg="splitmix"):
    """Offline: an n-bit DPF (n - 3 levels) to both. Online: one round, n bits per element each."""
    n, l, N = int(bits), config.ring_bits, _n(x_shape)
    return dpf_msgs(n, N, l, "lut") + [_open(n * N, 1, "lut")]


def less(x_shape, y_shape=None, config: MPCConfig = MPCConfig(), bits=None, prg="splitmix"):
    """1 - drelu(x - y): drelu's messages."""
    shape = x_shape if y_shape is None else np.broadcast_shapes(tuple(x_shape), tuple(y_shape))
    return drelu(shape, config, bits)


def less_public(x_shape, config: MPCConfig = MPCConfig(), c=None, bits=None, prg="splitmix"):
    return drelu(x_shape, config, bits)


def _shift(msgs, off: int):
    """Online messages of a sub-protocol whose inputs are ready `off` rounds later."""
    return [dataclasses.replace(m, depth_offset=m.depth_offset + off) if m.phase == "online"
            else m for m in msgs]


def _levels(x_shape, axis: int):
    """Per tree level: (pairs h, shape of the compared slices [h, *rest])."""
    shape = list(x_shape)
    k = shape.pop(axis % len(shape))
    out = []
    while k > 1:
        out.append((k // 2, tuple([k // 2] + shape)))
        k = k - k // 2
    return out


def max_(x_shape, config: MPCConfig = MPCConfig(), axis=-1, bits=None, prg="splitmix"):
    """ceil(log2 k) levels, level i one relu on the pairs, at rounds i + 1."""
    return [m for i, (_, s) in enumerate(_levels(x_shape, axis))
            for m in _shift(relu(s, config, bits), i)]


def argmax(x_shape, config: MPCConfig = MPCConfig(), axis=-1, bits=None, prg="splitmix"):
    """ceil(log2 k) levels, each a drelu on the pairs (round 2i + 1) and a select of values and
    indices together (2h elements, round 2i + 2)."""
    msgs = []
    for i, (h, s) in enumerate(_levels(x_shape, axis)):
        double = (2 * h,) + s[1:]
        msgs += _shift(drelu(s, config, bits), 2 * i)
        msgs += _shift(select(double, double, double, config), 2 * i + 1)
    return msgs


def max_argmax(x_shape, config: MPCConfig = MPCConfig(), axis=-1, bits=None, prg="splitmix"):
    """The argmax tree's messages (it selects the values with the indices)."""
    return argmax(x_shape, config, axis, bits)


COSTS = {"drelu": drelu, "relu": relu, "select": select, "truncate": truncate, "lut": lut,
         "less": less, "less_public": less_public, "max": max_, "argmax": argmax,
         "max_argmax": max_argmax}


def online_bits(msgs) -> tuple[int, int]:
    """Bits each party sends online."""
    on = [m for m in msgs if m.phase == "online"]
    return sum(m.bits[0] for m in on), sum(m.bits[1] for m in on)


def rounds(msgs) -> int:
    """Online rounds (the output's depth minus the inputs')."""
    return max((m.depth_offset for m in msgs if m.phase == "online"), default=0)


def place(op: str, msgs, input_depth: int):
    """(op, phase, bits, depth) tuples, comparable with ledger entries."""
    return [(op, m.phase, tuple(m.bits),
             input_depth + m.depth_offset if m.phase == "online" else 1) for m in msgs]
