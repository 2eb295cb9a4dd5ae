"""One party per operating-system process: the party-sharded executor (compiler/sharded.py) run
by two processes joined with `jax.distributed`, each process holding one device = one party.

Every process runs the same compiled program over a global mesh of the two processes' devices
(`party` axis: process 0's device is the server, process 1's the client), so every message
(`lax.ppermute` over `party`) travels between the processes through JAX's CPU collectives.

What a process holds: only its own row of every party-sharded argument. An input the other party
owns is never passed to this process: its place is taken by zeros of the same shape (the global
array is assembled from each process's own row with `jax.make_array_from_single_device_arrays`,
so the zeros never leave this process either). What comes back: this party's own block of each
output (its share of a secret output, its view of a revealed one); nothing of the other party's.

The dealer is a third party: each process receives only its own `dealer_pass.Material` (its
seed with the dealer, the server's setup key, its tape of corrections), made before the run, and
its program reads nothing else of the dealer (runtime/dealer_tape.py). The run key the two
processes agree on (pcformer/party_worker.py) is only their shared seed (input sharing).
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pcformer.runtime import mesh as M
from pcformer.runtime import ring
from pcformer.runtime.shares import AShare

from . import dealer_pass, sharded


def process_mesh(model: int = 1) -> Mesh:
    """The mesh of a two-process run: party p = the devices of process p (`model` of them each:
    with more than one, a `model` axis over which the server's weight matrices are split)."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    per = [sum(d.process_index == p for d in devices) for p in (0, 1)]
    if len(devices) != 2 * model or per != [model, model]:
        raise ValueError(f"a two-process party run needs {model} device(s) in each of two "
                         f"processes, found {[(d.process_index, d.id) for d in devices]}")
    if model == 1:
        return Mesh(np.array(devices), (M.PARTY,))
    return Mesh(np.array(devices).reshape(2, model), (M.PARTY, M.MODEL))


def _own_row(arr) -> np.ndarray:
    """This process's row of a global [2, ...] array, put together from its local pieces (XLA
    may leave an output split over a `model` axis)."""
    row = np.empty(arr.shape[1:], arr.dtype)
    for piece in arr.addressable_shards:
        row[tuple(piece.index[1:])] = np.asarray(piece.data)[0]
    return row


class ProcessPartyExecutable(sharded.ShardedExecutable):
    """The sharded executor as seen by ONE of the two processes (`party` 0 or 1).

    `run_party(flat_inputs, run_key)` -> (this party's outputs, ledger entries, times); an
    output this party may not see (another party's private value) is None. `material`: this
    party's own dealer material (dealer_pass.Material), for one run."""

    def __init__(self, prog, config, party: int, material, mesh: Mesh | None = None):
        if any(v.vis.is_secret for v in prog.inputs):
            raise ValueError("secret-shared inputs (a Secret from an earlier run) are not yet "
                             "supported in a two-process run")
        super().__init__(prog, config, process_mesh() if mesh is None else mesh)
        self.party = party
        self.take(material)
        self._local = [d for d in self.mesh.devices.flat
                       if d.process_index == jax.process_index()]

    def take(self, material) -> None:
        """The next run's material (another run of the same compiled program, e.g. the next
        token of a generation): material serves one run, so each run takes its own."""
        if material is (self.materials or {}).get(self.party):
            raise ValueError(sharded.MATERIAL_USED)
        dealer_pass.check_for(material, self.prog, self.party)
        self.materials = {self.party: material}
        self._spent = False

    def _global(self, row: np.ndarray, spec: PartitionSpec | None = None):
        """A global [2, ...] array of which this process supplies only its own row: one piece
        per local device, as `spec` lays it out (default: split over `party` only)."""
        row = np.asarray(row)[None]
        shape = (2,) + row.shape[1:]
        sharding = NamedSharding(self.mesh, PartitionSpec(M.PARTY) if spec is None else spec)
        pieces = sharding.addressable_devices_indices_map(shape)
        with ring.x64():   # uint64 keys and tape words stay 64-bit
            local = [jax.device_put(row[(slice(None),) + tuple(pieces[d][1:])], d)
                     for d in self._local]
            return jax.make_array_from_single_device_arrays(shape, sharding, local)

    def _blocks(self, flat_inputs):
        """Each input as a global [2, ...] array of which this process supplies only its row;
        the server's weight matrices split over a `model` axis (compiler/sharded._place)."""
        out = []
        for v, x in zip(self.prog.inputs, flat_inputs):
            x = np.asarray(x)
            out.append(self._global(M.input_row(x, sharded._owner(v), self.party),
                                    self._weight_spec(v, (2,) + x.shape)))
        return out

    def _place(self, blocks, lead: int = 1):
        return blocks      # `_blocks` laid them out already: a process holds only its pieces

    def _material_blocks(self):
        """This party's own dealer material: its (seed, setup key) row and its flat tape."""
        mine = self.materials[self.party]
        return [self._global(mine.key_row()), self._global(mine.flat_tape())]

    def _own_view(self, v, out):
        """This party's block of output `v`: its share of a secret, its view of a revealed
        value; None for the other party's private value or a value revealed only to it."""
        block = _own_row(out.data if isinstance(out, AShare) else out)
        if isinstance(out, AShare):
            return AShare(jnp.asarray(block), 0)
        return None if v.vis.is_private and v.vis.party != self.party else block

    def run_party(self, flat_inputs, run_key):
        self._spend(flat_inputs)   # given material: checks it serves one run
        flat_inputs = [self._as_input(x) for x in flat_inputs]
        compiled, entries, _, compile_s = self.compile(flat_inputs)
        t0 = time.perf_counter()
        with ring.x64():   # the setup key argument is unused: the server's is in its material
            outs = jax.block_until_ready(compiled(np.asarray(run_key), np.uint64(0),
                                                  *self._all_blocks(flat_inputs)))
        run_s = time.perf_counter() - t0
        views = [self._own_view(v, o) for v, o in zip(self.prog.outputs, outs)]
        return views, entries, {"compile_s": compile_s, "run_s": run_s}
