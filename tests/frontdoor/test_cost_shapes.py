"""Cost without running: the static cost from shapes == from real arrays == the measured ledger.

Small configs only (a one-layer tiny BERT and GPT-2); the presets are checked by parameter count
(eval_shape, nothing allocated).
"""
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer import costing, presets
from pcformer.models import bert, gpt2, tiny


def key(entries):
    """Entries as a multiset (the measured ledger's order within a depth may differ)."""
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


def shapes(tree):
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), tree)


@pytest.mark.slow  # the run compiles the protocol ops (~1 min on a loaded 2-core CPU)
def test_cost_from_shapes_equals_cost_from_arrays_and_ledger(tiny_bert):
    fn, params, ids, mask = tiny_bert
    from_shapes = pcformer.cost(fn, shapes(params), shapes(ids), shapes(mask), owners=(0, 1, 1),
                                policy="mpcformer")
    prog = pcformer.compile(fn, params, ids, mask, owners=(0, 1, 1), policy="mpcformer")
    assert from_shapes.static and from_shapes.totals()["online"]["rounds"] > 0
    assert from_shapes.entries == prog.cost.entries          # same list, in order
    _, measured = prog.run(params, ids, mask)
    assert key(from_shapes.entries) == key(measured.entries)
    assert from_shapes.to_json()["totals"] == measured.to_json()["totals"]


def test_cost_refuses_unknown_protocols(tiny_bert):
    fn, params, ids, mask = tiny_bert
    with pytest.raises(ValueError, match="protocols"):
        pcformer.cost(fn, shapes(params), ids, mask, owners=(0, 1, 1), protocols="nope")


@pytest.fixture(scope="module")
def tiny_gpt2_folder(tmp_path_factory):
    return tiny.make_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), n_layer=1, n_embd=16, n_head=2,
                               vocab_size=64, n_positions=16, tokenizer=False)


@pytest.mark.slow  # two runs (prefill, decoding step) compile their protocol ops (~2 min)
def test_decoder_cost_from_config_equals_arrays_and_ledger(tiny_gpt2_folder):
    """model_cost on a checkpoint folder (config.json only) equals the prefill and decoding-step
    programs compiled on the real weights, and what they measure when run with the KV cache
    kept secret between them."""
    seq, new = 3, 3
    mc = costing.model_cost(tiny_gpt2_folder, seq, new, policy="mpcformer")
    model = pcformer.models.load(tiny_gpt2_folder)
    progs = presets.programs(presets.abstract_model(tiny_gpt2_folder), seq, new, None)
    cache = model.init_cache(1, seq + new)
    ids = jnp.asarray([[3, 4, 5]], jnp.int32)
    pre = pcformer.compile(progs.prefill.fn, model.params, ids, cache, jnp.int32(0),
                           owners=progs.prefill.owners, reveal=(True, False), policy="mpcformer")
    assert mc.prefill.entries == pre.cost.entries
    (tok, secret_cache), measured_pre = pre.run(model.params, ids, cache, jnp.int32(0))
    assert key(mc.prefill.entries) == key(measured_pre.entries)
    dec = pcformer.compile(progs.step.fn, model.params, jnp.zeros((1, 1), jnp.int32), secret_cache,
                           jnp.int32(seq), owners=progs.step.owners, reveal=(True, False),
                           policy="mpcformer")
    assert mc.step.entries == dec.cost.entries
    _, measured_step = dec.run(model.params, jnp.asarray([[int(tok)]], jnp.int32), secret_cache,
                               jnp.int32(seq))
    assert key(mc.step.entries) == key(measured_step.entries)

    # the whole job: online rounds and bytes ADD over the prefill and the new - 1 steps; the
    # decoding program's setup is paid once
    t, p, s = mc.total.totals(), mc.prefill.totals(), mc.step.totals()
    assert mc.steps == new - 1
    assert t["online"]["rounds"] == p["online"]["rounds"] + (new - 1) * s["online"]["rounds"]
    for ph in ("online", "offline"):
        assert t[ph]["bytes"] == [p[ph]["bytes"][i] + (new - 1) * s[ph]["bytes"][i] for i in (0, 1)]
    assert t["setup"]["bytes"] == [p["setup"]["bytes"][i] + s["setup"]["bytes"][i] for i in (0, 1)]
    lan = mc.total.estimate("lan")["online"]
    assert lan == pytest.approx(mc.prefill.estimate("lan")["online"]
                                + (new - 1) * mc.step.estimate("lan")["online"])


def test_sequential_adds_online_rounds_only():
    from pcformer.report import Report
    from pcformer.runtime.ledger import Entry
    a = Report([Entry("mul", "mul", "", "online", (8, 8), 2), Entry("mul", "mul", "", "offline", (0, 8), 1)])
    b = Report([Entry("mul", "mul", "", "online", (8, 8), 3)])
    r = costing.sequential([a, b, b])
    assert r.totals()["online"]["rounds"] == 2 + 3 + 3
    assert r.totals()["offline"]["rounds"] == 1


# Published parameter counts (Hugging Face model cards / `num_parameters()` of the PyTorch
# classes); BERT without its pooler, which the sentence embedding never uses.
PARAMS = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080,
          "gpt2-xl": 1_557_611_200, "bert-base": 108_891_648, "bert-large": 334_092_288,
          "llama-7b": 6_738_415_616, "vit-b16": 86_567_656}


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.slow
def test_presets_have_the_published_shapes(name):
    model = presets.abstract_model(name)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(model.params))
    assert presets.parameter_count(model) == PARAMS[name]


def test_preset_names_and_errors(tmp_path):
    assert set(PARAMS) <= set(presets.names())
    with pytest.raises(ValueError, match="not a preset"):
        presets.read_config("no-such-model")
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(ValueError, match="no model in pcformer.models"):
        presets.abstract_model(tmp_path)


def test_model_cost_checks_lengths():
    with pytest.raises(ValueError, match="positions"):
        costing.model_cost("bert-base", 513)


@pytest.mark.parametrize("kind", ["llama", "vit"])
@pytest.mark.slow
def test_llama_and_vit_cost_from_config_equals_cost_from_weights(kind, tmp_path):
    """A tiny LLaMA (grouped-query attention; prefill and KV-cache step) and a tiny ViT
    classifier: the cost from config.json alone equals the compiled program's on real weights."""
    if kind == "llama":
        folder = tiny.make_tiny_llama(tmp_path, num_hidden_layers=1, hidden_size=16,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      intermediate_size=32, vocab_size=64,
                                      max_position_embeddings=16, tokenizer=False)
        policy, seq, new = "exact", 3, 2  # SiLU's logistic: only `exact` covers it today
    else:
        folder = tiny.make_tiny_vit(tmp_path, num_hidden_layers=1, hidden_size=16,
                                    num_attention_heads=2, intermediate_size=32, image_size=8,
                                    patch_size=4, num_labels=5)
        policy, seq, new = "mpcformer", 1, 1
    mc = costing.model_cost(folder, seq, new, policy=policy)
    params = pcformer.models.load(folder).params
    progs = presets.programs(presets.abstract_model(folder), seq, new, None)
    for call, report in ((progs.prefill, mc.prefill), (progs.step, mc.step)):
        if report is None:
            continue
        real = [params] + [jnp.zeros(a.shape, a.dtype) if isinstance(a, jax.ShapeDtypeStruct)
                           else jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), a)
                           for a in call.args[1:]]
        if call.owners[2:3] == ("secret",):   # the cache arrives as a Secret placeholder
            real[2] = call.args[2]
        prog = pcformer.compile(call.fn, *real, owners=call.owners, reveal=call.reveal,
                                policy=policy)
        assert report.entries == prog.cost.entries and report.entries
    if kind == "vit":
        assert mc.tokens == (8 // 4) ** 2 + 1
        assert mc.params == presets.parameter_count(presets.abstract_model(folder))


def test_named_model_minilm_costs_from_its_installed_config():
    """`pcformer cost --model=minilm` (the README's default model) reads the config.json of the
    installed checkpoint, like `pcformer run --model=minilm` loads it."""
    import json

    from pcformer import models
    name, raw = presets.read_config("minilm")
    assert name == "minilm"
    assert raw == json.loads((models.minilm_folder() / "config.json").read_text())
    shapes = presets.abstract_model("MiniLM").params
    real = {k: v for k, v in models.load("minilm").params.items() if k != "pooler"}  # unused
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(real)
    assert all(s.shape == r.shape for s, r in zip(jax.tree_util.tree_leaves(shapes),
                                                   jax.tree_util.tree_leaves(real)))
