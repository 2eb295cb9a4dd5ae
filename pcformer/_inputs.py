"""Input checks of `Program.run` and the list of revealed values (docs/security.md).

Why refuse before simulating: a NaN or inf has no fixed-point encoding (it became 0.0 or
-6.1e-05 with no error) and a value beyond the safe bound 2^(l-2-f) wraps the ring; either gives
silently wrong results after the whole simulation has run.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from pcformer.runtime import ring
from pcformer.runtime.shares import AShare


@dataclasses.dataclass(frozen=True)
class Secret:
    """A value that stays secret-shared between runs (e.g. a KV cache between decoding steps).

    `share` holds both parties' shares ([2, ...] in Z_2^l) at fixed-point `scale`. A program
    compiled with `reveal=False` for an output returns it as a Secret; pass it back where the
    owners say "secret". Neither party can read it alone; `peek()` reconstructs it, a
    SIMULATOR-ONLY oracle for tests and debugging (a real party could not).
    """

    share: AShare
    scale: int
    ring_bits: int = 64

    @property
    def shape(self):
        return tuple(self.share.data.shape[1:])

    def peek(self):
        with ring.x64():
            return ring.decode(self.share.data[0] + self.share.data[1], self.scale, self.ring_bits)


PARTY_NAMES = {0: "server (party 0)", 1: "client (party 1)", None: "both parties"}


def arg_name(path) -> str:
    """`args[0]['params']['dense']['kernel']`: the argument's pytree path in `run(*args)`."""
    return "args" + jax.tree_util.keystr(tuple(path))


def _key_text(k) -> str:
    for attr in ("key", "name", "idx"):   # DictKey, GetAttrKey, SequenceKey / FlattenedIndexKey
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _param_names(fn, n: int) -> list[str]:
    """The positional parameter names of `fn` (arg0, arg1, ... where it has none)."""
    import inspect
    try:
        ps = [p.name for p in inspect.signature(fn).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        ps = []
    return [ps[i] if i < len(ps) else f"arg{i}" for i in range(n)]


def arg_names(fn, args: tuple, is_leaf=None) -> tuple[str, ...]:
    """One readable name per flattened argument leaf, for the IR printer: the Flax parameter
    path of a weight (`params/encoder/layer_0/attention/query/kernel`), the parameter's name
    for an array argument (`input_ids`); the parameter's name goes first where the path alone
    would be a bare index or would repeat another argument's."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tuple(args), is_leaf=is_leaf)
    params = _param_names(fn, len(args))
    inner = [[_key_text(k) for k in path[1:]] for path, _ in leaves]
    heads = [params[path[0].idx] for path, _ in leaves]
    names = [h if not keys else "/".join(keys) if hasattr(path[1], "key") else
             "/".join([h, *keys]) for h, keys, (path, _) in zip(heads, inner, leaves)]
    if len(set(names)) != len(names):
        names = ["/".join([h, *keys]) for h, keys in zip(heads, inner)]
    return tuple(names)


def _check_leaf(name: str, x, config) -> None:
    a = np.asarray(x)
    if a.dtype == bool or a.size == 0:
        return
    floating = np.issubdtype(a.dtype, np.floating)
    if floating:
        bad = ~np.isfinite(a)
        if bad.any():
            kinds = sorted({"NaN" if np.isnan(v) else "inf" for v in a[bad].ravel()[:64]})
            raise ValueError(f"{name}: {int(bad.sum())} of {a.size} values are "
                             f"{'/'.join(kinds)}; a secure computation needs finite inputs")
    if not (floating or np.issubdtype(a.dtype, np.integer)):
        return
    scale = config.frac_bits if floating else 0
    bound = ring.safe_bound(scale, config.ring_bits)
    m = float(np.max(np.abs(a.astype(np.float64))))
    if m >= bound:
        raise ValueError(f"{name}: |x| reaches {m:g}, beyond the encodable range |x| < {bound:g} "
                         f"(ring_bits={config.ring_bits}, frac_bits={scale}); scale the input "
                         f"down or use a larger ring")


def check_inputs(leaves, config, checked: list) -> list:
    """Check every (path, leaf) of the run's arguments; returns the leaves now known good.

    `checked`: the leaves of the previous call. A jax array is immutable, so the very same object
    needs no second scan (a model's weights are checked once, not every run)."""
    seen = {id(x): x for x in checked if isinstance(x, jax.Array)}
    for path, x in leaves:
        if isinstance(x, Secret) or seen.get(id(x)) is x:
            continue
        _check_leaf(arg_name(path), x, config)
    return [x for _, x in leaves]


def revealed(prog) -> list[dict]:
    """Every value the program opens in plaintext, to whom, and where (the IR's reveal ops).

    Nothing else is ever opened unmasked: the other messages are one-time-padded openings
    (x - a, W - B, x + r) whose masks are fresh per run (per deployment for the server's weights).
    """
    out = []
    for op in prog.ops:
        if op.name == "reveal":
            v = op.operands[0]
            out.append({"value": f"%{op.results[0].id}", "shape": list(v.shape),
                        "to": PARTY_NAMES.get(op.attrs.get("to"), str(op.attrs.get("to"))),
                        "where": op.where, "scope": op.scope})
    return out
