"""Message formulas of the Beaver family's protocols (docs/protocols.md as code) and the shared
message helpers (`Msg`, `rounds`, `place`) every family's formulas use.

One formula per protocol, each a pure function of static shapes, attributes and the MPCConfig
returning the messages the protocol sends, as `Msg`s. Formulas never call a protocol: tests hold
the two equal message by message, which checks both. Which op uses which formula is said by the
op's registry entry (`ProtocolOp.cost`, in the table at the bottom of its protocol module).

Placement: an online Msg arrives at depth max(secret input depths) + depth_offset; offline
(dealer) and setup Msgs are placed at depth 1 (their depth_offset is 1). `place` does this.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from .config import MPCConfig


@dataclasses.dataclass(frozen=True)
class Msg:
    phase: str                 # "setup" | "offline" | "online"
    bits: tuple[int, int]      # bits sent by party 0 / party 1 (offline: received from the dealer)
    depth_offset: int          # online: rounds after the inputs are available; else 1
    detail: str = ""


def _n(shape) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64))


def _log2(l: int) -> int:
    return l.bit_length() - 1


def _shift(msgs, off: int, prefix: str = ""):
    """Messages of a sub-protocol whose inputs are ready `off` rounds later."""
    return [dataclasses.replace(m, depth_offset=m.depth_offset + (off if m.phase == "online" else 0),
                                detail=f"{prefix}/{m.detail}" if prefix else m.detail)
            for m in msgs]


def rounds(msgs) -> int:
    """Online rounds of an op (its output depth minus its input depth)."""
    return max((m.depth_offset for m in msgs if m.phase == "online"), default=0)


def place(op: str, msgs, input_depth: int):
    """(op, phase, bits, depth) tuples, comparable with ledger entries."""
    return [(op, m.phase, tuple(m.bits),
             input_depth + m.depth_offset if m.phase == "online" else 1) for m in msgs]


def _offline(bits_p1: int, detail: str):
    return Msg("offline", (0, bits_p1), 1, detail)


def _both(bits: int, off: int, detail: str):
    return Msg("online", (bits, bits), off, detail)


# ----------------------------------------------------------------------------- arithmetic

def free(*shapes, config: MPCConfig = MPCConfig(), **attrs):
    """Local ops: share (PRG seeds), add, sub, neg, add/mul by public, xor, not: no messages."""
    return []


def reveal(x_shape, config: MPCConfig = MPCConfig(), to=None):
    """To both: one exchange, n*l each. To party p: the other sends n*l."""
    b = _n(x_shape) * config.ring_bits
    if to is None:
        return [_both(b, 1, "reveal")]
    return [Msg("online", (b, 0) if to == 1 else (0, b), 1, "reveal")]


def mul(x_shape, y_shape=None, config: MPCConfig = MPCConfig()):
    """Beaver: offline c1 (n*l to party 1); online e and f in one exchange (2*n*l each)."""
    nl = _n(x_shape) * config.ring_bits
    return [_offline(nl, "mul"), _both(2 * nl, 1, "mul")]


def square(x_shape, config: MPCConfig = MPCConfig()):
    """Square pair: offline s1 (n*l); online e (n*l each)."""
    nl = _n(x_shape) * config.ring_bits
    return [_offline(nl, "square"), _both(nl, 1, "square")]


def dot_shape(x_shape, y_shape, dimension_numbers=None):
    dn = dimension_numbers or (((len(x_shape) - 1,), (0,)), ((), ()))
    (ca, cb), (ba, bb) = dn
    batch = [x_shape[i] for i in ba]
    fa = [s for i, s in enumerate(x_shape) if i not in ca and i not in ba]
    fb = [s for i, s in enumerate(y_shape) if i not in cb and i not in bb]
    return tuple(batch + fa + fb)


def dot_general(x_shape, y_shape, config: MPCConfig = MPCConfig(), dimension_numbers=None):
    """Matrix triple: offline |C|*l; online E and F in one exchange ((|X|+|Y|)*l each)."""
    l = config.ring_bits
    out = dot_shape(x_shape, y_shape, dimension_numbers)
    return [_offline(_n(out) * l, "dot_general"),
            _both((_n(x_shape) + _n(y_shape)) * l, 1, "dot_general")]


def _private(out_n, x_n, w_n, party, l, name):
    from_p = lambda b: (b, 0) if party == 0 else (0, b)
    from_q = lambda b: (0, b) if party == 0 else (b, 0)
    # the server's W is opened once per deployment (setup); a client's W every run, online, in
    # the same round as E (runtime.dealer.amortised)
    return [_offline(out_n * l, name),
            Msg("setup" if party == 0 else "online", from_p(w_n * l), 1, name),
            Msg("online", from_q(x_n * l), 1, name)]


def mul_private(x_shape, w_shape, config: MPCConfig = MPCConfig(), party: int = 0, **attrs):
    """W held by party p: setup F = W - B (|W|*l from p); online E (n*l from 1-p); offline n*l."""
    n = _n(x_shape)
    return _private(n, n, _n(w_shape), party, config.ring_bits, "mul_private")


def dot_general_private(x_shape, w_shape, config: MPCConfig = MPCConfig(), party: int = 0,
                        dimension_numbers=None, w_on_left: bool = False, **attrs):
    """As mul_private with a matrix product; offline |out|*l."""
    out = (dot_shape(w_shape, x_shape, dimension_numbers) if w_on_left
           else dot_shape(x_shape, w_shape, dimension_numbers))
    return _private(_n(out), _n(x_shape), _n(w_shape), party, config.ring_bits,
                    "dot_general_private")


def truncate(x_shape, config: MPCConfig = MPCConfig(), bits=None, mode=None):
    """local: free. dealer: offline 2*n*l (shares of r'>>f and r_m); online c (n*l each)."""
    if (mode or config.trunc_mode) == "local":
        return []
    nl = _n(x_shape) * config.ring_bits
    return [_offline(2 * nl, "truncate"), _both(nl, 1, "truncate")]


# ----------------------------------------------------------------------------- boolean

def and_(x_shape, y_shape=None, config: MPCConfig = MPCConfig(), width=None):
    """Boolean Beaver AND of `width`-bit words: offline n*w; online 2*n*w each."""
    nw = _n(x_shape) * (config.ring_bits if width is None else width)
    return [_offline(nw, "and"), _both(2 * nw, 1, "and")]


def a2b(x_shape, config: MPCConfig = MPCConfig()):
    """Kogge-Stone: generate layer (1 AND of l-bit words), then log2(l) levels of 2 ANDs (the
    last level 1), each level one exchange and one dealer message: 1 + log2(l) rounds."""
    nl = _n(x_shape) * config.ring_bits
    L = _log2(config.ring_bits)
    msgs = [_offline(nl, "and"), _both(2 * nl, 1, "and")]
    for i in range(L):
        k = 1 if i == L - 1 else 2
        msgs += [_offline(k * nl, "and"), _both(2 * k * nl, 2 + i, "and")]
    return msgs


msb = a2b  # the MSB is read off the same adder (carry into bit l-1)


def b2a(x_shape, config: MPCConfig = MPCConfig()):
    """Bit to arithmetic: offline r1 (n*l); online c = b xor r (n bits each), 1 round."""
    n = _n(x_shape)
    return [_offline(n * config.ring_bits, "b2a"), _both(n, 1, "b2a")]


# ----------------------------------------------------------------------------- compare

def drelu(x_shape, config: MPCConfig = MPCConfig()):
    m = _shift(msb(x_shape, config), 0, "msb")
    return m + _shift(b2a(x_shape, config), rounds(m), "")


def relu(x_shape, config: MPCConfig = MPCConfig()):
    d = _shift(drelu(x_shape, config), 0, "drelu")
    return d + _shift(mul(x_shape, x_shape, config), rounds(d))


def less(x_shape, y_shape=None, config: MPCConfig = MPCConfig()):
    shape = x_shape if y_shape is None else tuple(np.broadcast_shapes(tuple(x_shape), tuple(y_shape)))
    m = _shift(msb(shape, config), 0, "msb")
    return m + _shift(b2a(shape, config), rounds(m))


def less_public(x_shape, config: MPCConfig = MPCConfig(), **attrs):
    return less(x_shape, None, config)


def select(b_shape, x_shape=None, y_shape=None, config: MPCConfig = MPCConfig()):
    return mul(b_shape, b_shape, config)


def _tree(x_shape, config, axis, with_index):
    shape = tuple(x_shape)
    axis = axis % len(shape)
    k = shape[axis]
    rest = _n(shape) // k
    r_less = rounds(less((1,), None, config))
    msgs, base, n, level = [], 0, k, 0
    while n > 1:
        h = n // 2
        msgs += _shift(less((h * rest,), None, config), base, "less")
        sel_n = 2 * h * rest if (with_index and level > 0) else h * rest
        msgs += _shift(mul((sel_n,), None, config), base + r_less, "select")
        base += r_less + 1
        n = n - h
        level += 1
    return msgs


def max_(x_shape, config: MPCConfig = MPCConfig(), axis: int = -1):
    """Tree reduction: ceil(log2 k) levels of less + select (each 1 + log2(l) + 1 + 1 rounds)."""
    return _tree(x_shape, config, axis, False)


def argmax(x_shape, config: MPCConfig = MPCConfig(), axis: int = -1):
    """As max; from the second level on, values and (now secret) indices share one mul."""
    return _tree(x_shape, config, axis, True)


def __getattr__(name: str):
    """`COSTS`: a read-only alias, op name -> cost formula of the default family, built from the
    protocol registry (runtime/protocols/registry.py), which owns the op -> formula mapping."""
    if name == "COSTS":
        from .protocols import registry
        return {n: registry.lookup(n).cost for n in registry.names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
