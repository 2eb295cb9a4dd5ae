"""A 2-layer BERT-shaped encoder and a 2-layer GPT-2-shaped decoder, written in Flax, compiled
under every named policy (trace -> rewrite -> lower -> static cost), and run under MPC with the
error vs the rewritten plaintext program reported (printed, and bounded)."""
import os
from collections import Counter

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler.lower import HEAVY

H, HEADS, FF, VOCAB, SEQ, LAYERS = 32, 2, 64, 50, 8, 2


class Attention(nn.Module):
    causal: bool

    @nn.compact
    def __call__(self, x, mask):
        b, s, _ = x.shape
        q = nn.Dense(H, name="query")(x).reshape(b, s, HEADS, H // HEADS)
        k = nn.Dense(H, name="key")(x).reshape(b, s, HEADS, H // HEADS)
        v = nn.Dense(H, name="value")(x).reshape(b, s, HEADS, H // HEADS)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(H // HEADS)
        keep = mask[:, None, None, :] > 0
        if self.causal:
            keep = keep & jnp.tril(jnp.ones((s, s), bool))[None, None]
        scores = jnp.where(keep, scores, -1e9)
        p = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, s, H)
        return nn.Dense(H, name="output")(out)


class Layer(nn.Module):
    causal: bool

    @nn.compact
    def __call__(self, x, mask):
        if self.causal:   # GPT-2: pre-LN, tanh GeLU
            x = x + Attention(True, name="attention")(nn.LayerNorm(name="ln_1")(x), mask)
            h = nn.Dense(FF, name="fc")(nn.LayerNorm(name="ln_2")(x))
            return x + nn.Dense(H, name="proj")(nn.gelu(h, approximate=True))
        x = nn.LayerNorm(name="ln_attention")(x + Attention(False, name="attention")(x, mask))
        h = nn.gelu(nn.Dense(FF, name="intermediate")(x), approximate=False)
        return nn.LayerNorm(name="ln_output")(x + nn.Dense(H, name="output")(h))


class Model(nn.Module):
    causal: bool

    @nn.compact
    def __call__(self, ids, mask):
        x = nn.Embed(VOCAB, H, name="embed")(ids)
        x = x + self.param("position", nn.initializers.normal(0.02), (SEQ, H))[None]
        for i in range(LAYERS):
            x = Layer(self.causal, name=f"layer_{i}")(x, mask)
        if self.causal:
            return nn.LayerNorm(name="ln_f")(x)[:, -1] @ self.variables["params"]["embed"][
                "embedding"].T
        return nn.Dense(2, name="classifier")(x[:, 0])


def _setup(causal):
    model = Model(causal)
    ids = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (1, SEQ)), jnp.int32)
    mask = jnp.ones((1, SEQ), jnp.int32).at[0, -1].set(0 if not causal else 1)
    params = model.init(jax.random.PRNGKey(0), ids, mask)
    fn = lambda p, i, m: model.apply(p, i, m)
    return fn, params, ids, mask


POLICIES = ["exact", "mpcformer", "puma", "paper"]


@pytest.mark.parametrize("causal", [False, True], ids=["bert", "gpt2"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.slow
def test_model_lowers_under_every_policy(causal, policy):
    fn, params, ids, mask = _setup(causal)
    prog = pcformer.compile(fn, params, ids, mask, owners=(0, 1, 1), policy=policy)
    secret_heavy = [op for op in prog.ir.ops if op.kind == "local" and op.party is None
                    and op.name in HEAVY and any(v.vis.is_secret for v in op.operands)]
    assert not secret_heavy
    names = {op.name for op in prog.ir.ops if op.kind == "protocol"}
    assert {"dot_general_private", "dot_general", "reveal"} <= names
    scopes = {e.scope for e in prog.cost.entries}
    assert any(s.startswith("layer_1/attention") for s in scopes), sorted(scopes)[:5]
    t = prog.cost.totals()
    assert t["online"]["rounds"] > 0 and t["setup"]["bytes"][0] > 0
    # the plaintext (rewritten) program stays close to the original float model for exact
    if policy == "exact":
        np.testing.assert_allclose(prog.plaintext(params, ids, mask), fn(params, ids, mask),
                                   atol=5e-2)


@pytest.mark.parametrize("causal", [False, True], ids=["bert", "gpt2"])
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.slow
def test_model_runs_under_mpc(causal, policy):
    """Both 2-layer models run privately under every named policy (op-cached executor: the
    layers share their compiled protocol ops), equal to the rewritten plaintext program."""
    fn, params, ids, mask = _setup(causal)
    prog = pcformer.compile(fn, params, ids, mask, owners=(0, 1, 1), policy=policy)
    out, report = prog.run(params, ids, mask)
    ref = prog.plaintext(params, ids, mask)
    err = float(np.max(np.abs(np.asarray(out) - np.asarray(ref))))
    print(f"\n{'gpt2' if causal else 'bert'} {policy}: max |mpc - plaintext| = {err:.2e}, "
          f"online {report.totals()['online']}, run {report.time}")
    assert err < 5e-2
    key = lambda es: Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in es)
    assert key(prog.cost.entries) == key(report.entries)
