"""The persistent compile cache: where it goes, how it turns off, and that a second process hits it."""
import os
import pytest
import subprocess
import sys

from pcformer import compile_cache


def test_default_folder_follows_the_environment(tmp_path):
    assert compile_cache.default_folder({"PCFORMER_COMPILE_CACHE": "0"}) is None
    assert compile_cache.default_folder({"PCFORMER_COMPILE_CACHE": "off"}) is None
    assert compile_cache.default_folder({"PCFORMER_COMPILE_CACHE": str(tmp_path)}) == tmp_path
    xdg = compile_cache.default_folder({"XDG_CACHE_HOME": str(tmp_path)})
    assert xdg == tmp_path / "pcformer" / "jax"
    home = compile_cache.default_folder({})
    assert home.parts[-3:] == (".cache", "pcformer", "jax")


def test_unwritable_folder_leaves_the_cache_off_with_one_note(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a folder below a file cannot be made, even by root
    notes = []
    assert compile_cache.enable(blocker / "jax", note=notes.append) is None
    assert len(notes) == 1 and "compile cache off" in notes[0]


SCRIPT = """
import jax, jax.numpy as jnp
import pcformer
from pcformer import compile_cache
jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) * 3 + 1)(jnp.ones(7)))
c = compile_cache.counts()
print(compile_cache.folder_in_use() is not None, c["hits"], c["misses"])
"""


def run(env):
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    on, hits, misses = out.stdout.split()
    return on == "True", int(hits), int(misses)


@pytest.mark.slow
def test_second_process_hits_the_cache(tmp_path):
    env = {**os.environ, "PCFORMER_COMPILE_CACHE": str(tmp_path / "cache")}
    on, hits, misses = run(env)
    assert on and hits == 0 and misses > 0
    assert any((tmp_path / "cache").iterdir())
    on, hits, misses = run(env)
    assert on and hits > 0 and misses == 0


def test_read_only_home_runs_without_cache(tmp_path):
    home = tmp_path / "home"
    home.write_text("")  # HOME is a file: ~/.cache cannot be created
    env = {k: v for k, v in os.environ.items() if k not in ("PCFORMER_COMPILE_CACHE", "XDG_CACHE_HOME")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**env, "HOME": str(home)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "False"
    assert out.stderr.count("compile cache off") == 1
