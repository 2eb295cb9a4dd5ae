"""Party-sharded execution: the two parties on two devices of a JAX mesh, messages as collectives.

In-process, both parties live in one array with a leading party axis [2, ...] and the channel's
exchange is a row swap (`payload[::-1]`). Here the program runs under `jax.shard_map` over a mesh
with a `party` axis of size 2, so device p runs party p's program:

- a party's plaintext inputs (`owners`) reach only its own device (the other gets zeros);
- `channel.exchange` sends the device's own row of the payload with `lax.ppermute` over `party`,
  and `channel.send` is a one-way `ppermute` whose receiver keeps the result: every message is a
  collective-permute in the compiled HLO, so XLA's count of the bytes moved can be checked against
  the ledger (tests/e2e/test_mesh.py);
- outputs come back as each party's own block: a share's `data` is [2, ...] with row p from
  device p (the in-process shares, bit for bit), a public output is [2, ...] of the parties' views.

What a device holds: ONLY its own row. Shares and party-local values are [1, ...] blocks on
a device (runtime/parties.py: the protocols build and read party rows through its helpers), so
the other party's row does not exist there: a protocol that reads "row 1" on party 0's device
gets party 0's own row again (JAX clamps the index), never party 1's. The
dealer is simulated here (`run`): each device derives the whole correlated randomness from the
run key and keeps its own row, so a device could compute the other party's material.
Separated, each device holds only its own party's material (runtime/dealer_tape.py,
compiler/dealer_pass.py; the compiled sharded executor and two-process runs). Either way the
dealer's material is not a collective. Ideal mode and the overflow oracle reconstruct secrets
across rows, so they are refused here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec

PARTY = "party"
BATCH = "batch"
MODEL = "model"


def party_mesh(devices=None, batch: int = 1, model: int = 1) -> Mesh:
    """A mesh with a `party` axis of size 2, a `batch` axis of size `batch` when > 1 and a
    `model` axis of size `model` when > 1, over the first 2 * batch * model devices. On CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is imported."""
    devices = list(jax.devices() if devices is None else devices)
    need = 2 * batch * model
    if len(devices) < need:
        raise ValueError(f"a party mesh with batch={batch}, model={model} needs {need} devices, "
                         f"found {len(devices)} (on CPU set XLA_FLAGS=--xla_force_host_platform_"
                         f"device_count={need} before importing JAX)")
    sizes = {PARTY: 2, BATCH: batch, MODEL: model}
    names = tuple(a for a in (PARTY, BATCH, MODEL) if a == PARTY or sizes[a] > 1)
    shape = tuple(sizes[a] for a in names)
    return Mesh(np.array(devices[:need]).reshape(shape), names)


def exchange_rows(payload, axis: str = PARTY):
    """Both parties send at once: each device sends its [1, ...] block of every leaf and gets
    the other party's block back, as the in-process `payload[::-1]` does."""
    def one(x):
        return lax.ppermute(_split_over_model(x), axis, perm=[(0, 1), (1, 0)])
    return jax.tree_util.tree_map(one, payload)


def send_value(value, sender: int, axis: str = PARTY):
    """`sender`'s local value to the other party: a one-way permute (zeros on the sender, which
    never reads the result)."""
    return jax.tree_util.tree_map(
        lambda x: lax.ppermute(_split_over_model(x), axis, perm=[(sender, 1 - sender)]), value)


def _is_share(x) -> bool:
    from .shares import AShare, BShare
    return isinstance(x, (AShare, BShare))


def own_blocks(out):
    """Each leaf as this device's [1, ...] block: a share's data is one already (its own row),
    a public value gains the party axis."""
    def one(x):
        return x if _is_share(x) else jnp.asarray(x)[None]
    return jax.tree_util.tree_map(one, out, is_leaf=_is_share)


def input_row(x, owner: int | None, party: int):
    """Party `party`'s row of an input: the value itself when public or its own, zeros of its
    shape when the other party owns it (the other party's value never reaches that row)."""
    if owner is None or owner == party:
        return x
    return np.zeros_like(x) if isinstance(x, np.ndarray) else jnp.zeros_like(x)


def party_inputs(args, owners):
    """Stack each argument as [2, ...] for the party axis: each party's `input_row` (a
    party-owned argument on its owner's row with zeros on the other, so the other device never
    receives it; a public one on both)."""
    out = []
    for x, owner in zip(args, owners):
        x = jnp.asarray(x)
        if owner is None:
            out.append(jnp.broadcast_to(x, (2,) + x.shape))
        else:
            out.append(jnp.stack([input_row(x, owner, p) for p in (0, 1)]))
    return out


def check_config(config) -> None:
    if config.mode == "ideal":
        raise ValueError("party-sharded execution runs protocol mode only: ideal mode "
                         "reconstructs secrets across the parties' rows")
    if config.check_overflow:
        raise ValueError("party-sharded execution has no overflow oracle (it reconstructs "
                         "secrets across the parties' rows): run in-process for check_overflow")


def sharded(body, mesh: Mesh, n_party_args: int, n_replicated: int, batch: bool = True):
    """shard_map of body(*replicated, *party_args) over `mesh`: party args split over `party`
    (each device gets its [1, ...] block) and, on a mesh with a `batch` axis, their next
    (leading data) dim over `batch`; the rest replicated. Outputs are per-party blocks laid out
    the same way. batch=False: replicated over every axis but `party`.

    A `model` axis stays automatic (XLA's SPMD partitioner): inside a party's program the
    arrays placed split over it (`model_spec`: the server's weights) are partitioned by XLA,
    which moves pieces between the devices of ONE party as it needs; only `party` and `batch`
    are manual, so every message between the parties is still a permute over `party`."""
    data = (PARTY, BATCH) if batch and BATCH in mesh.axis_names else (PARTY,)
    specs = (PartitionSpec(),) * n_replicated + (PartitionSpec(*data),) * n_party_args
    manual = {a for a in mesh.axis_names if a != MODEL}
    return jax.shard_map(body, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(*data),
                         axis_names=manual, check_vma=False)


def model_dim(shape, n: int, lead: int = 0) -> int | None:
    """The dim of `shape` (past its first `lead`) that a `model` axis of size n splits: the
    largest one n divides (the last of equals), or None when none does."""
    dims = [d for d in range(lead, len(shape)) if shape[d] >= n and shape[d] % n == 0]
    return max(dims, key=lambda i: (shape[i], i)) if dims else None


def model_spec(mesh: Mesh, shape, lead: int = 1) -> PartitionSpec | None:
    """Tensor-parallel placement of one party input block of `shape` (its first `lead` dims
    the party and batch axes): its largest remaining dim that the `model` axis divides, split
    over `model`; None when the mesh has no `model` axis or the block is not a matrix (vectors
    and scalars stay whole on every device of the party)."""
    if MODEL not in mesh.axis_names or len(shape) - lead < 2:
        return None
    d = model_dim(shape, mesh.shape[MODEL], lead)
    if d is None:
        return None
    spec = list((PARTY, BATCH)[:lead]) + [None] * (len(shape) - lead)
    spec[d] = MODEL
    return PartitionSpec(*spec)


def _split_over_model(x):
    """A message leaf split over an automatic `model` axis before it crosses `party`, so each
    device of the sending party sends its slice once (a replicated leaf would be sent by every
    device of the party: the same bytes n times). Leaves no dim of which the axis divides stay
    replicated (tests/e2e/mesh_checks.py check_model counts those copies)."""
    am = jax.sharding.get_abstract_mesh()
    if MODEL not in am.axis_names or MODEL in am.manual_axes:
        return x
    d = model_dim(x.shape, am.shape[MODEL])
    if d is None:
        return x
    spec = [None] * x.ndim
    spec[d] = MODEL
    return lax.with_sharding_constraint(x, jax.sharding.NamedSharding(am, PartitionSpec(*spec)))


def batch_key(key, mesh: Mesh):
    """The run key of this device's batch group: fold_in(key, b) on a mesh with a `batch` axis
    (each group is an independent run of the program on its slice), else the key itself."""
    if BATCH not in mesh.axis_names:
        return key
    return jax.random.fold_in(key, lax.axis_index(BATCH))


def _program(fn, args, config, key, mesh, owners, audit: bool):
    """(jitted shard_map program, its arguments, holder) shared by `run` and `lower_run`: the
    holder receives the trace's ledger (and, with audit, each message's size)."""
    from .config import MPCConfig
    from .shares import Context, run_key

    config = config or MPCConfig()
    check_config(config)
    key = run_key(config) if key is None else key
    mesh = party_mesh() if mesh is None else mesh
    owners = (None,) * len(args) if owners is None else tuple(owners)
    holder = {}

    def body(k, *blocks):
        ctx = Context(config, batch_key(k, mesh), party_axis=PARTY, audit=audit)
        holder["ledger"] = ctx.ledger
        out = own_blocks(fn(ctx, *[b[0] for b in blocks]))
        holder["sizes"] = message_sizes(ctx.audit_log)
        ctx.audit_log.clear()          # tracers: never kept past the trace
        return out

    prog = jax.jit(sharded(body, mesh, len(args), 1))
    return prog, (key, *party_inputs(args, owners)), holder


def run(fn, *args, config=None, key=None, mesh: Mesh | None = None, owners=None):
    """`runtime.run` party-sharded: `fn(ctx, *args)` with party p's program on device p.

    owners: one entry per argument, 0 / 1 (only that party's device receives it) or None
    (public); default: all public. Returns (outputs, ledger): share outputs as in-process
    shares ([2, ...], row p from device p), public outputs as [2, ...] (party p's view at row p).
    Same randomness as `runtime.run` for the same key (or config.seed): outputs and ledger equal
    the in-process run's.

    On a mesh with a `batch` axis of size B (`party_mesh(batch=B)`), every argument's leading dim
    is split into B slices and batch group b runs `fn` on slice b as its own run with key
    fold_in(key, b) (outputs keep the leading dim, concatenated back); the ledger returned is
    one group's (the same for every group: the whole batch moved B times its bytes).
    """
    from .ring import x64

    with x64():
        prog, call_args, holder = _program(fn, args, config, key, mesh, owners, False)
        out = prog(*call_args)
    return out, holder["ledger"]


def lower_run(fn, *args, config=None, key=None, mesh: Mesh | None = None, owners=None):
    """The jitted, lowered program `run` would execute (for HLO inspection), its ledger and each
    entry's message size in elements per sending party (from the audit log: shapes only)."""
    from .ring import x64

    with x64():
        prog, call_args, holder = _program(fn, args, config, key, mesh, owners, True)
        lowered = prog.lower(*call_args)
    return lowered, holder["ledger"], holder["sizes"]


def message_sizes(audit_log) -> list:
    """Per channel call: (kind, elements each sender sends, senders): an exchange's payload
    leaves are [2, ...] (both send), a send's and a deal's have no party axis (one sender)."""
    out = []
    for kind, _, payload in audit_log:
        leaves = jax.tree_util.tree_leaves(payload)
        if kind == "exchange":
            n = sum(int(np.prod(x.shape[1:], dtype=np.int64)) for x in leaves)
            out.append((kind, n, 2))
        else:
            out.append((kind, sum(int(np.prod(x.shape, dtype=np.int64)) for x in leaves), 1))
    return out
