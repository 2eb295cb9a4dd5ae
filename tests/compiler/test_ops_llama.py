"""A LLaMA-style block written as a plain JAX function (RMSNorm, rotary position embedding with
public sin/cos, SwiGLU with SiLU, grouped-query attention) compiles and runs privately under
`exact` and `mpcformer` (issue 16): the client's activations, the server's weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from ops_util import ledger_key

T, D, H, KV, HD, FF = 4, 16, 4, 2, 4, 24
rng = np.random.default_rng(11)
f32 = lambda *s: (rng.normal(size=s) / np.sqrt(s[0])).astype(np.float32)  # noqa: E731
W = {"wq": f32(D, H * HD), "wk": f32(D, KV * HD), "wv": f32(D, KV * HD), "wo": f32(H * HD, D),
     "w1": f32(D, FF), "w3": f32(D, FF), "w2": f32(FF, D),
     "g1": np.ones(D, np.float32), "g2": np.ones(D, np.float32)}
X = rng.normal(size=(T, D)).astype(np.float32)


def rotary_tables(t, hd):
    inv = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
    ang = np.arange(t)[:, None] * inv[None]
    return np.sin(ang).astype(np.float32), np.cos(ang).astype(np.float32)


SIN, COS = rotary_tables(T, HD)


def rms_norm(x, g, eps=1e-5):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * g


def rope(x, sin, cos):           # x: [T, heads, hd]; sin/cos public: [T, hd/2]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    s, c = sin[:, None], cos[:, None]
    return jnp.stack([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1).reshape(x.shape)


def block(x, w, sin, cos):
    h = rms_norm(x, w["g1"])
    q = rope((h @ w["wq"]).reshape(T, H, HD), sin, cos)
    k = rope((h @ w["wk"]).reshape(T, KV, HD), sin, cos)
    v = (h @ w["wv"]).reshape(T, KV, HD)
    k, v = jnp.repeat(k, H // KV, axis=1), jnp.repeat(v, H // KV, axis=1)   # GQA
    s = jnp.einsum("qhd,khd->hqk", q, k) / np.sqrt(HD)
    mask = jnp.tril(jnp.ones((T, T), bool))
    p = jax.nn.softmax(jnp.where(mask, s, -1e9), axis=-1)
    a = jnp.einsum("hqk,khd->qhd", p, v).reshape(T, H * HD) @ w["wo"]
    x = x + a
    h = rms_norm(x, w["g2"])
    return x + (jax.nn.silu(h @ w["w1"]) * (h @ w["w3"])) @ w["w2"]


@pytest.mark.slow
@pytest.mark.parametrize("policy,tol", [("exact", 2e-2), ("mpcformer", None)])
def test_llama_block_runs_privately(policy, tol):
    prog = pcformer.compile(block, X, W, SIN, COS, owners=(1, 0, None, None), policy=policy)
    out, rep = prog.run(X, W, SIN, COS)
    out = np.asarray(out, np.float64)
    assert out.shape == (T, D) and np.all(np.isfinite(out))
    # the friendly (rewritten) program in float: what the MPC result approximates
    np.testing.assert_allclose(out, np.asarray(prog.plaintext(X, W, SIN, COS)), atol=2e-2)
    if tol is not None:   # exact: close to the original float block too
        np.testing.assert_allclose(out, np.asarray(block(X, W, SIN, COS)), atol=tol)
    assert ledger_key(prog.cost.entries) == ledger_key(rep.entries)
    assert "dot_general_private" in {op.name for op in prog.ir.ops}
