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
at the end of a run; this script captures that log (C++ stderr) and parses it.
The last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
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


LINK = re.compile(r"Link details: total send bytes (\d+), recv bytes (\d+), "
                  r"send actions \(lazy\) (\d+), send actions \(sync\) (\d+)|"
                  r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+)")


def parse_link(log: str) -> dict:
    m = LINK.findall(log)
    if not m:
        return {}
    g = [int(v) for v in m[-1] if v != ""]
    out = {"send_bytes": g[0], "recv_bytes": g[1]}
    out["send_actions"] = sum(g[2:])
    return out


def run(ops: str, args) -> dict:
    cfg = libspu.RuntimeConfig(protocol=libspu.ProtocolKind.SEMI2K, field=libspu.FieldType.FM64,
                               fxp_fraction_bits=16, enable_pphlo_profile=True)
    sim = spsim.Simulator(2, cfg)
    fn = spsim.sim_jax(sim, make_layer(ops))
    inputs = random_args()
    # SPU's C++ logger writes to fd 2: send it to a file for the run, then parse it.
    log = tempfile.TemporaryFile(mode="w+b")
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        t0 = time.perf_counter()
        out = np.asarray(fn(*inputs))
        wall = time.perf_counter() - t0
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    log.seek(0)
    text = log.read().decode(errors="replace")
    ref = np.asarray(jax.jit(make_layer(ops))(*inputs))
    link = parse_link(text)
    if not link:
        print(text[-3000:])
    return {"ops": ops, "wall_s": round(wall, 2), **link,
            "send_mb_per_party": round(link.get("send_bytes", 0) / 1e6, 1),
            "max_abs_err_vs_float": float(np.max(np.abs(out - ref)))}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ops", default="exact,mpcformer")
    args = p.parse_args()
    res = []
    for ops in args.ops.split(","):
        r = run(ops, args)
        print(f"{ops}: wall {r['wall_s']} s, sent {r['send_mb_per_party']} MB/party "
              f"(rank 0), {r.get('send_actions')} send actions, max |err| "
              f"{r['max_abs_err_vs_float']:.3g}")
        res.append(r)
    print(json.dumps({"bench": "spu_bert_layer", "spu": "0.9.5", "protocol": "SEMI2K",
                      "field": "FM64", "fxp": 16, "results": res}))


if __name__ == "__main__":
    main()
