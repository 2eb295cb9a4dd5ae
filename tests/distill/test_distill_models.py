"""Distillation on real (tiny) models: gradients through every policy's rewrite, the saved
checkpoint, the calibrated inits and the cached teacher."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer import distill as D

SMALL = D.DistillConfig(steps=6, batch_size=8, seq_len=12, lr=3e-3, warmup=2, eval_every=0,
                        progress=False)


POLICIES = ("exact", "mpcformer", "puma", "paper")
TOKENIZER_VOCAB = 64          # the tiny_bert fixture (tests/distill/conftest.py)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.slow
def test_gradients_flow_through_every_policy(tiny_bert, policy):
    """Finite, non-zero gradients reach the parameters upstream of every replaced operator
    (GeLU: intermediate dense; softmax: query/key; LayerNorm rsqrt: LayerNorm scales)."""
    model = tiny_bert
    ids, mask = D.tokenize(model.tokenizer, ["the quick brown fox jumps over it",
                                             "a short one"], 8)
    teacher = D.features_fn(model)
    student = D.make_student(teacher, policy)
    t = teacher(model.params, ids, mask)
    noisy = jax.tree_util.tree_map(
        lambda x: x * 1.05 if x.ndim == 2 else x, model.params)  # exact policy: a non-zero loss

    def loss(p):
        parts = D.loss_parts(student(p, ids, mask), t, mask, use_attention=True,
                             output_loss="cosine")
        return jnp.mean(D._total(parts, D.DistillConfig()))

    grads = jax.jit(jax.grad(loss))(noisy)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    assert all(np.isfinite(np.asarray(g)).all() for _, g in flat)
    layer = grads["encoder"]["layer_0"]
    for g in (layer["intermediate"]["dense"]["kernel"], layer["attention"]["self"]["query"]["kernel"],
              layer["attention"]["self"]["key"]["kernel"], layer["output"]["LayerNorm"]["scale"],
              grads["encoder"]["layer_1"]["intermediate"]["dense"]["kernel"]):
        assert float(jnp.abs(g).max()) > 0
    if policy != "exact":  # the policy really changed the program
        s = student(model.params, ids, mask)
        assert float(jnp.abs(s["out"] - t["out"]).max()) > 1e-4


@pytest.mark.slow
def test_distilled_folder_reloads_with_identical_outputs(tiny_bert, texts, tmp_path):
    models = pytest.importorskip("pcformer.models")
    train, held = texts
    out = str(tmp_path / "distilled")
    cfg = dataclasses.replace(SMALL, steps=3, seq_len=8)
    res = D.distill(tiny_bert, "mpcformer", train, cfg, held_out=held[:8], out_dir=out)
    with open(os.path.join(out, D.POLICY_FILE)) as f:
        meta = json.load(f)
    assert meta["policy"] == "mpcformer" and meta["distill"]["steps"] == 3
    assert (meta["policy_fields"]["gelu"], meta["policy_fields"]["softmax"]) == ("quad", "2quad")
    back = models.load(out)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(leaves(res.params), leaves(back.params)))
    # the embedding tables were frozen, the encoder trained
    emb = back.params["embeddings"]["word_embeddings"]["embedding"]
    assert np.array_equal(np.asarray(emb),
                          np.asarray(tiny_bert.params["embeddings"]["word_embeddings"]["embedding"]))
    assert not np.array_equal(np.asarray(back.params["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]),
                              np.asarray(tiny_bert.params["encoder"]["layer_0"]["intermediate"]["dense"]["kernel"]))
    ids, mask = D.tokenize(tiny_bert.tokenizer, held[:4], 8)
    student = D.make_student(D.features_fn(back), "mpcformer")
    a = student(res.params, ids, mask)["out"]
    b = student(back.params, ids, mask)["out"]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.path.isfile(os.path.join(out, D.STATE_FILE))  # resumable (resume: tested above)


@pytest.mark.slow
def test_fit_init_brings_quad_closer(tiny_bert, texts):
    train, held = texts
    ids, mask = D.tokenize(tiny_bert.tokenizer, train[:64], 12)
    fitted = D.fit_quad_init(tiny_bert, tiny_bert.params, ids, mask)
    teacher = D.features_fn(tiny_bert)
    student = D.make_student(teacher, "mpcformer")
    hids, hmask = D.tokenize(tiny_bert.tokenizer, held, 12)
    t = teacher(tiny_bert.params, hids, hmask)
    err = lambda p: float(jnp.mean(D.loss_parts(student(p, hids, hmask), t, hmask,
                                                use_attention=False, output_loss="cosine")["hidden"]))
    assert err(fitted) < 0.5 * err(tiny_bert.params)


def test_quad_softmax_scale_beats_the_plain_shift():
    rng = np.random.default_rng(1)
    scores = rng.normal(0.0, 3.0, size=(4, 3, 6, 6)).astype(np.float32)
    valid = np.ones((4, 6), bool)
    valid[1, 4:] = False
    grid = np.geomspace(0.05, 2.0, 40)
    s = D.quad_softmax_scale(scores, valid, 5.0, grid)
    assert s.shape == (3,) and np.all(np.isin(s, grid))
    keys = valid[:, None, None, :]
    ref = np.asarray(jax.nn.softmax(jnp.asarray(scores), axis=-1, where=keys)) * keys

    def err(scale):
        q = np.square(scale[None, :, None, None] * scores + 5.0) * keys
        return np.sum((q / q.sum(-1, keepdims=True) - ref) ** 2, axis=(0, 2, 3))
    assert np.all(err(s) <= err(np.ones(3)) + 1e-9)
    assert np.all(err(s) <= err(np.full(3, grid[0])) + 1e-9)


@pytest.mark.slow
def test_fit_softmax_init_brings_2quad_attention_closer(tiny_bert, texts):
    train, held = texts
    ids, mask = D.tokenize(tiny_bert.tokenizer, train[:32], 12)
    teacher = D.features_fn(tiny_bert)
    student = D.make_student(teacher, "mpcformer")
    quad = D.fit_quad_init(tiny_bert, tiny_bert.params, ids, mask)
    both = D.fit_softmax_init(tiny_bert, quad, ids, mask, student=student)
    hids, hmask = D.tokenize(tiny_bert.tokenizer, held, 12)
    t = teacher(tiny_bert.params, hids, hmask)
    att = lambda p: float(jnp.mean(D.loss_parts(student(p, hids, hmask), t, hmask,
                                                use_attention=True,
                                                output_loss="cosine")["attention"]))
    assert att(both) < att(quad)
    layer = lambda p: p["encoder"]["layer_0"]["attention"]["self"]
    # only the queries are rescaled (per head); keys, values and the MLP are the GeLU fit's
    assert not np.array_equal(np.asarray(layer(both)["query"]["kernel"]),
                              np.asarray(layer(quad)["query"]["kernel"]))
    for name in ("key", "value"):
        assert np.array_equal(np.asarray(layer(both)[name]["kernel"]),
                              np.asarray(layer(quad)[name]["kernel"]))


@pytest.mark.slow
def test_cached_teacher_trains_like_the_live_teacher(tiny_bert, texts):
    """steps * batch_size covers the training set: the teacher's outputs are computed once and
    reused (cut to each batch's padded length); the run must match one that recomputes them in
    every step, up to the float16 the cache holds them in (2^-11 relative)."""
    train, held = texts
    data = train[:8] + [f"short text number {w}" for w in "abcdefgh"]  # 5 tokens each
    cfg = dataclasses.replace(SMALL, steps=3, seq_len=8, init="copy", length_buckets=(5,))
    assert cfg.steps * cfg.batch_size >= len(data)
    ids, mask = D.tokenize(tiny_bert.tokenizer, data, cfg.seq_len)
    plan = [D.batch_plan(mask.sum(1), cfg.batch_size, s, cfg.seed, D.bucket_bounds(cfg))[1]
            for s in range(cfg.steps)]
    assert 5 in plan and 8 in plan  # both a cut batch and a full-length one
    cached = D.distill(tiny_bert, "mpcformer", data, cfg, held_out=held[:8])
    live = D.distill(tiny_bert, "mpcformer", data, cfg, held_out=held[:8],
                     teacher_cache_mb=0)
    assert D._TEACHER_CACHE  # the cache was really used by the first run
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(cached.params), leaves(live.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(cached.train_losses, live.train_losses, rtol=1e-3)
    (_, held_cache), = D._TEACHER_CACHE.values()
    assert {a.dtype for a in leaves(held_cache)} == {np.dtype(np.float16)}  # half the memory


@pytest.mark.slow
def test_held_out_share_fits_a_small_file():
    from pcformer.distill import DistillError, fitting_held_out
    assert fitting_held_out(1000, 64) == 64           # enough data: the configured share
    assert fitting_held_out(40, 64) == 8              # a small file: a fifth
    assert fitting_held_out(3, 64) == 1
    with pytest.raises(DistillError, match="at least 2"):
        fitting_held_out(1, 64)
    with pytest.raises(DistillError, match="at least 1 example"):
        D.split_data(["a b", "c d", "e f"], None, D.DistillConfig(held_out=0))
