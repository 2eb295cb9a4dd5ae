"""Op templates on disk (compiler/opcache_store.py): a second process traces and lowers nothing,
and computes what a fresh compile computes; a bad entry falls back; the opt-out turns it off."""
import json
import os
import subprocess
import sys

import jax
import jaxlib
import pytest

import numpy as np

import pcformer
from pcformer.compiler import opcache_store
from test_security_attacks import assert_fresh

SCRIPT = """
import json, sys, numpy as np, jax.numpy as jnp, pcformer
from pcformer.compiler import execute, opcache, opcache_store
x = jnp.asarray(np.linspace(-2, 2, 24, dtype=np.float32).reshape(3, 8))
w = jnp.asarray(np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8))
f = lambda x, w: jnp.maximum(x @ w, 0.0) * 0.5 + x
seed = None if sys.argv[1] == "fresh" else 0
prog = pcformer.compile(f, x, w, owners=(1, 0), policy=None, config=pcformer.MPCConfig(seed=seed))
prog._exe.audit = seed is None
out, rep = prog.run(x, w)
view = [np.asarray(a).ravel().tolist() for a in execute.received(prog._exe.audit_log, 0)]
print(json.dumps({"out": np.asarray(out).tolist(), "view": view,
                  "ledger": [repr(e) for e in rep.entries],
                  "traces": prog._exe.trace_count, **opcache.STATS, **opcache_store.STATS}))
"""


def run(cache, seed="seeded"):
    env = {**os.environ, "PCFORMER_COMPILE_CACHE": str(cache)}
    out = subprocess.run([sys.executable, "-c", SCRIPT, seed], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def same_results(a, b):
    return a["out"] == b["out"] and a["ledger"] == b["ledger"] and a["ledger"]


@pytest.mark.slow
def test_second_process_loads_templates_without_tracing(tmp_path):
    cold = run(tmp_path / "cache")
    assert cold["lowered"] > 0 and cold["stored"] == cold["lowered"] and cold["loaded"] == 0
    assert len(list((tmp_path / "cache" / "opcache").glob("*.pkl"))) == cold["stored"]
    warm = run(tmp_path / "cache")
    assert warm["lowered"] == 0 and warm["traces"] == 0 and warm["stored"] == 0
    assert warm["loaded"] == cold["stored"] and warm["bad"] == 0
    assert same_results(cold, warm)


@pytest.mark.slow
def test_loaded_templates_draw_fresh_masks(tmp_path):
    # keys are traced arguments: a template from disk holds no key, each run draws its own
    cold = run(tmp_path / "cache", "fresh")
    warm = run(tmp_path / "cache", "fresh")
    assert cold["stored"] > 0 and warm["loaded"] == cold["stored"] and warm["lowered"] == 0
    pairs = [(np.asarray(a, np.uint64), np.asarray(b, np.uint64))
             for a, b in zip(cold["view"], warm["view"])]
    wide = [(a, b) for a, b in pairs if max(a.max(), b.max()) > 1]   # one-bit openings repeat
    assert len(wide) >= len(pairs) - 2                                  # half the time anyway
    assert_fresh([a for a, _ in wide], [b for _, b in wide])


@pytest.mark.slow
def test_a_corrupt_entry_falls_back_to_compiling_and_is_rewritten(tmp_path):
    cold = run(tmp_path / "cache")
    entries = sorted((tmp_path / "cache" / "opcache").glob("*.pkl"))
    entries[0].write_bytes(b"not a template")
    entries[1].write_bytes(entries[1].read_bytes()[:100])          # truncated
    again = run(tmp_path / "cache")
    assert again["bad"] == 2 and again["lowered"] == 2 and again["stored"] == 2
    assert again["loaded"] == cold["stored"] - 2 and same_results(cold, again)
    healed = run(tmp_path / "cache")
    assert healed["bad"] == 0 and healed["lowered"] == 0 and same_results(cold, healed)


@pytest.mark.slow
def test_opt_out_writes_and_reads_no_template():
    off = run("0")
    assert off["lowered"] > 0 and off["loaded"] == 0 and off["stored"] == 0


def test_the_key_covers_config_versions_and_source():
    a = opcache_store.key_text((pcformer.MPCConfig(), "sig"))
    assert a == opcache_store.key_text((pcformer.MPCConfig(), "sig"))
    assert a != opcache_store.key_text((pcformer.MPCConfig(frac_bits=12), "sig"))
    assert a != opcache_store.key_text((pcformer.MPCConfig(), "other"))
    for part in (jax.__version__, jaxlib.__version__, pcformer.__version__,
                 opcache_store._source_hash(), jax.devices()[0].platform):
        assert part in a
