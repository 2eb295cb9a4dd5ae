"""Every private or `jax.extend` use of the compiler lives here (tested with jax 0.10.2).

Why one module: JAX's internals (jaxpr types, source-info and name-stack contexts) move between
releases. Keeping them behind a few short wrappers means a JAX upgrade touches this file only.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

import jax
from jax.extend import core as _xcore
from jax.extend import source_info_util as _siu
from jax._src import source_info_util as _siu_private  # user_frames: not re-exported

ClosedJaxpr = _xcore.ClosedJaxpr
Jaxpr = _xcore.Jaxpr
JaxprEqn = _xcore.JaxprEqn
Literal = _xcore.Literal
Var = _xcore.Var
DropVar = _xcore.DropVar
Primitive = _xcore.Primitive
NameStack = _siu.NameStack
SourceInfo = _siu.SourceInfo
new_jaxpr_eqn = _xcore.new_jaxpr_eqn

# Primitives whose sub-jaxpr is a plain function call: inlining them changes nothing but the
# jaxpr's shape. `pjit` was renamed `jit` in recent JAX; both are listed. The one list that
# trace, rewrite and lower share.
CALL_PRIMITIVES = frozenset({
    "jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
    "custom_vjp_call_jaxpr", "custom_lin", "remat", "remat2", "checkpoint",
})


def is_literal(x: Any) -> bool:
    return isinstance(x, Literal)


def is_var(x: Any) -> bool:
    return isinstance(x, Var) and not isinstance(x, DropVar)


def literal_value(x: Any):
    """The Python/numpy value of a jaxpr Literal."""
    return x.val


def sub_jaxpr(eqn) -> tuple[Jaxpr, list]:
    """(jaxpr, consts) of a call-like equation; `remat` carries an open Jaxpr, the others closed."""
    p = eqn.params
    sub = p.get("jaxpr", p.get("call_jaxpr", p.get("fun_jaxpr")))
    if sub is None:
        raise KeyError(f"{eqn.primitive.name}: no sub-jaxpr in params {sorted(p)}")
    if isinstance(sub, ClosedJaxpr):
        return sub.jaxpr, list(sub.consts)
    return sub, []


def walk(jaxpr, consts, args, step, literal=literal_value) -> list:
    """The one environment-passing loop over a jaxpr, shared by trace, rewrite and lower.

    Binds constvars to `consts` and invars to `args`, then calls `step(index, eqn, read)` for
    each equation in order; `read(atom)` gives an atom's current value (a Literal through
    `literal`). `step` returns the equation's output values, or None when it produces none
    here (the rewrite pass swallows the equations of a matched pattern). Returns the values
    of `jaxpr.outvars`.
    """
    env: dict = {}

    def read(atom):
        return literal(atom) if is_literal(atom) else env[atom]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for i, eqn in enumerate(jaxpr.eqns):
        outs = step(i, eqn, read)
        if outs is None:
            continue
        for v, o in zip(eqn.outvars, outs):
            if is_var(v):
                env[v] = o
    return [read(v) for v in jaxpr.outvars]


def name_stack_of(eqn) -> NameStack:
    return eqn.source_info.name_stack


def traceback_of(eqn):
    return eqn.source_info.traceback


def empty_name_stack() -> NameStack:
    return _siu.new_name_stack()


def join_name_stacks(outer: NameStack, inner: NameStack) -> NameStack:
    """The outer (call site) stack as a prefix of the inner equation's stack."""
    return outer + inner


def extend_name_stack(stack: NameStack, name: str) -> NameStack:
    return stack.extend(name)


@contextlib.contextmanager
def user_context(traceback, name_stack: NameStack) -> Iterator[None]:
    """Equations bound inside get this traceback and exactly this name stack."""
    with _siu.user_context(traceback, name_stack=name_stack):
        yield


def bind(eqn, invals: list, params: dict | None = None) -> list:
    """Bind an equation's primitive on new values; always returns a list of outputs."""
    params = eqn.params if params is None else params
    out = eqn.primitive.bind(*invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


_SKIP_PARTS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep,
               os.path.dirname(os.path.abspath(__file__)) + os.sep)


def has_user_frame(tb) -> bool:
    """Whether a traceback holds a frame of the user's own code (not JAX, Flax, stdlib or us)."""
    if tb is None:
        return False
    return any(not any(part in f.file_name for part in _SKIP_PARTS)
               for f in _siu_private.user_frames(tb))


def user_frame(eqn) -> tuple[str, int] | None:
    """(file, line) of the innermost frame of the user's code (not JAX, Flax, stdlib or us)."""
    tb = traceback_of(eqn)
    if tb is None:
        return None
    for frame in _siu_private.user_frames(tb):
        if not any(part in frame.file_name for part in _SKIP_PARTS):
            return frame.file_name, frame.start_line
    first = _siu_private.user_frame(tb)
    return (first.file_name, first.start_line) if first is not None else None


def shape_dtype_of(aval) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype, weak_type=getattr(aval, "weak_type", False))


def dce(closed) -> ClosedJaxpr:
    """Dead-code elimination keeping every input: unused equations (left behind by a rewrite)
    would otherwise still be lowered and paid for."""
    from jax._src.interpreters import partial_eval as pe
    jaxpr = closed.jaxpr
    n_consts, n_in = len(jaxpr.constvars), len(jaxpr.invars)
    new, used_consts, _ = pe.dce_jaxpr_consts(
        jaxpr, [True] * len(jaxpr.outvars), [False] * n_consts + [True] * n_in)
    consts = [c for c, u in zip(closed.consts, used_consts) if u]
    return ClosedJaxpr(new, consts)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def bind_folding(eqn, invals: list) -> list:
    """`bind`, but an equation whose inputs are all concrete and whose outputs are scalars is
    evaluated now (e.g. `1 / sqrt(head_dim)`), so a public constant does not reach later passes
    as a heavy primitive. Larger constant results are left in the jaxpr (no array blow-up)."""
    small = all(getattr(v.aval, "size", 2) <= 1 for v in eqn.outvars)
    if small and not eqn.effects and invals and all(_is_concrete(x) for x in invals):
        with jax.ensure_compile_time_eval():
            return bind(eqn, invals)
    return bind(eqn, invals)


def backends_initialized() -> bool:
    """Whether JAX has started a backend (and with it XLA's CPU thread pool) in this process."""
    from jax._src import xla_bridge  # private: the registry of started backends
    return bool(getattr(xla_bridge, "_backends", {}))


def save_executable(compiled) -> tuple:
    """(bytes, in_tree, out_tree) of a compiled jit program (jax.experimental, 0.10 API)."""
    from jax.experimental import serialize_executable
    return serialize_executable.serialize(compiled)


def load_executable(payload, in_tree, out_tree):
    """The callable program `save_executable` wrote, loaded without tracing or compiling."""
    from jax.experimental import serialize_executable
    return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)


_BYPASS = {"lock": threading.Lock(), "depth": 0, "saved": None}


@contextlib.contextmanager
def persistent_cache_bypassed() -> Iterator[None]:
    """Compile without JAX's persistent cache. Why: an executable that JAX loaded from its cache
    serializes (jax 0.10.2, CPU) into bytes that load but fail when called ("Function ... not
    found"), so a program meant for `save_executable` must be compiled from scratch.

    Safe across threads (compiler/opcache.py compiles in several): JAX's flags are switched
    when the first compile enters and restored when the last one leaves."""
    from jax._src import compilation_cache as _cc
    with _BYPASS["lock"]:
        if _BYPASS["depth"] == 0:
            _BYPASS["saved"] = (_cc._cache_checked, _cc._cache_used)
            _cc._cache_checked, _cc._cache_used = True, False
        _BYPASS["depth"] += 1
    try:
        yield
    finally:
        with _BYPASS["lock"]:
            _BYPASS["depth"] -= 1
            if _BYPASS["depth"] == 0:
                _cc._cache_checked, _cc._cache_used = _BYPASS["saved"]


def distributed_client():
    """The `jax.distributed` client of this process (its key-value store and barriers, with
    timeouts: what a two-process party run agrees on keys with); None before `initialize`."""
    from jax._src import distributed as _distributed
    return _distributed.global_state.client


# ------------------------------------------------------------------ defining a primitive
# compiler/lookup_table.py defines pcformer's one primitive of its own (a public table read at
# a secret position); its differentiation, batching and XLA lowering hooks live here.
from jax.interpreters import ad as _ad          # noqa: E402
from jax.interpreters import batching as _batching  # noqa: E402
from jax.interpreters import mlir as _mlir      # noqa: E402


def define_elementwise_primitive(name: str, impl, jvp_slope, trailing=None) -> Primitive:
    """A primitive y = impl(x, **params), elementwise on one float array: its abstract value is
    x's, vmap maps it elementwise, jit lowers impl, and its JVP is jvp_slope(x, **params) * t.

    trailing(**params) -> k, if given: each element maps to k values (k > 1: y has x's shape
    plus a trailing axis of k; k == 1: x's shape). The slope then has y's shape."""
    def width(params):
        return 1 if trailing is None else int(trailing(**params))

    def abstract(aval, **params):
        k = width(params)
        return aval if k == 1 else aval.update(shape=aval.shape + (k,))

    def jvp(t, x, **params):
        return jvp_slope(x, **params) * (t if width(params) == 1 else t[..., None])

    p = Primitive(name)
    p.def_impl(impl)
    p.def_abstract_eval(abstract)
    _mlir.register_lowering(p, _mlir.lower_fun(impl, multiple_results=False))
    _batching.primitive_batchers[p] = lambda args, dims, **params: (p.bind(args[0], **params),
                                                                    dims[0])
    _ad.defjvp(p, jvp)
    return p
