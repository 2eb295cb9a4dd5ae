"""Execution: an environment-passing interpreter over the IR, run inside ONE jax.jit.

Why an interpreter traced by jit rather than generated code: the ledger is written while tracing
(shapes are static), so one trace gives both the compiled executable and the measured entries;
later calls with the same input shapes reuse the compiled executable without retracing.

Values in the environment: plaintext arrays for public/private values (a private array is only
ever read by ops of its holder, or encoded by its holder into a protocol), ``AShare`` for
secrets. Protocol ops run under ``ctx.scope(op.scope, op.op_class)`` and ``ctx.op(op.name)``;
share-local ops touch each party's row only and never write the ledger.

Protocol ops are registry lookups (runtime/protocols/registry.py, in ``config.protocols``'
family): the entry's IR adapter builds the protocol's arguments, so this file knows no protocol
by name. The overflow check (``config.check_overflow``) is a SIMULATOR-ONLY ORACLE, see
overflow.py.
"""
from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import parties, ring
from pcformer.runtime.protocols import registry
from pcformer.runtime.protocols.adapt import bcast as _bcast
from pcformer.runtime.protocols.adapt import encode as _enc
from pcformer.runtime.protocols.registry import ProtocolOp
from pcformer.runtime.shares import AShare, Context, run_key

from . import ir
from . import overflow as _overflow
from .deployment import Deployment

__all__ = ["build", "Executable", "LOCAL_FNS", "SHARE_LOCAL", "protocol_entry", "run_protocol"]


# ============================================================ helpers
def _depth(vals) -> int:
    return max((v.depth for v in vals if isinstance(v, AShare)), default=0)


def _party_rows(s: AShare):
    """The party rows this code holds of a share: both in one process, its own on a device."""
    return range(s.data.shape[0])


def _per_row(fn, *shares):
    """Apply fn to each party's row held here (stacked back onto the party axis)."""
    return jnp.stack([fn(*[s.data[i] for s in shares]) for i in _party_rows(shares[0])])


# ============================================================ local (plaintext) helpers
def _one_hot(op, idx):
    depth = op.attrs["depth"]
    return (idx[..., 0][..., None] == jnp.arange(depth, dtype=idx.dtype)).astype(jnp.int32)


LOCAL_FNS = {
    "reciprocal": lambda op, b: 1.0 / b,
    "one_hot": _one_hot,
    "reshape": lambda op, x: jnp.reshape(x, op.attrs["new_shape"]),
    "sub": lambda op, a, b: a - b,
    "select": lambda op, p, f, t: jnp.where(p.astype(bool), t, f),
}


def _run_local(op: ir.Op, args):
    if op.name == "const":
        return [jnp.asarray(op.attrs["value"])]
    if "fn" in op.attrs:
        out = LOCAL_FNS[op.attrs["fn"]](op, *args)
        return [jnp.asarray(out).astype(op.results[0].dtype)]
    prim, params = op.attrs["primitive"], op.attrs["params"]
    out = prim.bind(*args, **params)
    return list(out) if prim.multiple_results else [out]


# ============================================================ share-local ops (free)
def _plain_ring(cfg, op, args, shape):
    i = op.attrs["plain_index"]
    return jnp.broadcast_to(_enc(cfg, args[i], op.attrs["enc"]), shape)


def _add_like(cfg, op, args, sub):
    shape = op.results[0].shape
    a, b = args
    if isinstance(a, AShare) and isinstance(b, AShare):
        a, b = _bcast(a, shape), _bcast(b, shape)
        return AShare(a.data - b.data if sub else a.data + b.data, _depth(args))
    i = op.attrs["plain_index"]
    s = _bcast(args[1 - i], shape)
    c = _plain_ring(cfg, op, args, shape)
    holder = op.attrs["holder"]
    c = c.astype(s.data.dtype)
    row = parties.by_party(holder, c, jnp.zeros_like(c))
    if not sub:
        data = s.data + row
    elif i == 1:              # secret - plain: the holder subtracts from its share
        data = s.data - row
    else:                     # plain - secret: everyone negates, the holder adds
        data = row - s.data
    return AShare(data, s.depth)


def _mul_public(cfg, op, args):
    shape = op.results[0].shape
    s = _bcast(args[0], shape)
    return AShare(s.data * _plain_ring(cfg, op, args, shape)[None], s.depth)


def _dot_public(cfg, op, args):
    i = op.attrs["plain_index"]
    w = _enc(cfg, args[i], op.attrs["enc"])
    s = args[1 - i]
    dn = op.attrs["dimension_numbers"]
    mm = lambda a, b: ring.ring_matmul(a, b, dn, cfg.ring_bits, cfg.matmul_kernel)
    data = jnp.stack([mm(s.data[r], w) if i == 1 else mm(w, s.data[r]) for r in _party_rows(s)])
    return AShare(data, s.depth)


def _lift(cfg, op, args):
    x = args[0]
    return AShare(x.data * jnp.asarray(1 << op.attrs["shift"], x.data.dtype), x.depth)


def _from_public(cfg, op, args):
    c = _enc(cfg, args[0], op.attrs["enc"])
    return AShare(parties.only_party0(c), 0)


def _select_public(cfg, op, args):
    pred, t, f = args
    shape = op.results[0].shape
    t, f = _bcast(t, shape), _bcast(f, shape)
    p = jnp.broadcast_to(jnp.asarray(pred).astype(bool), shape)[None]
    return AShare(jnp.where(p, t.data, f.data), _depth([t, f]))


def _structural(cfg, op, args):
    """Reshape/transpose/slice/reduce_sum/concatenate/pad/gather... applied to each row."""
    name = op.name
    if name == "convert_element_type":
        return [args[0]]
    prim = op.attrs["primitive"]
    params = dict(op.attrs["params"])
    if name == "gather" and "fill_value" in params:
        # shares of out-of-range rows read 0 (a concrete fill: binding with None fails)
        params["fill_value"] = 0
    n_data = op.attrs.get("n_data", len(args))
    data, rest = args[:n_data], args[n_data:]
    if name == "pad":
        x, pv = data
        rows = [prim.bind(x.data[r], pv.data[r], *rest, **params) for r in _party_rows(x)]
        return [AShare(jnp.stack(rows), _depth(data))]
    outs = [prim.bind(*[d.data[r] for d in data], *rest, **params) for r in _party_rows(data[0])]
    if prim.multiple_results:
        return [AShare(jnp.stack([o[k] for o in outs]), _depth(data)) for k in range(len(outs[0]))]
    return [AShare(jnp.stack(outs), _depth(data))]


SHARE_LOCAL = {
    "add": lambda cfg, op, args: _add_like(cfg, op, args, False),
    "sub": lambda cfg, op, args: _add_like(cfg, op, args, True),
    "neg": lambda cfg, op, args: AShare(-args[0].data, args[0].depth),
    "mul_public": _mul_public,
    "dot_general_public": _dot_public,
    "lift": _lift,
    "from_public": _from_public,
    "select_public": _select_public,
}


def _run_share_local(cfg, op, args):
    f = SHARE_LOCAL.get(op.name)
    if f is not None:
        return [f(cfg, op, args)]
    return _structural(cfg, op, args)


# ============================================================ protocol ops
def protocol_entry(op: ir.Op, config) -> ProtocolOp:
    """The registry entry of a protocol op in the config's protocol family."""
    return registry.lookup(op.name, config.protocols)


def run_protocol(ctx, op: ir.Op, args):
    """Run one protocol op: its registry entry's adapter turns the IR op and its input values
    into the protocol's arguments (the same shapes and kwargs its cost formula gets)."""
    return protocol_entry(op, ctx.config).call(ctx, op, args)


# ============================================================ the interpreter
def run_ops(cfg, steps, env: dict, protocol=None, on_result=None) -> None:
    """The one interpreter loop over IR ops, shared by both executors (this module's and the
    op-program cache's): for each (k, op) in `steps`, read its operands from `env` (value id ->
    value), run it and write its results back. Local and share-local ops run here; a protocol op
    runs through `protocol(k, op, args)` and a reveal's ring output is decoded. `on_result(k, op,
    args, result, output)` sees every result (the overflow probes)."""
    for k, op in steps:
        args = [env[v.id] for v in op.operands]
        if op.kind == "local":
            outs = _run_local(op, args)
        elif op.kind == "share_local":
            outs = _run_share_local(cfg, op, args)
        else:
            out = protocol(k, op, args)
            if op.name == "reveal":
                out = _decode(cfg, out, op.results[0])
            outs = [out]
        for r, o in zip(op.results, outs):
            env[r.id] = o
            if on_result is not None:
                on_result(k, op, args, r, o)


def interpret(prog: ir.Program, ctx: Context, flat_inputs, check: bool = False):
    """Run the IR on the runtime; returns (plaintext outputs, overflow probes)."""
    cfg = ctx.config
    env: dict[int, Any] = {v.id: x for v, x in zip(prog.inputs, flat_inputs)}
    probes = []

    def protocol(_, op, args):
        with ctx.scope(op.scope, op.op_class), ctx.op(op.name):
            return run_protocol(ctx, op, args)

    def probe(k, op, args, r, o):
        if check and r.vis.is_secret:
            probes.append((k, r, _overflow.probe(cfg, op, args, o, r)))

    run_ops(cfg, enumerate(prog.ops), env, protocol, probe)
    return [env[v.id] for v in prog.outputs], probes


def _decode(cfg, u, v: ir.Value):
    x = ring.decode(u, v.scale, cfg.ring_bits)
    if np.issubdtype(np.dtype(v.dtype), np.floating):
        return x.astype(jnp.float32)
    return jnp.round(x).astype(v.dtype)


class Executable:
    """One compiled executable per input signature; ``trace_count`` counts traces (tests)."""

    def __init__(self, prog: ir.Program, config, compiler_options: dict | None = None):
        self.prog = prog
        self.config = config
        # e.g. {"xla_backend_optimization_level": 0}: about half the XLA CPU compile time of a
        # large protocol graph, for tests and one-off runs (slower execution)
        self.compiler_options = dict(compiler_options or {})
        self.trace_count = 0
        self.runs = 0
        self.deployment = Deployment(prog, config)
        # SIMULATOR-ONLY (tests of what a party sees): with audit=True each run keeps every
        # message in `audit_log` as (phase, kind, sender, [arrays]), see audit_entries
        self.audit = False
        self.audit_log: list = []
        self._cache: dict = {}

    def _fn(self, flat_inputs, run_key, setup_key):
        # both keys are traced arguments: a fresh key every run reuses the compiled program
        self.trace_count += 1
        ctx = Context(self.config, run_key, setup_key=setup_key, audit=self.audit,
                      fence_messages=True)
        outs, probes = interpret(self.prog, ctx, flat_inputs, self.config.check_overflow)
        self._last_entries = list(ctx.ledger.entries)
        self._last_probes = [(k, r) for k, r, _ in probes]
        self._last_audit, payloads = audit_entries(ctx)
        return outs, [p for _, _, p in probes], payloads

    @staticmethod
    def _as_input(x):
        # a pcformer.Secret input arrives as an AShare (a pytree: its data is traced)
        return x if isinstance(x, AShare) else jnp.asarray(x)

    def _signature(self, flat_inputs) -> tuple:
        """The compile-cache key of these inputs (shapes, dtypes, share depths, audit)."""
        return tuple(_input_sig(x) for x in flat_inputs) + (("audit",) if self.audit else ())

    def _begin_run(self, flat_inputs):
        """Inputs as arrays, the compiled program (compile seconds counted on its first run
        only), and this run's fresh key and the deployment's setup key."""
        flat_inputs = [self._as_input(x) for x in flat_inputs]
        compiled, entries, meta, compile_s = self.compile(flat_inputs)
        fresh = compile_s if self._cache.get("_timed") is not compiled else 0.0
        self._cache["_timed"] = compiled
        setup_key = self.deployment.key(flat_inputs)
        key = run_key(self.config, self.runs)
        self.runs += 1
        return flat_inputs, compiled, entries, meta, fresh, key, setup_key

    def compile(self, flat_inputs):
        """(compiled, entries, probe meta, compile seconds) for these input shapes, cached."""
        sig = self._signature(flat_inputs)
        if sig not in self._cache:
            t0 = time.perf_counter()
            with ring.x64():
                lowered = jax.jit(self._fn).lower(list(flat_inputs), jax.random.PRNGKey(0),
                                                  np.uint64(0))
                compiled = (lowered.compile(compiler_options=self.compiler_options)
                            if self.compiler_options else lowered.compile())
            self._cache[sig] = (compiled, self._last_entries, self._last_probes,
                                time.perf_counter() - t0)
            self._cache[("audit_meta",) + sig] = self._last_audit
        return self._cache[sig]

    def message_shapes(self, flat_inputs) -> list:
        """(phase, kind, sender, payload shapes) of every message a run on these inputs sends,
        from an abstract trace with audit on: no compile, no run (the mesh checks weigh XLA's
        collective bytes against them)."""
        audit, self.audit = self.audit, True
        try:
            with ring.x64():
                payloads = jax.eval_shape(self._fn, [self._as_input(x) for x in flat_inputs],
                                          jax.random.PRNGKey(0), np.uint64(0))[2]
        finally:
            self.audit = audit
        return [m + (p,) for m, p in zip(self._last_audit, payloads)]

    def __call__(self, flat_inputs):
        """Returns (flat outputs, ledger entries, time dict, overflow or None)."""
        flat_inputs, compiled, entries, meta, fresh, key, setup_key = self._begin_run(flat_inputs)
        t0 = time.perf_counter()
        with ring.x64():
            outs, probes, payloads = compiled(list(flat_inputs), key, setup_key)
            outs = jax.block_until_ready(outs)
        if self.audit:
            meta = self._cache[("audit_meta",) + self._signature(flat_inputs)]
            self.audit_log = [m + ([np.asarray(a) for a in p],) for m, p in zip(meta, payloads)]
        run_s = time.perf_counter() - t0
        overflow = None
        if meta:
            overflow = _overflow.first_overflow(self.prog, self.config, meta,
                                                [float(p) for p in probes])
        return outs, entries, {"compile_s": fresh, "run_s": run_s}, overflow


def audit_entries(ctx):
    """(meta, payloads) of an audited context: meta[i] = (phase, kind, sender) of message i,
    payloads[i] its arrays (each channel call writes one ledger entry and one audit item)."""
    if not ctx.audit:
        return [], []
    es = ctx.ledger.entries
    assert len(es) == len(ctx.audit_log), "audit log and ledger disagree (ideal mode?)"
    meta = [(e.phase, kind, sender) for e, (kind, sender, _) in zip(es, ctx.audit_log)]
    return meta, [jax.tree_util.tree_leaves(p) for _, _, p in ctx.audit_log]


def received(audit_log, party: int, phases=("online", "setup")) -> list:
    """SIMULATOR-ONLY: the arrays `party` received from the other party, in order (its view,
    besides its own inputs and dealer material)."""
    out = []
    for phase, kind, sender, arrays in audit_log:
        if phase not in phases:
            continue
        if kind == "exchange":
            out += [a[1 - party] for a in arrays]
        elif kind == "send" and sender == 1 - party:
            out += list(arrays)
    return out


def _input_sig(x):
    """Shape and dtype of an input (an AShare by its share array and depth)."""
    if isinstance(x, AShare):
        return ("share", tuple(x.data.shape), str(x.data.dtype), x.depth)
    return (tuple(np.shape(x)), str(jnp.asarray(x).dtype))


def build(prog: ir.Program, config, compiler_options: dict | None = None) -> Executable:
    """The executable of an IR program (compiled lazily per input signature)."""
    return Executable(prog, config, compiler_options)
