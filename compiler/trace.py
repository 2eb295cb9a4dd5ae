"""Stage 1: trace a JAX function (a Flax `apply` included) into one flat jaxpr.

`trace(fn, *example_args)` runs `jax.make_jaxpr` on the flattened pytree function, then inlines
every plain call (`jit`/`pjit`, `closed_call`, `core_call`, `custom_jvp_call`, `custom_vjp_call`,
`remat`/`checkpoint`) recursively, so later passes see one list of primitive equations. Control
flow (`cond`, `while`, `scan`) is kept as is: the lowering decides what to do with it.

Inlining re-binds each inner equation inside `compat.user_context(traceback, outer + inner name
stack)`, so every equation keeps its source line and its module path (Flax linen puts the module
path in the name stack, e.g. `BertModel/encoder/layer_0/attention/self/query`).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Sequence

import jax


from . import compat


@dataclasses.dataclass(frozen=True)
class Traced:
    """A traced, inlined program: a closed jaxpr plus the pytree structure of its inputs/outputs."""
    closed_jaxpr: Any
    in_tree: Any
    out_tree: Any
    in_avals: tuple
    out_avals: tuple
    root: str | None = None  # the root Flax module's class name, dropped from scopes

    @property
    def eqns(self) -> list:
        return list(self.closed_jaxpr.jaxpr.eqns)

    def __call__(self, *args):
        """Evaluate the jaxpr on arguments with the original input pytree structure."""
        flat, tree = jax.tree_util.tree_flatten(args)
        if tree != self.in_tree:
            raise TypeError(f"argument structure {tree} does not match the traced {self.in_tree}")
        out = jax.core.eval_jaxpr(self.closed_jaxpr.jaxpr, self.closed_jaxpr.consts, *flat)
        return jax.tree_util.tree_unflatten(self.out_tree, out)

    def __str__(self) -> str:
        return str(self.closed_jaxpr)


def abstract(x) -> jax.ShapeDtypeStruct:
    """A ShapeDtypeStruct for an array, a tracer, a Python scalar or a ShapeDtypeStruct."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    return compat.shape_dtype_of(jax.typeof(x))


def _root_name(fn: Callable) -> str | None:
    """The class name of the Flax module whose bound `apply` (or `__call__`) `fn` is, if any."""
    owner = getattr(fn, "__self__", None)
    if owner is None:
        inner = getattr(fn, "func", None)  # functools.partial(model.apply, ...)
        owner = getattr(inner, "__self__", None)
    try:
        import flax.linen as nn
    except ImportError:  # pragma: no cover - flax is a dependency
        return None
    return type(owner).__name__ if isinstance(owner, nn.Module) else None


def eval_inlined(jaxpr, consts: Sequence, args: Sequence, prefix=None, call_tb=None) -> list:
    """Evaluate `jaxpr`, inlining call primitives, keeping sources and (prefixed) name stacks.

    call_tb: the traceback of the call being inlined. The body of a library function jitted on
    its own (`jnp.fft.fft`, `jnp.linalg.inv`) was traced once, with no frame of the user's code;
    its equations take the call's traceback instead, so errors point at the user's line."""
    prefix = compat.empty_name_stack() if prefix is None else prefix

    def step(_, eqn, read):
        invals = [read(v) for v in eqn.invars]
        stack = compat.join_name_stacks(prefix, compat.name_stack_of(eqn))
        tb = compat.traceback_of(eqn)
        if call_tb is not None and not compat.has_user_frame(tb):
            tb = call_tb
        if eqn.primitive.name in compat.CALL_PRIMITIVES:
            sub, sub_consts = compat.sub_jaxpr(eqn)
            return eval_inlined(sub, sub_consts, invals, stack,
                                tb if compat.has_user_frame(tb) else call_tb)
        with compat.user_context(tb, stack):
            return compat.bind_folding(eqn, invals)

    return compat.walk(jaxpr, consts, args, step)


def trace(fn: Callable, *example_args) -> Traced:
    """Trace `fn(*example_args)` (pytrees allowed) into an inlined `Traced` program.

    Example arguments may be arrays, tracers or `jax.ShapeDtypeStruct`s; only shapes and dtypes
    are used.
    """
    flat, in_tree = jax.tree_util.tree_flatten(args_tuple := tuple(example_args))
    del args_tuple
    specs = [abstract(x) for x in flat]
    out_tree_box: list = []

    def flat_fn(*flat_args):
        out = fn(*jax.tree_util.tree_unflatten(in_tree, list(flat_args)))
        out_flat, out_tree = jax.tree_util.tree_flatten(out)
        out_tree_box.append(out_tree)
        return out_flat

    raw = jax.make_jaxpr(flat_fn)(*specs)
    closed = jax.make_jaxpr(
        lambda *a: eval_inlined(raw.jaxpr, raw.consts, a))(*specs)
    closed = compat.dce(closed)
    return Traced(closed_jaxpr=closed, in_tree=in_tree, out_tree=out_tree_box[0],
                  in_avals=tuple(closed.in_avals), out_avals=tuple(closed.out_avals),
                  root=_root_name(fn))


def flat_fun(traced: Traced) -> Callable:
    """The traced program as a function of its flat inputs returning its flat outputs."""
    def run(*flat_args):
        return jax.core.eval_jaxpr(traced.closed_jaxpr.jaxpr, traced.closed_jaxpr.consts,
                                   *flat_args)
    return run


# ---------------------------------------------------------------------------------------------
# Scopes and source locations.

_WRAPPER = re.compile(r"^[A-Za-z_][\w.]*\((.*)\)$")
_AUTO_NAMED = re.compile(r"_\d+$")


def _unwrap(part: str) -> str:
    """`transpose(jvp(query))` -> `query`: drop transform wrappers around one path component."""
    while True:
        m = _WRAPPER.match(part)
        if m is None:
            return part
        part = m.group(1)


def clean_scope(name_stack: str, root: str | None = None) -> str:
    """The module path of a printed name stack.

    Rule: split on `/`, strip transform wrappers (`jvp(...)`, `transpose(...)`, `vmap(...)`...)
    from each component, drop empty components; then drop the first component if it is the root
    module: equal to `root` when given, otherwise when it looks like a Flax class name (starts with
    an upper-case letter and has no `_<n>` auto-numbering suffix, which only submodules get).
    So `BertModel/encoder/layer_0/attention/self/query` reads `encoder/layer_0/attention/self/query`.
    """
    parts = [p for p in (_unwrap(p) for p in str(name_stack).split("/")) if p]
    if parts:
        first = parts[0]
        is_root = (first == root) if root is not None else (
            first[:1].isupper() and _AUTO_NAMED.search(first) is None)
        if is_root:
            parts = parts[1:]
    return "/".join(parts)


def scope_of(eqn, root: str | None = None) -> str:
    """The cleaned module path of an equation (see `clean_scope` for the rule)."""
    return clean_scope(str(compat.name_stack_of(eqn)), root)


def where(eqn, root: str | None = None) -> str:
    """`file.py:LINE (scope)` of the user's source line that produced `eqn`, for error messages."""
    frame = compat.user_frame(eqn)
    loc = f"{os.path.basename(frame[0])}:{frame[1]}" if frame else "<unknown>"
    scope = scope_of(eqn, root)
    return f"{loc} ({scope or '<top>'})"


def describe(eqn, root: str | None = None) -> str:
    """One line naming an equation for error messages: primitive, shapes, location."""
    shapes = ", ".join(str(getattr(v, "aval", v)) for v in eqn.invars)
    return f"{eqn.primitive.name}({shapes}) at {where(eqn, root)}"


__all__ = ["Traced", "trace", "eval_inlined", "flat_fun", "scope_of", "where", "clean_scope",
           "describe", "abstract"]

