"""Cold vs warm start of a private MiniLM run: the persistent compile cache at work.

    python benchmarks/cold_warm.py [--seq_len 32] [--policy mpcformer]

Runs the same `pcformer run`-style job (pcformer.inference.private_embedding) in two fresh
processes sharing one new, empty cache folder: the first fills it (cold), the second reads it
(warm). Each child prints, from its own start: seconds until the model is loaded, until the
simulation starts (after import, load, trace/rewrite/lower), the first run's XLA-compile and
simulate split, its end, and the cache's hits and misses. Last line: JSON of both.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, sys, time
t0 = float(sys.argv[1])
import pcformer
from pcformer import compile_cache, inference, models
marks = {"import_s": time.time() - t0}
model = models.load("minilm")
marks["loaded_s"] = time.time() - t0
def step(label):
    if label.startswith("simulate"):
        marks["simulate_starts_s"] = time.time() - t0
job = inference.private_embedding(model, "A private sentence.", policy=sys.argv[3],
                                  seq_len=int(sys.argv[2]), step=step)
marks["done_s"] = time.time() - t0
marks["frontend_s"] = job.times.get("frontend_s", job.times.get("compile_s"))
marks.update({k: job.times[k] for k in ("xla_compile_s", "simulate_s")})
marks.update(compile_cache.counts())
from pcformer.compiler import opcache, opcache_store
marks.update(templates_loaded=opcache_store.STATS["loaded"], lowered=opcache.STATS["lowered"])
print(json.dumps(marks))
"""


def child(seq_len: int, policy: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, repr(time.time()), str(seq_len), policy],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"the child run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq_len", type=int, default=32)
    ap.add_argument("--policy", default="mpcformer")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pcformer-cache-") as cache:
        env = {**os.environ, "PCFORMER_COMPILE_CACHE": cache}
        res = {"cold": child(a.seq_len, a.policy, env), "warm": child(a.seq_len, a.policy, env)}
    for name, r in res.items():
        print(f"{name}: simulation starts at {r['simulate_starts_s']:.2f} s (import {r['import_s']:.2f} s, "
              f"loaded {r['loaded_s']:.2f} s, front end {r['frontend_s']:.2f} s); first run: XLA compile "
              f"{r['xla_compile_s']:.2f} s, simulate {r['simulate_s']:.2f} s; done at {r['done_s']:.2f} s; "
              f"cache {r['hits']} hits, {r['misses']} misses; op templates loaded {r['templates_loaded']}, "
              f"lowered {r['lowered']}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
