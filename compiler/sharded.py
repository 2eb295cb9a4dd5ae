"""The party-sharded whole-program executor (`executor="sharded"`): the IR interpreter of
execute.py, run under `jax.shard_map` over a mesh with a `party` axis of size 2.

Device p runs party p's program (runtime/mesh.py says what each device holds): a party's
plaintext inputs are placed on its own device only, a secret input's shares are split by row,
every message is a collective-permute over `party`, and the outputs are each party's own block.
The trace is the whole-program executor's (`execute.interpret`), with a party-sharded Context, so
the ledger and, under the same keys, every output equal the in-process executor's bit for bit.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from pcformer.runtime import dealer_tape, ring
from pcformer.runtime import mesh as M
from pcformer.runtime.shares import AShare, Context

from . import dealer_pass, deployment, execute


MATERIAL_USED = ("this dealer material was used by a run already: ask the dealer for new "
                 "material (a triple used twice leaks)")
DEALERS = ("simulated", "separated")


def _owner(v) -> int | None:
    """Which device may hold input `v`'s plaintext: its private owner, else both (None)."""
    return v.vis.party if v.vis.kind == "private" else None


class ShardedExecutable(execute.Executable):
    """`execute.Executable` with party p on device p of `mesh` (default: the first two devices).

    Only the `party` axis splits a run; on a mesh with a `batch` axis a run is replicated
    across it, and `run_batch` gives each batch group its own prompt.

    Same call contract: (flat outputs, ledger entries, time dict, overflow=None)."""

    def __init__(self, prog, config, mesh=None, compiler_options: dict | None = None,
                 materials=None, dealer: str = "simulated"):
        """materials: (server's, client's) `dealer_pass.Material` for ONE run: the dealer
        separated, each device reading only its own party's seed, setup key and tape.
        dealer: "simulated" (materials None: the dealer lives inside the program, each device
        deriving the material from the run key, as in-process) or "separated": before every
        run the dealer's pass (compiler/dealer_pass.py) deals that run's material with fresh
        seeds (config.seed: the seeds the simulated dealer would draw, so the two agree bit for
        bit), and each device receives only its own party's part."""
        M.check_config(config)
        if dealer not in DEALERS:
            raise ValueError(f"unknown dealer {dealer!r}: use one of {DEALERS}")
        if materials is not None and dealer == "separated":
            raise ValueError("give materials for one run or dealer='separated' (fresh material "
                             "dealt before every run), not both")
        super().__init__(prog, config, compiler_options)
        self.mesh = M.party_mesh() if mesh is None else mesh
        self.dealer = "separated" if materials is not None else dealer
        self.materials = None if materials is None else dict(enumerate(materials))
        if materials is not None:
            for p, m in self.materials.items():
                dealer_pass.check_for(m, prog, p)
        self._given, self._spent = materials is not None, False
        self._dealer = None
        self.deal_s = 0.0

    def _deal(self, flat_inputs, group: int | None = None):
        """The separated dealer's material for the next run (batch group `group` of it): its
        pass compiled once per executable, fresh seeds per run and group (`dealer_pass.keys`)."""
        if self._dealer is None:
            self._dealer = dealer_pass.dealer_for(self.prog, self.config)
        flat_inputs = [self._as_input(x) for x in flat_inputs]
        words = dealer_pass.keys(self.config, self.prog, self.runs, group)[0]
        t0 = time.perf_counter()
        mats = self._dealer.deal(flat_inputs, words, self.deployment.key(flat_inputs))
        self.deal_s += time.perf_counter() - t0
        return mats

    def _schedule(self) -> tuple:
        return next(iter(self.materials.values())).schedule

    def _material_blocks(self):
        """[keys [2, 2] uint64, tape [2, n]]: row p = party p's (dealer seed, setup key) and
        flat tape, so device p holds only its own party's material."""
        keys = np.stack([self.materials[p].key_row() for p in (0, 1)])
        return [keys, np.stack([self.materials[p].flat_tape() for p in (0, 1)])]

    def _spend(self, flat_inputs) -> None:
        """Dealer material serves ONE run (a Beaver triple used twice leaks the difference of
        the two runs' masked values): a second run needs new material from the dealer, which
        dealer="separated" asks for before every run."""
        self.deal_s = 0.0
        if self._given:
            if self._spent:
                raise ValueError(MATERIAL_USED)
            self._spent = True
        elif self.dealer == "separated":
            self.materials = dict(enumerate(self._deal(flat_inputs)))

    def _blocks(self, flat_inputs):
        """Each input as a global [2, ...] array split over `party` (see mesh.party_inputs)."""
        out = []
        for v, x in zip(self.prog.inputs, flat_inputs):
            if isinstance(x, AShare):
                out.append(jnp.asarray(x.data))            # row p = party p's share
            else:
                out.extend(M.party_inputs([x], [_owner(v)]))
        return out

    def _sharded_fn(self, run_key, setup_key, *blocks):
        self.trace_count += 1
        material = None
        if self.materials is not None:
            *blocks, keys, tape = blocks
            material = dealer_tape.PartyMaterial(keys[0, 0], keys[0, 1], tape[0],
                                                 self._schedule())
        ctx = Context(self.config, run_key, setup_key=setup_key, party_axis=M.PARTY,
                      party_material=material)
        flat = []
        for v, b in zip(self.prog.inputs, blocks):
            if v.vis.is_secret:
                flat.append(AShare(b, 0))          # the device's own share, [1, ...]
            else:
                flat.append(b[0])
        outs, _ = execute.interpret(self.prog, ctx, flat, False)
        if material is not None:
            material.check_used_up()
        self._last_entries = list(ctx.ledger.entries)
        return M.own_blocks(list(outs))

    def _weight_spec(self, v, shape, lead: int = 1):
        """Tensor parallel: how input `v`'s block of `shape` is split over a `model` axis. Only
        the server's weight matrices are (runtime.mesh.model_spec); None for the rest."""
        return M.model_spec(self.mesh, shape, lead) if _owner(v) == 0 else None

    def _place(self, blocks, lead: int = 1):
        """The blocks on the mesh: each of the server's weight matrices split over a `model`
        axis (`_weight_spec`), so each device of a party holds a slice of it and XLA partitions
        its products and masks; everything else as shard_map splits it."""
        out = list(blocks)
        for i, v in enumerate(self.prog.inputs):
            spec = self._weight_spec(v, np.shape(out[i]), lead)
            if spec is not None:
                out[i] = jax.device_put(out[i], NamedSharding(self.mesh, spec))
        return out

    def _all_blocks(self, flat_inputs):
        blocks = self._place(self._blocks(flat_inputs))
        if self.dealer == "separated" and self.materials is None:
            # lowered before any run: material of the right shapes (each run deals its own)
            self.materials = dict(enumerate(self._deal(flat_inputs)))
        return blocks if self.materials is None else blocks + self._material_blocks()

    def lower(self, flat_inputs):
        """The jitted program lowered for these inputs (tests read its HLO)."""
        blocks = self._all_blocks([self._as_input(x) for x in flat_inputs])
        fn = M.sharded(self._sharded_fn, self.mesh, len(blocks), 2, batch=False)
        with ring.x64():
            return jax.jit(fn).lower(jax.random.PRNGKey(0), np.uint64(0), *blocks)

    def compile(self, flat_inputs):
        sig = self._signature(flat_inputs)
        if sig not in self._cache:
            t0 = time.perf_counter()
            lowered = self.lower(flat_inputs)
            with ring.x64():
                compiled = (lowered.compile(compiler_options=self.compiler_options)
                            if self.compiler_options else lowered.compile())
            self._cache[sig] = (compiled, self._last_entries, [], time.perf_counter() - t0)
        return self._cache[sig]

    def _view(self, v, out):
        """The host's result for output `v`: shares as they are ([2, ...], row p from device
        p); a plaintext output as its receiver sees it (the holder of a private value, else the
        party outputs are revealed to)."""
        if isinstance(out, AShare):
            return out
        p = v.vis.party if v.vis.kind == "private" else self.config.reveal_to
        return out[p]

    def _times(self, fresh: float, run_s: float) -> dict:
        times = {"compile_s": fresh, "run_s": run_s}
        if self.dealer == "separated" and not self._given:
            times["deal_s"] = self.deal_s        # the dealer's pass, before the run
        return times

    def __call__(self, flat_inputs):
        self._spend(flat_inputs)
        flat_inputs, compiled, entries, _, fresh, key, setup_key = self._begin_run(flat_inputs)
        t0 = time.perf_counter()
        with ring.x64():
            outs = jax.block_until_ready(compiled(key, setup_key,
                                                  *self._all_blocks(flat_inputs)))
        run_s = time.perf_counter() - t0
        outs = [self._view(v, o) for v, o in zip(self.prog.outputs, outs)]
        return outs, entries, self._times(fresh, run_s), None


def batched_inputs(prog) -> tuple[int, ...]:
    """Indices of the inputs a batch run takes one per prompt: the client's, every input that
    does not define the deployment (compiler/deployment.py). The server's and the public inputs
    are the batch's one deployment: every group masks the same weights with the same setup key,
    which is safe only because they are the same weights."""
    fixed = set(deployment.deployment_inputs(prog))
    return tuple(i for i in range(len(prog.inputs)) if i not in fixed)


class BatchRuns(ShardedExecutable):
    """Several prompts across a mesh's `batch` axis (`party_mesh(batch=B)`): batch group b runs
    the program on prompt b, on its own pair of devices, as an independent run with key
    fold_in(run key, b) (runtime.mesh.batch_key), sharing the deployment (the weights and their
    setup masks). `run_batch(flat_inputs)`: the client's inputs carry a leading dim of B, the
    others are as for one run. Returns (B flat output lists, one group's ledger entries (the
    same for every group: the batch moves B times its bytes), time dict).

    dealer="separated": before each batch the dealer's pass deals every group its own material
    (fresh seeds per group; config.seed: group b's are the simulated dealer's under
    fold_in(run key, b)), and device (p, b) receives only party p's part of group b's."""

    def __init__(self, prog, config, mesh, compiler_options: dict | None = None,
                 dealer: str = "simulated"):
        if M.BATCH not in mesh.axis_names:
            raise ValueError("run_batch needs a mesh with a `batch` axis: "
                             "runtime.mesh.party_mesh(batch=B)")
        if any(v.vis.is_secret for v in prog.inputs):
            raise ValueError("a batch run takes no secret-shared input (a Secret from an "
                             "earlier run): run each prompt with `run`")
        super().__init__(prog, config, mesh, compiler_options, dealer=dealer)
        self.groups = int(mesh.shape[M.BATCH])
        self.batched = batched_inputs(prog)
        self._dealt = None

    def _check_batch(self, flat_inputs) -> None:
        for i in self.batched:
            n = np.shape(flat_inputs[i])[:1]
            if n != (self.groups,):
                raise ValueError(f"input {i} (the client's) needs a leading batch dim of "
                                 f"{self.groups} (the mesh's `batch` axis), got shape "
                                 f"{np.shape(flat_inputs[i])}")

    def _blocks(self, flat_inputs):
        """[2, B, ...] per input: the client's prompts split over `batch`, the deployment's
        inputs the same in every group."""
        out = []
        for i, (v, x) in enumerate(zip(self.prog.inputs, flat_inputs)):
            rows = M.party_inputs([x], [_owner(v)])[0]
            if i not in self.batched:
                rows = jnp.broadcast_to(rows[:, None], (2, self.groups) + rows.shape[1:])
            out.append(rows)
        return out

    def _group_fn(self, run_key, setup_key, *blocks):
        """One batch group's program: its [1, 1, ...] blocks as one run's [1, ...] blocks."""
        outs = self._sharded_fn(M.batch_key(run_key, self.mesh), setup_key,
                                *[b[:, 0] for b in blocks])
        return jax.tree_util.tree_map(lambda x: x[:, None], outs)

    def _group_materials(self, flat_inputs):
        """[keys [2, B, 2], tapes [2, B, n]] (separated dealer): row p, group b = party p's
        (dealer seed, setup key) and flat tape of group b's own material, dealt for one
        prompt's shapes (all the dealer reads). Dealt once per batch."""
        if self._dealt is None:
            one = [x[0] if i in self.batched else x for i, x in enumerate(flat_inputs)]
            mats = [self._deal(one, group=b) for b in range(self.groups)]
            self.materials = dict(enumerate(mats[0]))       # the schedule every group reads
            self._dealt = [np.stack([np.stack([m[p].key_row() for m in mats]) for p in (0, 1)]),
                           np.stack([np.stack([m[p].flat_tape() for m in mats]) for p in (0, 1)])]
        return self._dealt

    def _batch_blocks(self, flat_inputs):
        blocks = self._place(self._blocks(flat_inputs), lead=2)
        if self.dealer == "separated":
            blocks = blocks + self._group_materials(flat_inputs)
        return blocks

    def lower(self, flat_inputs):
        blocks = self._batch_blocks([self._as_input(x) for x in flat_inputs])
        fn = M.sharded(self._group_fn, self.mesh, len(blocks), 2, batch=True)
        with ring.x64():
            return jax.jit(fn).lower(jax.random.PRNGKey(0), np.uint64(0), *blocks)

    def run_batch(self, flat_inputs):
        self._check_batch(flat_inputs)
        self._dealt, self.deal_s = None, 0.0          # a batch's material serves that batch only
        if self.dealer == "separated":                # dealt before the run (and its compile)
            self._group_materials([self._as_input(x) for x in flat_inputs])
        # the setup key reads the deployment's inputs only (the same for every group)
        flat_inputs, compiled, entries, _, fresh, key, setup_key = self._begin_run(flat_inputs)
        t0 = time.perf_counter()
        with ring.x64():
            outs = jax.block_until_ready(compiled(key, setup_key,
                                                  *self._batch_blocks(flat_inputs)))
        run_s = time.perf_counter() - t0
        self._dealt = None
        groups = [[self._view(v, self._group(o, b)) for v, o in zip(self.prog.outputs, outs)]
                  for b in range(self.groups)]
        return groups, entries, self._times(fresh, run_s)

    @staticmethod
    def _group(out, b):
        """Batch group b's [2, ...] block of a [2, B, ...] output."""
        if isinstance(out, AShare):
            return AShare(out.data[:, b], out.depth)
        return out[:, b]

    def __call__(self, flat_inputs):
        raise TypeError("a batch program runs several prompts: call run_batch")


def build(prog, config, mesh=None, compiler_options: dict | None = None,
          dealer: str = "simulated") -> ShardedExecutable:
    return ShardedExecutable(prog, config, mesh, compiler_options, dealer=dealer)
