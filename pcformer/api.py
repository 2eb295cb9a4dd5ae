"""The user's entry point: ``pcformer.compile(fn, *example_args, owners=..., policy=..., config=...)``.

Data takes one road: trace -> rewrite (policy) -> lower (owners) -> static cost | execute.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pcformer.compiler import cost as _cost
from pcformer.compiler import execute as _execute
from pcformer.compiler import ir as _ir
from pcformer.compiler import opcache as _opcache
from pcformer.compiler import lower as _lower
from pcformer.runtime.config import MPCConfig

from .report import Report

__all__ = ["compile", "Program"]


def _rewrite(traced, policy):
    """Apply the policy's rewrite (policy=None: lower the program as traced)."""
    if policy is None:
        return traced, None
    from pcformer.compiler import policies, rewrite
    pol = policies.get(policy)
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
    _exe: _execute.Executable = dataclasses.field(repr=False, default=None)
    _cost: Report | None = dataclasses.field(repr=False, default=None)

    @property
    def cost(self) -> Report:
        if self._cost is None:
            self._cost = Report(_cost.static_cost(self.ir, self.config), static=True)
        return self._cost

    def _flat(self, args):
        flat, tree = jax.tree_util.tree_flatten(tuple(args))
        if tree != self.traced.in_tree:
            raise TypeError(f"arguments {tree} do not match the compiled structure "
                            f"{self.traced.in_tree}")
        for x, aval in zip(flat, self.traced.in_avals):
            if tuple(jnp.shape(x)) != tuple(aval.shape):
                raise TypeError(f"argument shape {jnp.shape(x)} != compiled {aval.shape}")
        return [jnp.asarray(x, dtype=aval.dtype) for x, aval in zip(flat, self.traced.in_avals)]

    def run(self, *args):
        """Simulate both parties inside one jit; returns (outputs, Report)."""
        outs, entries, times, overflow = self._exe(self._flat(args))
        report = Report(entries, time=times)
        report.overflow = overflow
        if overflow is not None:
            warnings.warn(str(overflow), RuntimeWarning, stacklevel=2)
        outs = [jnp.asarray(o) for o in outs]
        return jax.tree_util.tree_unflatten(self.traced.out_tree, outs), report

    def plaintext(self, *args):
        """The rewritten program in plain float JAX (what the MPC result approximates)."""
        return self.traced(*args)

    @property
    def trace_count(self) -> int:
        """How many times the executor was traced (repeated same-shape runs: once)."""
        return self._exe.trace_count


EXECUTORS = ("op", "program")


def compile(fn: Callable, *example_args, owners, policy="mpcformer",
            config: MPCConfig = MPCConfig(), executor: str = "op",
            compiler_options: dict | None = None) -> Program:  # noqa: A001 - the public name
    """Compile ``fn`` into a two-party program.

    owners: a pytree prefix of the arguments tuple: 0 (server), 1 (client), None (public).
    policy: a policy name ("exact", "mpcformer", "puma", "paper"), a Policy, or None (no
        rewrite: every heavy operator left on a secret is an error).
    executor: "op" (default): each protocol op is a small jit program compiled once per
        signature and shared by every op that has it (compiles a transformer in a fraction of
        the time; see compiler/opcache.py); "program": the whole simulation as ONE jax.jit
        program (XLA sees everything, but compiling a large model on CPU takes many minutes).
        Both write the same ledger and give the same outputs for the same dealer randomness.
    compiler_options: XLA options for the one jit of the "program" executor, e.g.
        {"xla_backend_optimization_level": 0} to compile large programs faster.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: use one of {EXECUTORS}")
    from pcformer.compiler import trace as _trace
    traced = _trace.trace(fn, *example_args)
    rewritten, pol = _rewrite(traced, policy)
    owners_flat = _lower.flatten_owners(owners, example_args)
    program = _lower.lower(rewritten, owners_flat, config)
    exe = (_opcache.OpCachedExecutable(program, config) if executor == "op"
           else _execute.build(program, config, compiler_options))
    return Program(program, rewritten, pol, config, tuple(owners_flat), exe)
