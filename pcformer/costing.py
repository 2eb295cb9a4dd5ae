"""Cost without running: the static cost of a program from shapes alone.

    report = pcformer.cost(fn, params_shapes, ids_shape, owners=(0, 1), policy="mpcformer")

Arguments may be `jax.ShapeDtypeStruct` pytrees (e.g. `jax.eval_shape` of a model's `init`): the
program is traced, rewritten and lowered exactly as `pcformer.compile` does, then the IR's static
cost is read off (compiler/cost.py). No weight is allocated, no share is made and no protocol is
compiled by XLA: the executor is never built. The result is the same `Report` `Program.cost`
gives, so a cost from shapes equals the cost from real arrays and the measured ledger
(tests/frontdoor/test_cost_shapes.py).

`model_cost` does the same for a whole model described by a Hugging Face config (a preset name, a
config.json or a checkpoint folder; see pcformer/presets.py): the program `pcformer run` would
compile for it, plus, for decoders, the decoding steps after the prompt.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp

from pcformer.compiler import cost as _cost
from pcformer.compiler import lower as _lower
from pcformer.runtime.config import MPCConfig
from pcformer.runtime.ledger import Entry

from . import api
from .report import Report

__all__ = ["cost", "ModelCost", "model_cost", "sequential"]

def _with_protocols(config: MPCConfig, protocols: str | None) -> MPCConfig:
    """`config` costed in the protocol family `protocols` (None: the config's own family);
    an unregistered family is refused with the registry's list."""
    from pcformer.runtime.protocols import registry
    family = config.protocols if protocols is None else protocols
    if family not in registry.families():
        from .presets import CostError
        raise CostError(f"unknown protocols {family!r}: use one of {registry.families()}")
    return dataclasses.replace(config, protocols=family)


def _timed(times: dict | None, key: str, t0: float) -> float:
    now = time.perf_counter()
    if times is not None:
        times[key] = times.get(key, 0.0) + now - t0
    return now


def lower_only(fn: Callable, *args, owners, policy="mpcformer", config: MPCConfig = MPCConfig(),
               reveal=True, times: dict | None = None):
    """Trace -> rewrite -> lower, as `pcformer.compile` does, without building an executor.
    `times`, if given, accumulates trace_s, rewrite_s and lower_s."""
    from pcformer.compiler import trace as _trace
    t = time.perf_counter()
    args = jax.tree_util.tree_map(api._example, args, is_leaf=api._is_secret)
    traced = _trace.trace(fn, *args)
    t = _timed(times, "trace_s", t)
    rewritten, _ = api._rewrite(traced, policy, config.protocols)
    t = _timed(times, "rewrite_s", t)
    owners_flat = _lower.flatten_owners(owners, args)
    keep_secret = [not r for r in api._broadcast_prefix(reveal, traced.out_tree)]
    program = _lower.lower(rewritten, owners_flat, config, keep_secret)
    _timed(times, "lower_s", t)
    return program


def cost(fn: Callable, *args, owners, policy="mpcformer", config: MPCConfig = MPCConfig(),
         protocols: str | None = None, reveal=True, times: dict | None = None) -> Report:
    """The static cost `pcformer.compile(fn, *args, ...).cost` would report, from shapes alone.

    args: arrays or `jax.ShapeDtypeStruct` pytrees (only shapes and dtypes are read); an argument
    with owner "secret" may be a `pcformer.Secret` or a ShapeDtypeStruct of the value's shape.
    owners, policy, config, reveal: as `pcformer.compile`. protocols: a registered protocol family
    (runtime/protocols/registry.py: "beaver", "fss"), None: `config.protocols`.
    times: a dict to accumulate the passes' seconds in (trace_s, rewrite_s, lower_s, cost_s).
    """
    config = _with_protocols(config, protocols)
    program = lower_only(fn, *args, owners=owners, policy=policy, config=config, reveal=reveal,
                         times=times)
    t = time.perf_counter()
    entries = _cost.static_cost(program, config)
    _timed(times, "cost_s", t)
    return Report(entries, static=True)


def sequential(reports: list[Report]) -> Report:
    """The reports of programs run one after another, as one report.

    Online rounds ADD: each program starts when the previous one has answered, so its online
    messages are shifted by the online depth reached so far (and the latency estimate, rounds x
    RTT + bytes / bandwidth, is the sum of the programs' estimates). Offline and setup messages
    keep depth 1: the dealer's material for every program can be sent ahead in one batch.
    """
    entries: list[Entry] = []
    offset = 0
    for r in reports:
        deepest = 0
        for e in r.entries:
            if e.phase == "online":
                deepest = max(deepest, e.depth)
                e = dataclasses.replace(e, depth=e.depth + offset)
            entries.append(e)
        offset += deepest
    return Report(entries, static=True)


@dataclasses.dataclass
class ModelCost:
    """The static cost of a model at a sequence length.

    prefill: the prompt's program (an encoder's whole forward pass). step: one decoding step
    (decoders with new_tokens > 1, else None). steps: how many decoding steps follow the prefill.
    total: prefill, then `steps` decoding steps (online rounds added; a step's setup, opening its
    weights' masks, is paid once: the same program serves every step).
    """

    name: str
    kind: str
    seq_len: int
    new_tokens: int
    policy: str
    prefill: Report
    step: Report | None
    steps: int
    total: Report
    params: int
    times: dict
    tokens: int = 0  # the sequence the model sees (ViT: its patches + CLS, whatever seq_len)
    protocols: str = "beaver"  # the protocol family costed (MPCConfig.protocols)

    def to_json(self, scope_depth: int | None = None, networks: dict | None = None) -> dict:
        parts = {"prefill": self.prefill, "per_token": self.step, "total": self.total}
        out: dict[str, Any] = {"model": self.name, "kind": self.kind, "seq_len": self.seq_len,
                               "tokens": self.tokens, "new_tokens": self.new_tokens,
                               "decoding_steps": self.steps,
                               "policy": self.policy, "protocols": self.protocols,
                               "parameters": self.params,
                               "wall_time": dict(self.times)}
        for key, rep in parts.items():
            if rep is None:
                continue
            j = rep.to_json(scope_depth) if key == "total" else {"totals": rep.totals()}
            if networks:
                j["estimate"] = {n: rep.estimate(net) for n, net in networks.items()}
            out[key] = j
        return out


def _once_setup(step: Report, steps: int) -> list[Report]:
    """`steps` runs of one decoding program: its setup once, its per-run phases every time."""
    first = step
    rest = Report([e for e in step.entries if e.phase != "setup"], static=True)
    return [first] + [rest] * (steps - 1)


def model_cost(spec, seq_len: int, new_tokens: int = 1, *, policy="mpcformer",
               config: MPCConfig = MPCConfig(), protocols: str | None = None) -> ModelCost:
    """The static cost of the model `spec` names (preset, config.json or checkpoint folder).

    Encoders (BERT): the sentence embedding `pcformer run` computes, tokens and mask from the
    client. ViT: the class logits of the client's image. Decoders (GPT-2, LLaMA): a prompt of `seq_len` tokens with a KV cache of seq_len + new_tokens
    positions yields the first token; each further token is one decoding step over that cache
    (the cache has a fixed length, so every step costs the same: this is what `pcformer run`
    executes, not an approximation).
    """
    from . import presets
    config = _with_protocols(config, protocols)
    if seq_len < 1 or new_tokens < 1:
        raise presets.CostError("seq_len and new_tokens must be at least 1")
    t0 = time.perf_counter()
    model = presets.abstract_model(spec)
    times = {"shapes_s": time.perf_counter() - t0}
    progs = presets.programs(model, seq_len, new_tokens, config)
    prefill = cost(progs.prefill.fn, *progs.prefill.args, owners=progs.prefill.owners,
                   policy=policy, config=config, reveal=progs.prefill.reveal, times=times)
    step, steps = None, new_tokens - 1
    if progs.step is not None and steps:
        step = cost(progs.step.fn, *progs.step.args, owners=progs.step.owners, policy=policy,
                    config=config, reveal=progs.step.reveal, times=times)
    total = sequential([prefill] + (_once_setup(step, steps) if step is not None else []))
    params = sum(int(x.size) for x in jax.tree_util.tree_leaves(model.params))
    name = policy if isinstance(policy, str) else getattr(policy, "name", "custom")
    tokens = (model.config.num_patches + 1) if model.kind == "vit" else seq_len
    return ModelCost(model.name, model.kind, seq_len, new_tokens, name, prefill, step, steps,
                     total, params, times, tokens, config.protocols)


def shape_of(x) -> jax.ShapeDtypeStruct:
    """A ShapeDtypeStruct for an array-like (a convenience for building cost arguments)."""
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
