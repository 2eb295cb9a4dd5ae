"""JAX's persistent compilation cache, on by default, in a per-user folder.

Why. The op-cached executor (compiler/opcache.py) compiles one small XLA program per protocol op
signature: a MiniLM run compiles a few hundred of them, ~20 s cold on CPU. Kept on disk, a
second process with the same model and shapes loads them instead of compiling them.

Where: $PCFORMER_COMPILE_CACHE if it names a folder, else $XDG_CACHE_HOME/pcformer/jax, else
~/.cache/pcformer/jax. PCFORMER_COMPILE_CACHE=0 (or `pcformer --nocompile_cache`) turns it off.
Thresholds are zero so that every program is kept, however small or quick to compile (JAX's
default keeps only programs that took over a second to compile: none of ours). `enable()` runs
at `import pcformer`, before anything compiles; a folder that cannot be written (read-only HOME)
leaves the cache off with a one-line note on stderr, never an error. It does not import JAX
(`pcformer --help` stays fast): when JAX is not imported yet it sets the JAX_* environment
variables JAX reads at import (a user's own settings win), else it updates `jax.config`.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ENV = "PCFORMER_COMPILE_CACHE"
_OFF = {"0", "false", "no", "off"}

# Hits and misses seen by this process (JAX reports them as monitoring events).
_COUNTS = {"hits": 0, "misses": 0}
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_MISS_EVENT = "/jax/compilation_cache/cache_misses"
_state: dict = {"dir": None, "listening": False, "env": {}}
_JAX_ENV = {"JAX_COMPILATION_CACHE_DIR": None,   # the folder, filled in by enable()
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def default_folder(environ=os.environ) -> Path | None:
    """The cache folder the environment asks for, or None when the cache is turned off."""
    value = environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value and value != "1":
        return Path(value).expanduser()
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pcformer" / "jax"


def _writable(folder: Path) -> str | None:
    """None if `folder` can hold cache files, else why not (one line)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def _on_event(event: str, **_kw) -> None:
    if event == _HIT_EVENT:
        _COUNTS["hits"] += 1
    elif event == _MISS_EVENT:
        _COUNTS["misses"] += 1


def enable(folder: Path | None = None, note=None) -> Path | None:
    """Point JAX's persistent cache at `folder` (default: `default_folder()`); returns the
    folder in use, or None if the cache is off."""
    folder = default_folder() if folder is None else Path(folder)
    if folder is None:
        return None
    why = _writable(folder)
    if why is not None:
        (note or _stderr)(f"pcformer: compile cache off ({folder} is not writable: {why})")
        return None
    if "jax" in sys.modules:
        import jax
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
        listen()
    else:
        for name, value in {**_JAX_ENV, "JAX_COMPILATION_CACHE_DIR": str(folder)}.items():
            if name not in os.environ:
                os.environ[name] = _state["env"][name] = value
    _state["dir"] = folder
    _tell_op_templates(folder)
    return folder


def _tell_op_templates(folder: Path | None) -> None:
    """The op-template store (compiler/opcache_store.py) keeps its files in the same folder."""
    from pcformer.compiler import opcache_store   # light: no JAX at import
    opcache_store.use_folder(folder)


def listen() -> None:
    """Count this process's persistent-cache hits and misses (JAX's monitoring events); called
    by the modules that compile, once JAX is imported."""
    if not _state["listening"]:
        import jax
        jax.monitoring.register_event_listener(_on_event)
        _state["listening"] = True


def disable() -> None:
    """Turn the persistent cache off for this process (before the first compile)."""
    for name in _state["env"]:
        os.environ.pop(name, None)
    _state["env"] = {}
    if "jax" in sys.modules:
        import jax
        jax.config.update("jax_compilation_cache_dir", None)
    _state["dir"] = None
    _tell_op_templates(None)


def folder_in_use() -> Path | None:
    return _state["dir"]


def counts() -> dict:
    """{"hits": n, "misses": m}: persistent-cache lookups of this process so far."""
    return dict(_COUNTS)


def _home_short(folder: Path) -> str:
    """The folder with the home directory written as ~ (output that can be shared as is)."""
    home = Path(os.path.expanduser("~"))
    try:
        return "~/" + str(Path(folder).relative_to(home))
    except ValueError:
        return str(folder)


def describe() -> str:
    """One line for a run's report: where the cache is and what it gave."""
    if _state["dir"] is None:
        return "compile cache off"
    c = counts()
    line = f"compile cache {_home_short(_state['dir'])}: {c['hits']} hits, {c['misses']} misses (compiled now)"
    store = sys.modules.get("pcformer.compiler.opcache_store")
    if store is not None:   # the op executor's own templates (compiler/opcache_store.py)
        line += f"; op templates: {store.STATS['loaded']} loaded, {store.STATS['stored']} written"
    return line


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
