"""LLaMA-style and ViT models against transformers' PyTorch classes at random init.

Each reference model is built from a small config, its weights perturbed so every tensor
matters (norm scales included), saved with `save_pretrained` (safetensors) and loaded with
`pcformer.models.load`, so the checkpoint converter is tested with the forward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pcformer.models as M  # noqa: E402
from pcformer.models import checkpoint, llama, registry, vit  # noqa: E402

TOL = 1e-4


def _perturbed(model, seed: int, std: float = 0.05):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * std)
    return model.eval()


def _llama_config(**kw):
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-5)
    return transformers.LlamaConfig(**{**base, **kw})


def _saved(model, folder):
    model.save_pretrained(str(folder))
    return M.load(folder)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.slow
def test_llama_causal_lm_matches_transformers(tmp_path, tied):
    ref = _perturbed(transformers.LlamaForCausalLM(_llama_config(tie_word_embeddings=tied)), seed=1)
    m = _saved(ref, tmp_path)
    assert m.kind == "llama" and m.config.kv_heads == 2 and m.config.groups == 2
    assert ("lm_head" in m.params) != tied
    ids = np.random.default_rng(0).integers(0, 96, (2, 11))
    want = ref(torch.tensor(ids)).logits.detach().numpy()
    got = np.asarray(m.apply(ids))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("rope", [
    {"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0},
    # a short original context so that every band of llama3's blend is exercised at 24 tokens
    {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 16, "rope_theta": 500.0},
], ids=["linear", "llama3"])
@pytest.mark.slow
def test_llama_rope_scaling_matches_transformers(tmp_path, rope):
    ref = _perturbed(transformers.LlamaForCausalLM(_llama_config(rope_parameters=rope, head_dim=16)), seed=8)
    m = _saved(ref, tmp_path)
    assert m.config.rope_type == rope["rope_type"] and m.config.rope_factor == rope["factor"]
    ids = np.random.default_rng(6).integers(0, 96, (1, 24))
    want = ref(torch.tensor(ids)).logits.detach().numpy()
    np.testing.assert_allclose(np.asarray(m.apply(ids)), want, atol=TOL, rtol=0)


@pytest.mark.slow
def test_llama_base_model_and_padding_match_transformers(tmp_path):
    ref = _perturbed(transformers.LlamaModel(_llama_config(num_key_value_heads=1)), seed=2)
    m = _saved(ref, tmp_path)
    assert isinstance(m.module, llama.LlamaModel)
    ids = np.random.default_rng(1).integers(0, 96, (2, 9))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0  # right padding: the real positions must not see the padded keys
    want = ref(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state.detach().numpy()
    got = np.asarray(m.apply(ids, mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=TOL, rtol=0)


@pytest.mark.slow
def test_llama_cached_decoding_equals_full_forward(tmp_path):
    ref = _perturbed(transformers.LlamaForCausalLM(_llama_config()), seed=3)
    m = _saved(ref, tmp_path)
    ids = jnp.asarray(np.random.default_rng(2).integers(0, 96, (2, 10)), jnp.int32)
    full = np.asarray(m.apply(ids))
    step = jax.jit(m.decode_step)
    cache = m.init_cache(batch=2, max_len=16)
    assert cache[0][0].shape == (2, 2, 16, 8)  # the cache holds the key/value heads only
    logits, cache = step(m.params, ids[:, :4], cache, jnp.int32(0))  # prefill 4 tokens
    got = [np.asarray(logits)]
    for pos in range(4, 10):
        logits, cache = step(m.params, ids[:, pos : pos + 1], cache, jnp.int32(pos))
        got.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(got, axis=1), full, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_llama_greedy_generation_matches_transformers(tmp_path):
    folder = M.make_tiny_llama(tmp_path, num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                               max_position_embeddings=64, init_std=0.2, seed=4)
    m = M.load(folder)
    ref = transformers.LlamaForCausalLM.from_pretrained(str(folder)).eval()
    prompt = m.tokenizer("The quick brown fox")["input_ids"]
    assert prompt[0] == 1  # the tiny tokenizer puts <s> first, as LLaMA's do
    ours = llama.generate_ids(m.module, m.params, prompt, max_new_tokens=6)
    out = ref.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                       pad_token_id=2)
    theirs = out[0, len(prompt):].tolist()
    assert ours == theirs
    assert isinstance(m.generate("The quick brown fox", max_new_tokens=3, stop_at_eos=False), str)


def _vit_config(**kw):
    base = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                image_size=16, patch_size=4, num_channels=3)
    return transformers.ViTConfig(**{**base, **kw})


@pytest.mark.slow
def test_vit_model_matches_transformers(tmp_path):
    ref = _perturbed(transformers.ViTModel(_vit_config()), seed=5)
    m = _saved(ref, tmp_path)
    assert isinstance(m.module, vit.ViTModel) and m.config.add_pooling_layer
    x = np.random.default_rng(3).normal(size=(2, 3, 16, 16)).astype(np.float32)
    want = ref(torch.tensor(x))
    np.testing.assert_allclose(np.asarray(m.apply(x)), want.last_hidden_state.detach().numpy(), atol=TOL, rtol=0)
    pooled = m.module.apply({"params": m.params}, jnp.asarray(x))["pooler_output"]
    np.testing.assert_allclose(np.asarray(pooled), want.pooler_output.detach().numpy(), atol=TOL, rtol=0)


@pytest.mark.slow
def test_vit_classifier_matches_transformers(tmp_path):
    ref = _perturbed(transformers.ViTForImageClassification(_vit_config(num_labels=5)), seed=6)
    m = _saved(ref, tmp_path)
    x = np.random.default_rng(4).normal(size=(3, 3, 16, 16)).astype(np.float32)
    want = ref(torch.tensor(x)).logits.detach().numpy()
    got = np.asarray(m.logits_fn(m.params, jnp.asarray(x)))
    assert got.shape == (3, 5)
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


# Names of the same tensors in ViT checkpoints saved before transformers 5 (most on the Hub).
_OLD_VIT = [("layers.", "encoder.layer."), ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"), ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense")]


def test_vit_loads_the_older_checkpoint_names(tmp_path):
    folder = M.make_tiny_vit(tmp_path, num_labels=3, seed=7)
    new = M.load(folder)
    state = checkpoint.read_state(folder)
    old = {}
    for name, value in state.items():
        for a, b in _OLD_VIT:
            name = name.replace(a, b)
        old[name] = value
    assert "vit.encoder.layer.0.attention.attention.query.weight" in old
    checkpoint.write_state(folder, old)
    again = M.load(folder)
    for a, b in zip(jax.tree_util.tree_leaves(new.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_tiny_builders_load_in_transformers(tmp_path):
    lf = M.make_tiny_llama(tmp_path / "l", tie_word_embeddings=True, tokenizer=False)
    vf = M.make_tiny_vit(tmp_path / "v")
    ids = np.array([[1, 5, 9, 3]])
    lm = transformers.LlamaForCausalLM.from_pretrained(str(lf)).eval()
    np.testing.assert_allclose(np.asarray(M.load(lf).apply(ids)),
                               lm(torch.tensor(ids)).logits.detach().numpy(), atol=TOL, rtol=0)
    x = np.random.default_rng(5).normal(size=(1, 3, 16, 16)).astype(np.float32)
    vm = transformers.ViTModel.from_pretrained(str(vf)).eval()
    np.testing.assert_allclose(np.asarray(M.load(vf).apply(x)),
                               vm(torch.tensor(x)).last_hidden_state.detach().numpy(), atol=TOL, rtol=0)


# ---- shapes from a config alone ----

def _shapes(tree):
    return jax.tree_util.tree_map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


@pytest.mark.parametrize("make", ["llama", "vit", "gpt2", "bert"])
@pytest.mark.slow
def test_abstract_agrees_with_the_loaded_model(tmp_path, make):
    folder = {"llama": lambda: M.make_tiny_llama(tmp_path, tokenizer=False),
              "vit": lambda: M.make_tiny_vit(tmp_path, num_labels=4),
              "gpt2": lambda: M.make_tiny_gpt2(tmp_path, tokenizer=False),
              "bert": lambda: M.make_tiny_bert(tmp_path)}[make]()
    m = M.load(folder)
    am = M.abstract(folder, seq_len=6, batch=2)
    assert am.kind == make
    params = m.params["bert"] if make == "bert" and "bert" in m.params else m.params
    if make == "bert":  # forward leaves the pooler out
        params = {k: v for k, v in params.items() if k != "pooler"}
    assert _shapes(am.params) == _shapes(params)
    out = jax.eval_shape(am.fn, am.params, *am.inputs)
    x = [np.zeros(s.shape, s.dtype) for s in am.inputs]
    np.testing.assert_allclose(np.asarray(am.fn(m.params if make != "bert" else params, *x)),
                               np.asarray(m.forward(m.params, *x)), atol=1e-6)
    assert out.shape == {"llama": (2, 6, 512), "vit": (2, 4), "gpt2": (2, 6, 512), "bert": (2, 6, 32)}[make]


def test_abstract_decode_step_shapes():
    cfg = llama.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32)
    am = M.abstract(cfg, seq_len=20, decode=True)
    tok, cache, pos = am.inputs
    assert tok.shape == (1, 1) and pos.shape == () and cache[1][0].shape == (1, 1, 20, 4)
    logits, new_cache = jax.eval_shape(am.fn, am.params, *am.inputs)
    assert logits.shape == (1, 1, 50)
    assert _shapes(new_cache) == _shapes(cache)


@pytest.mark.slow
def test_abstract_llama_7b_counts_its_parameters_without_allocating():
    hf = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
          "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
          "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "architectures": ["LlamaForCausalLM"]}
    am = M.abstract(hf, seq_len=128)
    assert am.num_params == 6_738_415_616  # LLaMA-7B, as Meta and Hugging Face count it
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(am.params))
    assert jax.eval_shape(am.fn, am.params, *am.inputs).shape == (1, 128, 32000)


def test_llama_config_refuses_what_it_lacks():
    with pytest.raises(ValueError, match="rope_type"):
        llama.LlamaConfig.from_hf(_llama_config(rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                                 "rope_theta": 10000.0}))
    with pytest.raises(ValueError, match="multiple"):
        llama.LlamaConfig(num_attention_heads=4, num_key_value_heads=3, hidden_size=32)
    assert registry.kind_of(vit.ViTConfig()) == "vit"


def _primitives(jaxpr) -> set[str]:
    found = set()
    for eqn in jaxpr.eqns:
        found.add(eqn.primitive.name)
        for v in eqn.params.values():  # the bodies of pjit / custom_jvp calls
            inner = getattr(v, "jaxpr", None)
            if inner is not None:
                found |= _primitives(getattr(inner, "jaxpr", inner))
    return found


def test_llama_traces_to_ordinary_primitives_with_public_rotary_tables():
    cfg = llama.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    am = M.abstract(cfg, seq_len=5)
    full = _primitives(jax.make_jaxpr(am.fn)(am.params, *am.inputs).jaxpr)
    dec = M.abstract(cfg, seq_len=8, decode=True)
    step = _primitives(jax.make_jaxpr(dec.fn)(dec.params, *dec.inputs).jaxpr)
    for prims in (full, step):
        assert {"rsqrt", "logistic", "dot_general"} <= prims  # RMSNorm, SiLU, products
        assert not prims & {"sin", "cos", "exp2", "pow", "erf_inv", "conv_general_dilated"}
    assert "dynamic_slice" in step  # the tables are sliced at the public position


def test_vit_traces_without_convolution():
    am = M.abstract(vit.ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, image_size=8, patch_size=4), seq_len=0)
    prims = _primitives(jax.make_jaxpr(am.fn)(am.params, *am.inputs).jaxpr)
    assert "conv_general_dilated" not in prims and {"dot_general", "erfc", "rsqrt"} <= prims  # exact GeLU is erfc here


@pytest.mark.slow  # ~100 s on a loaded 2-core machine: one exact MPC simulation
def test_tiny_llama_compiles_and_runs_under_exact_mpc(tmp_path):
    import pcformer

    m = M.load(M.make_tiny_llama(tmp_path, num_hidden_layers=1, hidden_size=16, intermediate_size=32,
                                 vocab_size=40, tokenizer=False))
    ids = jnp.asarray([[1, 5, 7]], jnp.int32)
    program = pcformer.compile(m.forward, m.params, ids, owners=(0, 1), policy="exact")
    out, _ = program.run(m.params, ids)
    # fixed-point arithmetic: close to the float forward, not equal
    np.testing.assert_allclose(np.asarray(out), np.asarray(m.apply(ids)), atol=2e-2, rtol=0)


@pytest.mark.slow
def test_llama_and_vit_save_round_trip(tmp_path):
    m = M.load(M.make_tiny_llama(tmp_path / "l", tie_word_embeddings=True, num_hidden_layers=1))
    again = M.load(M.save(m, tmp_path / "l2"))
    assert again.config == m.config and again.tokenizer("a b")["input_ids"] == m.tokenizer("a b")["input_ids"]
    v = M.load(M.make_tiny_vit(tmp_path / "v", num_labels=3, num_hidden_layers=1))
    v2 = M.load(M.save(v, tmp_path / "v2"))
    for a, b in ((m, again), (v, v2)):
        for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
