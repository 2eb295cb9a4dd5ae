"""One all-MiniLM-L6-v2-shaped encoder layer in SecretFlow SPU's 2-party SEMI2K simulator.

    /tmp/spu-venv/bin/python benchmarks/spu_peer/bert_layer_spu.py [--ops exact,mpcformer]

The side-by-side reference for benchmarks/bert_layers.py. Runs in its OWN virtual environment
(spu==0.9.5, see requirements.txt): it imports nothing from pcformer and is not a test.

Layer: hidden 384, 12 heads, MLP 1536, sequence 128, batch 1, random weights, post-LN BERT
(QKV -> softmax attention -> dense + residual + LayerNorm -> dense -> GeLU -> dense + residual
+ LayerNorm), in plain jax.numpy. Operator sets:
- exact: erf GeLU (jax.nn.gelu approximate=False), jax.nn.softmax, LayerNorm;
- mpcformer: Quad GeLU 0.125x^2 + 0.25x + 0.5, 2Quad softmax (x + c)^2 / sum (x + c)^2, c = 5.
Runtime: SEMI2K, FM64, 16 fraction bits, trusted-first-party beaver (the default), all inputs
secret-shared by the simulator. Communication comes from SPU's own profile: with
enable_pphlo_profile on, rank 0 logs "Link details: total send bytes ..., send actions ..."
at the end of a run; each operator set runs in a child process whose output is parsed.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import spu.libspu as libspu
import spu.utils.simulation as spsim

H, HEADS, FF, SEQ = 384, 12, 1536, 128
EPS = 1e-12


def layer_norm(x, g, b):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * g + b


def quad_gelu(x):
    return 0.125 * x * x + 0.25 * x + 0.5


def two_quad_softmax(s, c=5.0):
    e = (s + c) ** 2
    return e / jnp.sum(e, axis=-1, keepdims=True)


def make_layer(ops: str):
    gelu = (lambda x: jax.nn.gelu(x, approximate=False)) if ops == "exact" else quad_gelu
    softmax = (lambda s: jax.nn.softmax(s, axis=-1)) if ops == "exact" else two_quad_softmax

    def layer(x, wq, bq, wk, bk, wv, bv, wo, bo, g1, b1, wi, bi, wf, bf, g2, b2):
        s, d = x.shape[0], H // HEADS
        heads = lambda t: t.reshape(s, HEADS, d).transpose(1, 0, 2)
        q, k, v = heads(x @ wq + bq), heads(x @ wk + bk), heads(x @ wv + bv)
        p = softmax(jnp.einsum("hqd,hkd->hqk", q, k) / np.sqrt(d))
        ctx = jnp.einsum("hqk,hkd->hqd", p, v).transpose(1, 0, 2).reshape(s, H)
        a = layer_norm(ctx @ wo + bo + x, g1, b1)
        h = gelu(a @ wi + bi)
        return layer_norm(h @ wf + bf + a, g2, b2)

    return layer


def random_args(seed=0):
    r = np.random.default_rng(seed)
    w = lambda *s: (r.standard_normal(s) * 0.02).astype(np.float32)
    z = lambda n: np.zeros(n, np.float32)
    o = lambda n: np.ones(n, np.float32)
    x = r.standard_normal((SEQ, H)).astype(np.float32)
    return (x, w(H, H), z(H), w(H, H), z(H), w(H, H), z(H), w(H, H), z(H), o(H), z(H),
            w(H, FF), z(FF), w(FF, H), z(H), o(H), z(H))


LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+)")


def parse_link(log: str) -> dict:
    """Rank 0's link totals from SPU's profile log ({} when the log has none)."""
    m = LINK.findall(log)
    if not m:
        return {}
    send, recv, actions = (int(v) for v in m[-1])
    return {"send_bytes": send, "recv_bytes": recv, "send_actions": actions}


def run_child(ops: str) -> dict:
    """Run one operator set in this process; SPU logs its link totals to stderr."""
    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64,
                               fxp_fraction_bits=16)
    cfg.enable_pphlo_profile = True   # rank 0 logs its link totals at the end of a run
    sim = spsim.Simulator(2, cfg)
    fn = spsim.sim_jax(sim, make_layer(ops))
    inputs = random_args()
    t0 = time.perf_counter()
    out = np.asarray(fn(*inputs))
    wall = time.perf_counter() - t0
    ref = np.asarray(jax.jit(make_layer(ops))(*inputs))
    return {"ops": ops, "wall_s": round(wall, 2),
            "max_abs_err_vs_float": float(np.max(np.abs(out - ref)))}


def run(ops: str) -> dict:
    """One operator set in a child process: SPU's C++ logger flushes lazily, so the parent reads
    the child's whole output after it exits and parses the link totals from it."""
    proc = subprocess.run([sys.executable, __file__, "--child", ops], capture_output=True,
                          text=True, check=True)
    log = proc.stdout + "\n" + proc.stderr        # SPU's logger writes to stdout
    res = json.loads([ln for ln in log.splitlines() if ln.startswith('{"ops"')][-1])
    link = parse_link(log)
    if not link:
        raise RuntimeError("no 'Link details' in SPU's log:\n" + log[-2000:])
    return {**res, **link, "send_mb_per_party": round(link["send_bytes"] / 1e6, 1)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", default="exact,mpcformer")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child)))
        return
    res = []
    for ops in args.ops.split(","):
        r = run(ops)
        print(f"{ops}: wall {r['wall_s']} s, sent {r['send_mb_per_party']} MB/party "
              f"(rank 0), {r['send_actions']} send actions, max |err| "
              f"{r['max_abs_err_vs_float']:.3g}")
        res.append(r)
    print(json.dumps({"bench": "spu_bert_layer", "spu": "0.9.5", "protocol": "SEMI2K",
                      "field": "FM64", "fxp": 16, "results": res}))


if __name__ == "__main__":
    main()
