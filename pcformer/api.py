"""The user's entry point: ``pcformer.compile(fn, *example_args, owners=..., policy=..., config=...)``.

Data takes one road: trace -> rewrite (policy) -> lower (owners) -> static cost | execute.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pcformer import compile_cache as _compile_cache
from pcformer.compiler import cost as _cost
from pcformer.compiler import execute as _execute
from pcformer.compiler import ir as _ir
from pcformer.compiler import opcache as _opcache
from pcformer.compiler import lower as _lower
from pcformer.runtime.config import MPCConfig

from pcformer.runtime.shares import AShare

from . import _inputs
from ._inputs import Secret
from .report import Report

_compile_cache.listen()  # count persistent-cache hits of this process's compiles

__all__ = ["compile", "Program"]


def _rewrite(traced, policy, protocols: str):
    """Apply the policy's rewrite (policy=None: lower the program as traced), with the choices
    it makes for the protocol family (`Policy.for_protocols`: exact's lookups under fss)."""
    if policy is None:
        return traced, None
    from pcformer.compiler import policies, rewrite
    pol = policies.load(policy).for_protocols(protocols)
    return rewrite.rewrite(traced, pol), pol


@dataclasses.dataclass
class Program:
    """A compiled two-party program.

    ir: the protocol IR (print it). cost: the static CostReport (nothing runs).
    run(*args) -> (outputs revealed to config.reveal_to, measured Report).
    plaintext(*args): the rewritten (friendly) program evaluated in plain float JAX.
    """

    ir: _ir.Program
    traced: Any            # the rewritten Traced
    policy: Any
    config: MPCConfig
    owners: tuple
    keep_secret: tuple = ()
    _exe: _execute.Executable = dataclasses.field(repr=False, default=None)
    _cost: Report | None = dataclasses.field(repr=False, default=None)
    _checked: list = dataclasses.field(repr=False, default_factory=list)
    _batch: Any = dataclasses.field(repr=False, default=None)

    def ir_text(self) -> str:
        """The IR with each op's static cost to its left and the totals at the end (what
        `pcformer run --dump_ir` writes; `print(prog.ir)` is the IR alone)."""
        return _cost.annotated(self.ir, self.config)

    @property
    def cost(self) -> Report:
        if self._cost is None:
            self._cost = Report(_cost.static_cost(self.ir, self.config), static=True,
                                reproducible_seed=self.config.seed,
                                revealed=_inputs.revealed(self.ir))
        return self._cost

    def ranges(self, *bounds, warn: bool = False, _stacklevel: int = 3):
        """Static range analysis (compiler/ranges.py): where a secret can exceed the ring's safe
        bound for any inputs in the given ranges, one per argument: a number m (|x| <= m), a
        (lo, hi) pair, None (unknown), or example arrays (their observed range). Returns an
        Analysis (iterate it for the findings: op, source line, module path); warn=True also
        issues a RuntimeWarning per finding."""
        from pcformer.compiler import ranges as _ranges
        found = _ranges.analyze(self.ir, self.config,
                                _ranges.flat_bounds(bounds, self.traced.in_tree))
        if warn:
            _ranges.warn(found, stacklevel=_stacklevel)
        return found

    def _flat(self, args):
        leaves, tree = jax.tree_util.tree_flatten_with_path(tuple(args), is_leaf=_is_secret)
        if tree != self.traced.in_tree:
            raise TypeError(f"arguments {tree} do not match the compiled structure "
                            f"{self.traced.in_tree}")
        flat = [x for _, x in leaves]
        self._checked = _inputs.check_inputs(leaves, self.config, self._checked)
        out = []
        for x, aval, owner in zip(flat, self.traced.in_avals, self.owners):
            shape = x.shape if _is_secret(x) else tuple(jnp.shape(x))
            if tuple(shape) != tuple(aval.shape):
                raise TypeError(f"argument shape {shape} != compiled {aval.shape}")
            if (owner == _lower.SECRET_INPUT) != _is_secret(x):
                raise TypeError("an argument whose owner is 'secret' must be a pcformer.Secret "
                                "(and only those)")
            # a carried secret starts this run at round depth 0: each run's rounds are its own
            out.append(AShare(x.share.data, 0) if _is_secret(x) else jnp.asarray(x, dtype=aval.dtype))
        return out

    def run(self, *args):
        """Simulate both parties inside one jit; returns (outputs, Report).

        Refuses, before any simulation, NaN / inf inputs and inputs beyond the encodable range
        (ValueError naming the argument). Every run draws fresh keys unless config.seed is set
        (then the report's `reproducible_seed` says the run is not secure)."""
        outs, entries, times, overflow = self._exe(self._flat(args))
        report = Report(entries, time=times, reproducible_seed=self.config.seed,
                        revealed=_inputs.revealed(self.ir))
        report.overflow = overflow
        if overflow is not None:
            warnings.warn(str(overflow), RuntimeWarning, stacklevel=2)
        return self._outputs(outs), report

    def _outputs(self, flat_outs):
        """The executor's flat outputs as the function's output tree (shares as Secrets)."""
        outs = [Secret(o, v.scale, self.config.ring_bits) if isinstance(o, AShare) else jnp.asarray(o)
                for o, v in zip(flat_outs, self.ir.outputs)]
        return jax.tree_util.tree_unflatten(self.traced.out_tree, outs)

    def run_batch(self, *args):
        """Several prompts at once, one per group of the mesh's `batch` axis (compile with
        executor="sharded", mesh=pcformer.runtime.mesh.party_mesh(batch=B)): the client's
        arguments carry a leading dim of B (prompt b at index b); the server's and the public
        ones are given once, as for `run` (the batch is one deployment: the same weights, masked
        once). Group b runs prompt b on its own pair of devices as an independent run (key
        fold_in(run key, b)). Returns (a list of B outputs, Report): the report's ledger is one
        prompt's (every group's is the same; the batch moves B times its bytes), its time the
        whole batch's."""
        from pcformer.compiler import sharded as _sharded
        if not isinstance(self._exe, _sharded.ShardedExecutable):
            raise ValueError("run_batch needs executor='sharded' and a mesh with a `batch` axis")
        if self._batch is None:
            self._batch = _sharded.BatchRuns(self.ir, self.config, self._exe.mesh,
                                             self._exe.compiler_options, self._exe.dealer)
        exe = self._batch
        leaves, tree = jax.tree_util.tree_flatten_with_path(tuple(args), is_leaf=_is_secret)
        if tree != self.traced.in_tree:
            raise TypeError(f"arguments {tree} do not match the compiled structure "
                            f"{self.traced.in_tree}")
        flat = [x for _, x in leaves]
        exe._check_batch(flat)
        # one prompt's arguments pass run's checks (structure, shapes, owners); every prompt's
        # values are checked for NaN / inf and the encodable range
        self._flat(jax.tree_util.tree_unflatten(
            tree, [x[0] if i in exe.batched else x for i, x in enumerate(flat)]))
        self._checked = _inputs.check_inputs(leaves, self.config, self._checked)
        flat = [jnp.asarray(x, dtype=a.dtype) for x, a in zip(flat, self.traced.in_avals)]
        groups, entries, times = exe.run_batch(flat)
        report = Report(entries, time=times, reproducible_seed=self.config.seed,
                        revealed=_inputs.revealed(self.ir))
        return [self._outputs(group) for group in groups], report

    def plaintext(self, *args):
        """The rewritten program in plain float JAX (what the MPC result approximates)."""
        return self.traced(*args)

    @property
    def trace_count(self) -> int:
        """How many times the executor was traced (repeated same-shape runs: once)."""
        return self._exe.trace_count


EXECUTORS = ("op", "program", "sharded")


def _is_secret(x) -> bool:
    return isinstance(x, Secret)


def _example(x):
    """A Secret example argument traces as a float array of its shape."""
    return jax.ShapeDtypeStruct(x.shape, jnp.float32) if _is_secret(x) else x


def compile(fn: Callable, *example_args, owners, policy="mpcformer",
            config: MPCConfig = MPCConfig(), executor: str = "op", reveal=True,
            compiler_options: dict | None = None,
            input_ranges: tuple | None = None, mesh=None,
            dealer: str = "simulated") -> Program:  # noqa: A001
    # (compile: the public name)
    """Compile ``fn`` into a two-party program.

    owners: a pytree prefix of the arguments tuple: 0 (server), 1 (client), None (public), or
        "secret" for an argument that arrives secret-shared (a `Secret` from an earlier run).
    reveal: a pytree prefix of the outputs: True reveals that output to config.reveal_to, False
        keeps it secret-shared (returned as a `Secret`, e.g. a KV cache for the next step).
    policy: a policy name ("exact", "mpcformer", "puma", "paper"), a Policy, or None (no
        rewrite: every heavy operator left on a secret is an error).
    executor: "op" (default): each protocol op is a small jit program compiled once per
        signature and shared by every op that has it (compiles a transformer in a fraction of
        the time; see compiler/opcache.py); "program": the whole simulation as ONE jax.jit
        program (XLA sees everything, but compiling a large model on CPU takes many minutes).
        Both write the same ledger and give the same outputs for the same dealer randomness.
        "sharded": the whole program party-sharded over a JAX mesh (party p on device p, every
        message a collective; compiler/sharded.py, docs/distributed.md): same ledger and outputs.
    mesh: for "sharded", a mesh with a `party` axis of size 2 (default: the first two devices),
        from `pcformer.runtime.mesh.party_mesh(batch=B, model=N)`: a `batch` axis for
        `Program.run_batch`, a `model` axis to split the server's weight matrices over N devices
        per party (tensor parallel).
    dealer: for "sharded", "simulated" (default: the dealer lives inside the program, each
        device deriving the correlated randomness from the run key) or "separated": the
        dealer's pass runs before every run (and every batch group) as a party of its own, with
        fresh seeds, and each device receives only its own party's material (seed, setup key
        and tape: docs/distributed.md); with config.seed, the same material the simulated dealer
        draws, so the two agree bit for bit. The report's time adds the dealer's `deal_s`.
    compiler_options: XLA options for the compiled programs (the "program" executor's one jit,
        or each op program of the "op" executor), e.g. {"xla_backend_optimization_level": 0}
        to compile faster at some cost in run time.
    input_ranges: one range per argument (see `Program.ranges`), or "observed" for the example
        arguments' own ranges: runs the static range analysis and warns, with the source line and
        module path, where a secret can exceed the ring's safe bound.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: use one of {EXECUTORS}")
    if dealer != "simulated" and executor != "sharded":
        raise ValueError(f"dealer={dealer!r} needs executor='sharded' (a party per device, so "
                         f"each device can receive only its own party's material)")
    _check_call(fn, example_args, config)
    from pcformer.compiler import trace as _trace
    example_args = jax.tree_util.tree_map(_example, example_args, is_leaf=_is_secret)
    traced = _trace.trace(fn, *example_args)
    rewritten, pol = _rewrite(traced, policy, config.protocols)
    owners_flat = _lower.flatten_owners(owners, example_args)
    keep_secret = [not r for r in _broadcast_prefix(reveal, traced.out_tree)]
    program = _lower.lower(rewritten, owners_flat, config, keep_secret)
    program = dataclasses.replace(program, input_names=_inputs.arg_names(fn, example_args,
                                                                         is_leaf=_is_secret))
    if executor == "sharded":
        from pcformer.compiler import sharded as _sharded
        exe = _sharded.build(program, config, mesh, compiler_options, dealer=dealer)
    else:
        exe = (_opcache.OpCachedExecutable(program, config, compiler_options) if executor == "op"
               else _execute.build(program, config, compiler_options))
    prog = Program(program, rewritten, pol, config, tuple(owners_flat), tuple(keep_secret), exe)
    if input_ranges is not None:
        prog.ranges(*(example_args if isinstance(input_ranges, str) and input_ranges == "observed"
                      else input_ranges), warn=True, _stacklevel=4)
    return prog


def _check_call(fn, example_args, config) -> None:
    """Mistakes a first call makes, as TypeErrors that say what to pass instead."""
    if not callable(fn):
        raise TypeError(f"pcformer.compile(fn, *example_args, ...): fn must be a function, not "
                        f"{type(fn).__name__} {fn!r:.40} (a model? pass its apply function, e.g. "
                        f"pcformer.models.load(...).embed_fn)")
    if not isinstance(config, MPCConfig):
        hint = " (use pcformer.MPCConfig(**that_dict))" if isinstance(config, dict) else ""
        raise TypeError(f"config must be a pcformer.MPCConfig, not {type(config).__name__}{hint}")
    for i, leaf in enumerate(jax.tree_util.tree_leaves(example_args, is_leaf=_is_secret)):
        if isinstance(leaf, (str, bytes)):
            raise TypeError(f"example argument {i} is a {type(leaf).__name__} ({leaf!r:.40}): "
                            f"pass arrays (tokenize text first, e.g. with the model's tokenizer)")


def _broadcast_prefix(prefix, out_tree) -> list:
    """One bool per output leaf from a pytree prefix of the outputs."""
    outs = jax.tree_util.tree_unflatten(out_tree, [0] * out_tree.num_leaves)
    flat: list = []
    try:
        jax.tree_util.tree_map(lambda r, sub: flat.extend([bool(r)] * len(jax.tree_util.tree_leaves(sub))),
                               prefix, outs)
    except ValueError as e:
        raise ValueError(f"reveal must be a pytree prefix of the outputs: {e}") from None
    return flat
