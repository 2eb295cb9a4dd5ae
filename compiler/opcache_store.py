"""The op-cached executor's templates on disk: a second process loads them instead of tracing.

Why. JAX's persistent cache (pcformer/compile_cache.py) keys its entries by the lowered module,
so a warm process still traces and lowers each protocol op in Python before it can look one up:
seconds for a MiniLM run. Here each template of compiler/opcache.py (the compiled executable,
the ledger entries its protocol wrote when traced, its output depth, which segment outputs are
shares, the audit layout) is kept whole, in `<compile cache folder>/opcache/`, and loaded
without tracing or lowering anything.

Never stale. The file name is a hash of the op's full signature (op, attributes, operand kinds,
MPCConfig) AND of everything else the program could depend on: JAX, jaxlib and pcformer
versions, the platform and device kind, the JAX flags and XLA_FLAGS that change lowering, and
a hash of the source of pcformer's compiler/ and runtime/ packages (any edit there invalidates
every template). The full key text is stored in the entry and compared on load, so even a hash
collision cannot pick a wrong program. Anything wrong with an entry (unreadable, truncated,
other format) is a miss: the op compiles as usual and its entry is written again.

What is kept: compiled code and static ledger shapes, never a key, mask or share: the run key,
op index and setup key are traced arguments of every op program (compiler/opcache.py).
Entries are pickles, like JAX's own serialized executables: the folder is the user's, as
trusted as their code (a folder that others can write is as dangerous as JAX's cache there).
Off exactly when the compile cache is off (PCFORMER_COMPILE_CACHE=0, `--nocompile_cache`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
import sys
import tempfile
from pathlib import Path

FORMAT = 2   # 2: ledger entries carry op_class
SUBFOLDER = "opcache"
# What this process did, for tests and reports: templates loaded from disk, written to it, and
# entries that could not be used (corrupt, other format, key mismatch).
STATS = {"loaded": 0, "stored": 0, "bad": 0}


_BASE: dict = {"dir": None}   # the compile cache's folder: pcformer/compile_cache.py sets it


def use_folder(base) -> None:
    """Where the compile cache is (None: off). pcformer/compile_cache.py calls this when it turns
    the cache on or off, so the compiler never reaches up into the package for it."""
    _BASE["dir"] = None if base is None else Path(base)


def folder() -> Path | None:
    """Where templates live, or None when the compile cache is off."""
    base = _BASE["dir"]
    return None if base is None else base / SUBFOLDER


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """sha256 over the compiler's and runtime's source files (names and bytes)."""
    import pcformer.compiler
    import pcformer.runtime
    h = hashlib.sha256()
    for pkg in (pcformer.compiler, pcformer.runtime):
        root = Path(pkg.__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def environment() -> str:
    """Everything besides the signature that a compiled op program depends on."""
    import jax
    import jaxlib
    import pcformer
    dev = jax.devices()[0]
    flags = {name: getattr(jax.config, name, None) for name in (
        "jax_default_prng_impl", "jax_threefry_partitionable", "jax_enable_x64",
        "jax_default_matmul_precision", "jax_numpy_rank_promotion", "jax_enable_checks")}
    return repr((FORMAT, jax.__version__, jaxlib.__version__, pcformer.__version__,
                 sys.version_info[:2], dev.platform, dev.device_kind, jax.device_count(),
                 sorted(flags.items()), os.environ.get("XLA_FLAGS", ""), _source_hash()))


def key_text(signature) -> str:
    """The full key of a template: its signature's repr (config included) and the environment.
    A signature whose repr carries a memory address (`at 0x...`) just never matches again."""
    return repr(signature) + "\n" + environment()


def _path(where: Path, text: str) -> Path:
    return where / (hashlib.sha256(text.encode()).hexdigest() + ".pkl")


def compile(lowered, options: dict | None = None):
    """Compile a lowered op program (with XLA `options`, if any). With the store on, JAX's
    persistent cache is bypassed for it (see compat.persistent_cache_bypassed): the template on
    disk takes that cache's place."""
    def run():
        return lowered.compile(compiler_options=options) if options else lowered.compile()
    if folder() is None:
        return run()
    from . import compat
    with compat.persistent_cache_bypassed():
        return run()


def load(signature) -> dict | None:
    """The stored template fields of `signature` (with "compiled" ready to call), or None."""
    where = folder()
    if where is None:
        return None
    text = key_text(signature)
    path = _path(where, text)
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:   # unreadable or truncated: a miss, overwritten by store()
        STATS["bad"] += 1
        return None
    try:
        if entry.pop("key") != text:
            raise ValueError("key mismatch")
        from . import compat
        entry["compiled"] = compat.load_executable(*entry.pop("executable"))
    except Exception:
        STATS["bad"] += 1
        return None
    STATS["loaded"] += 1
    return entry


def store(signature, compiled, key: str | None = None, **fields) -> None:
    """Write a template (atomically: a reader never sees half a file); errors are ignored.
    `key`: its `key_text`, found beforehand by a thread under the run's JAX flags (a compile
    thread's flags are JAX's defaults: `jax_enable_x64` is set per thread)."""
    where = folder()
    if where is None:
        return
    text = key or key_text(signature)
    try:
        from . import compat
        blob = pickle.dumps({"key": text, "executable": compat.save_executable(compiled),
                             **fields}, protocol=pickle.HIGHEST_PROTOCOL)
        where.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
        os.replace(tmp, _path(where, text))
    except Exception:   # a full disk or an executable that cannot be serialized: no template
        try:
            os.unlink(tmp)
        except Exception:
            pass
        return
    STATS["stored"] += 1
