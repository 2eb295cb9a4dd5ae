"""Deployment keys: the seed of every setup mask, one per compiled program and set of weights.

Why. A weight W held by the server is opened once, at setup, as F = W - B; the client keeps F.
That is safe only while B is used for ONE W: two openings F1 = W1 - B, F2 = W2 - B give the
client W1 - W2, and with one public checkpoint, the other's private weights. So B never derives
from public information alone (a seed and an op index): each executor draws a deployment key
from the operating system's entropy at its first run, keeps it while the values it was drawn for
stay the same (the amortisation: the client may reuse F across runs), and draws a new one when
they change. "The values" are every input that is not the client's: the server's private
inputs and the public ones (a server value computed from a public input changes with it).

In the reproducible mode (`MPCConfig.seed` set) the key is derived from the seed and a digest of
those values: reproducible, still distinct for different weights, but known to anyone who knows
the seed (the mode is for tests and debugging, never secure).
"""
from __future__ import annotations

import hashlib

import jax
import numpy as np

from pcformer.runtime import shares as _shares

from . import ir


def deployment_inputs(prog: ir.Program) -> tuple[int, ...]:
    """Indices of the program inputs that define a deployment: public or the server's."""
    return tuple(i for i, v in enumerate(prog.inputs)
                 if v.vis.is_public or (v.vis.is_private and v.vis.party == 0))


def digest(values) -> bytes:
    """A digest of arrays' shapes, dtypes and bytes (any change of a value changes it)."""
    h = hashlib.blake2b(digest_size=16)
    for x in values:
        a = np.ascontiguousarray(np.asarray(x))
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(a.tobytes())
    return h.digest()


def op_setup_key(setup_key, op_index: int) -> np.uint64:
    """The setup key of the op at `op_index` (the op-cached executor compiles each op with value
    ids renumbered from 0, so the op index keeps two ops' weight masks apart)."""
    return np.uint64(_shares._mix64_int(int(setup_key) ^ _shares._mix64_int((op_index + 1) << 17)))


class Deployment:
    """The current deployment key of one executor; `key(flat_inputs)` per run."""

    def __init__(self, prog: ir.Program, config):
        self.config = config
        self.indices = deployment_inputs(prog)
        self._objects: list | None = None
        self._digest: bytes | None = None
        self._key: np.uint64 | None = None
        self.count = 0          # how many keys were drawn (1 after the first run)
        self.rekeyed = False    # whether the last `key` call drew a new key
        # a key given by a separated dealer (compiler/dealer_pass.keys): tests pin it to run the
        # in-process reference of a two-process run under the very same randomness
        self.pinned: np.uint64 | None = None

    def _current_digest(self, values) -> bytes:
        # jax arrays are immutable: the very same objects as last run need no new digest (a
        # model's weights are hashed once, not every run); numpy arrays may have been mutated
        same = (self._objects is not None and len(values) == len(self._objects)
                and all(a is b and isinstance(a, jax.Array) for a, b in zip(values, self._objects)))
        if same:
            return self._digest
        self._objects = list(values)
        return digest(values)

    def key(self, flat_inputs) -> np.uint64:
        if self.pinned is not None:
            return self.pinned
        values = [flat_inputs[i] for i in self.indices]
        d = self._current_digest(values)
        self.rekeyed = d != self._digest or self._key is None
        if self.rekeyed:
            self._digest = d
            self.count += 1
            if self.config.seed is None:
                self._key = _shares.fresh_setup_key()
            else:
                word = int.from_bytes(hashlib.blake2b(
                    repr(int(self.config.seed)).encode() + d, digest_size=8).digest(), "little")
                self._key = np.uint64(word)
        return self._key
