"""A ViT block written as a plain JAX function (patch-embedding convolution with the server's
kernel, CLS token, position embeddings, pre-LN attention, GeLU MLP) compiles and runs privately
under `exact` and `mpcformer` (issue 16): the client's image, the server's weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from ops_util import ledger_key

C, S, P, D, H, FF = 3, 8, 4, 16, 2, 32      # channels, image side, patch, hidden, heads, MLP
N = (S // P) ** 2 + 1                        # patches + CLS
rng = np.random.default_rng(5)
f32 = lambda *s: (rng.normal(size=s) / np.sqrt(np.prod(s[:-1]))).astype(np.float32)  # noqa: E731
W = {"patch": f32(P, P, C, D), "cls": f32(1, D), "pos": f32(N, D) * 0.1,
     "wq": f32(D, D), "wk": f32(D, D), "wv": f32(D, D), "wo": f32(D, D),
     "w1": f32(D, FF), "w2": f32(FF, D),
     "g1": np.ones(D, np.float32), "b1": np.zeros(D, np.float32),
     "g2": np.ones(D, np.float32), "b2": np.zeros(D, np.float32)}
IMG = rng.uniform(-1, 1, size=(1, S, S, C)).astype(np.float32)


def layer_norm(x, g, b, eps=1e-6):
    m = jnp.mean(x, axis=-1, keepdims=True)
    v = jnp.mean((x - m) ** 2, axis=-1, keepdims=True)
    return (x - m) * jax.lax.rsqrt(v + eps) * g + b


def block(img, w):
    patches = jax.lax.conv_general_dilated(img, w["patch"], (P, P), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jnp.concatenate([w["cls"], patches.reshape(-1, D)], axis=0) + w["pos"]
    h = layer_norm(x, w["g1"], w["b1"])
    q, k, v = ((h @ w[n]).reshape(N, H, D // H) for n in ("wq", "wk", "wv"))
    p = jax.nn.softmax(jnp.einsum("qhd,khd->hqk", q, k) / np.sqrt(D // H), axis=-1)
    x = x + jnp.einsum("hqk,khd->qhd", p, v).reshape(N, D) @ w["wo"]
    h = layer_norm(x, w["g2"], w["b2"])
    return x + jax.nn.gelu(h @ w["w1"], approximate=False) @ w["w2"]


def test_the_block_really_convolves():
    assert "conv_general_dilated" in str(jax.make_jaxpr(block)(IMG, W))


@pytest.mark.slow
@pytest.mark.parametrize("policy,tol", [("exact", 2e-2), ("mpcformer", None)])
def test_vit_block_with_patch_convolution_runs_privately(policy, tol):
    prog = pcformer.compile(block, IMG, W, owners=(1, 0), policy=policy)
    out, rep = prog.run(IMG, W)
    out = np.asarray(out, np.float64)
    assert out.shape == (N, D) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out, np.asarray(prog.plaintext(IMG, W)), atol=2e-2)
    if tol is not None:   # exact: close to the original float block too
        np.testing.assert_allclose(out, np.asarray(block(IMG, W)), atol=tol)
    assert ledger_key(prog.cost.entries) == ledger_key(rep.entries)
    # the server's kernel (and weights) enter through the server-weight protocol
    assert "dot_general_private" in {op.name for op in prog.ir.ops}
