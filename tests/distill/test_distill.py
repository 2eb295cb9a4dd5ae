"""Distillation: the training loop, its determinism and resumption, the corpus, and (once the
compiler and models are there) gradients through every policy and the saved checkpoint."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pcformer import corpus
from pcformer import distill as D
from word_tokenizer import WordTokenizer


# ---------------------------------------------------------------- a tiny stand-in model
def quad_gelu(x):
    return 0.125 * x * x + 0.25 * x + 0.5


def quad_softmax(scores, mask):
    e = jnp.where(mask, jnp.square(scores + 5.0), 0.0)
    return e / jnp.sum(e, axis=-1, keepdims=True)


def exact_softmax(scores, mask):
    return jax.nn.softmax(scores, axis=-1, where=mask)


class TinyEncoder(nn.Module):
    """A 2-layer BERT-like encoder returning hidden states and attention probabilities."""

    vocab: int = 64
    dim: int = 16
    heads: int = 2
    layers: int = 2
    friendly: bool = False

    @nn.compact
    def __call__(self, ids, mask, output_hidden_states=False, output_attentions=False):
        act = quad_gelu if self.friendly else jax.nn.gelu
        smax = quad_softmax if self.friendly else exact_softmax
        x = nn.Embed(self.vocab, self.dim)(ids) + self.param(
            "pos", nn.initializers.normal(0.02), (64, self.dim))[: ids.shape[1]]
        x = nn.LayerNorm()(x)
        hidden, attns = [x], []
        keymask = (mask[:, None, None, :] > 0)
        for _ in range(self.layers):
            b, t, _ = x.shape
            qkv = nn.Dense(3 * self.dim)(x).reshape(b, t, 3, self.heads, self.dim // self.heads)
            q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
            p = smax(jnp.einsum("bnqd,bnkd->bnqk", q, k) / np.sqrt(q.shape[-1]), keymask)
            ctx = jnp.einsum("bnqk,bnkd->bnqd", p, v).transpose(0, 2, 1, 3).reshape(b, t, -1)
            x = nn.LayerNorm()(x + nn.Dense(self.dim)(ctx))
            x = nn.LayerNorm()(x + nn.Dense(self.dim)(act(nn.Dense(2 * self.dim)(x))))
            hidden.append(x)
            attns.append(p)
        return {"last_hidden_state": x, "hidden_states": tuple(hidden), "attentions": tuple(attns)}


@dataclasses.dataclass(frozen=True)
class TinyModel:
    module: nn.Module
    params: dict
    tokenizer: object
    kind: str = "bert"
    config: object = None


@pytest.fixture(scope="module")
def tiny():
    module = TinyEncoder()
    ids = jnp.ones((1, 8), jnp.int32)
    params = module.init(jax.random.PRNGKey(0), ids, jnp.ones((1, 8), jnp.int32))["params"]
    model = TinyModel(module=module, params=params, tokenizer=WordTokenizer(vocab_size=64))
    student = D.features_fn(dataclasses.replace(model, module=TinyEncoder(friendly=True)))
    return model, student


SMALL = D.DistillConfig(steps=6, batch_size=8, seq_len=12, lr=3e-3, warmup=2, eval_every=0,
                        progress=False)


# ---------------------------------------------------------------- corpus
@pytest.mark.slow
def test_corpus_is_clean_deterministic_and_disjoint():
    train, held = corpus.load_corpus(n_train=500, n_heldout=50, seed=3)
    again = corpus.load_corpus(n_train=500, n_heldout=50, seed=3)
    assert (train, held) == again
    assert len(train) == 500 and len(held) == 50 and not set(train) & set(held)
    other = corpus.load_corpus(n_train=500, n_heldout=50, seed=4)[1]
    assert other != held
    for s in train + held:
        assert s.isascii() and 6 <= len(s.split()) <= 40 and s[0].isupper()
        assert not any(c in s for c in "{}[]=_`>")


def test_clean_sentence_rejects_code():
    assert corpus.clean_sentence("Return the number of items in the list as an integer value.")
    assert corpus.clean_sentence("Call foo(x) to get the number of items in the list now.") is None
    assert corpus.clean_sentence(">>> x = open(path) and then read the whole file please.") is None
    assert corpus.clean_sentence("too short.") is None


def test_corpus_reads_bullets_typography_and_emphasis():
    doc = ("Intro line of prose here.\n\n"
           "* If the target is a name, the object is\n  bound to that name in the scope.\n\n"
           "Signature list:\n    first(a, b)\n        Described here in nested prose.\n\n"
           "    code_block(that, is, indented) and should never count as a sentence.\n")
    paras = corpus._paragraphs(doc)
    assert paras[:2] == ["Intro line of prose here.",
                         "If the target is a name, the object is bound to that name in the scope."]
    assert not any("Described" in p for p in paras)          # mixed indentation: a structure
    assert [corpus.clean_sentence(p) for p in paras[2:]] == [None]  # the dedented code block
    curly = "The \u201cstarred\u201d target\u2019s items are *not* assigned in this case."
    assert corpus.clean_sentence(curly) == ('The "starred" target\'s items are not assigned in '
                                            'this case.')


@pytest.mark.slow
def test_corpus_is_large_enough_to_distil_without_overfitting():
    # every module and its direct submodules, plus the language reference: thousands of
    # sentences (a couple of thousand overfit within a few epochs of the example's run)
    sentences = corpus.stdlib_sentences()
    assert len(sentences) > 4000
    train, held = corpus.load_corpus(None, 50, seed=3)           # None: all that is not held out
    assert len(train) + len(held) == len(sentences) and held == corpus.load_corpus(500, 50, 3)[1]
    names = corpus.stdlib_module_names(corpus.CorpusConfig())
    assert "email.message" in names and "antigravity" not in names and "this" not in names


def test_read_texts_file_and_list(tmp_path):
    f = tmp_path / "data.txt"
    f.write_text("first line here\n\n second line \n")
    assert corpus.read_texts(str(f)) == ["first line here", "second line"]
    assert corpus.read_texts(["a", " ", "b"]) == ["a", "b"]
    with pytest.raises(ValueError):
        corpus.read_texts([" "])


# ---------------------------------------------------------------- loop
def test_batches_are_a_pure_function_of_step():
    lengths = np.array([3, 9, 5, 12, 2, 8, 7, 12, 4, 10, 6, 11])
    bounds = (6, 12)
    plan = [D.batch_plan(lengths, 4, s, 0, bounds) for s in range(8)]
    again = [D.batch_plan(lengths, 4, s, 0, bounds) for s in range(8)]
    assert all((x == y).all() and a == b for (x, a), (y, b) in zip(plan, again))
    per_epoch = len(D._epoch_batches(lengths, 4, 0, 0, bounds))
    assert per_epoch == 3  # 5 short: one batch of them, one left over moves up to the long ones
    first = np.concatenate([idx for idx, _ in plan[:per_epoch]])
    assert sorted(first.tolist()) == list(range(12))            # each epoch covers every example
    for idx, length in plan:
        assert length in bounds and (lengths[idx] <= length).all()
    assert sorted(length for _, length in plan[:per_epoch]) == [6, 12, 12]
    assert not all((D.batch_plan(lengths, 4, s, 1, bounds)[0] == plan[s][0]).all()
                   for s in range(3))                            # another seed, other batches
    assert D.bucket_bounds(dataclasses.replace(SMALL, length_buckets=(16, 4))) == (4, 12)


@pytest.mark.slow
def test_few_steps_lower_held_out_loss(tiny, texts):
    model, student = tiny
    train, held = texts
    res = D.distill(model, "mpcformer", train, dataclasses.replace(SMALL, steps=25),
                    held_out=held, student_fn=student)
    before, after = res.history[0], res.history[-1]
    assert before["step"] == 0 and after["step"] == 25
    assert after["loss"] < 0.7 * before["loss"], (before, after)
    assert after["cosine"] > before["cosine"]
    assert all(np.isfinite(res.train_losses))


@pytest.mark.slow
def test_deterministic_and_resumable(tiny, texts, tmp_path):
    model, student = tiny
    train, held = texts
    full = D.distill(model, "mpcformer", train, SMALL, held_out=held, student_fn=student)
    again = D.distill(model, "mpcformer", train, SMALL, held_out=held, student_fn=student)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(full.params), leaves(again.params)))

    # An interrupted run: 3 steps by hand with the same jitted step, saved; then resume to 6.
    state = str(tmp_path / "state.msgpack")
    train_step = D._programs(model, "mpcformer", SMALL, student)[0]
    train_ids, train_mask = D.tokenize(model.tokenizer, train, SMALL.seq_len)
    p = jax.tree_util.tree_map(jnp.array, model.params)
    o = D.make_optimizer(SMALL, model.params).init(p)
    lengths, bounds = train_mask.sum(axis=1), D.bucket_bounds(SMALL)
    for s in range(3):
        idx, n = D.batch_plan(lengths, SMALL.batch_size, s, SMALL.seed, bounds)
        p, o, *_ = train_step(p, o, model.params, train_ids[idx, :n], train_mask[idx, :n])
    D.save_state(state, p, o, 3)
    resumed = D.distill(model, "mpcformer", train, SMALL, held_out=held, student_fn=student,
                        resume=state)
    assert resumed.step == 6 and len(resumed.train_losses) == 3
    assert all(np.allclose(a, b, atol=1e-6)
               for a, b in zip(leaves(full.params), leaves(resumed.params)))
    assert not all(np.allclose(a, b) for a, b in zip(leaves(p), leaves(full.params)))


@pytest.mark.slow
def test_nan_loss_is_refused(tiny, texts):
    model, _ = tiny
    train, held = texts
    bad = D.features_fn(model)

    def student(p, ids, mask):
        out = bad(p, ids, mask)
        return dict(out, out=out["out"] * jnp.nan)

    with pytest.raises(FloatingPointError):
        D.distill(model, "mpcformer", train, dataclasses.replace(SMALL, steps=1), held_out=held,
                  student_fn=student)


def parsed_flags(*argv):
    """`pcformer distill`'s real flags (pcformer/cli.py) parsed from argv, in a private copy."""
    import copy
    from pcformer import cli
    fv = copy.deepcopy(cli.FLAGS)
    fv.unparse_flags()
    fv(["pcformer", *argv])
    return fv


def test_cli_flags_build_the_config():
    from pcformer.distill import cli as distill_cli
    cfg = distill_cli.config_from_flags(parsed_flags(
        "--steps=5", "--init=copy", "--nofreeze_embeddings", "--held_out=7", "--end_lr_ratio=0.1"))
    assert (cfg.steps, cfg.init, cfg.freeze_embeddings, cfg.held_out) == (5, "copy", False, 7)
    assert (cfg.end_lr_ratio, cfg.lr, cfg.seed) == (0.1, D.DistillConfig().lr, 0)  # --seed unset


def test_every_config_field_is_a_flag_with_its_default():
    from pcformer.distill import cli as distill_cli
    fv = parsed_flags()
    for f in dataclasses.fields(D.DistillConfig):
        assert f.name in fv and f.metadata["help"]
    assert distill_cli.config_from_flags(fv) == D.DistillConfig()


def test_cli_policy_is_a_yaml_file(tmp_path):
    """`pcformer distill --policy=FILE.yaml` resolves through policies.load, like `pcformer run`."""
    from pcformer.distill import cli as distill_cli
    path = tmp_path / "my_policy.yaml"
    path.write_text("base: mpcformer\ngelu: relu\nquad_c: 4.0\n")
    policy, cfg = distill_cli.resolve_flags(parsed_flags(f"--policy={path}", "--steps=3"))
    assert (policy.name, policy.gelu, policy.softmax, policy.quad_c) == ("my_policy", "relu",
                                                                           "2quad", 4.0)
    assert cfg.steps == 3
    assert D.gelu_of(policy) == "relu" and D.softmax_of(policy) == ("2quad", 4.0)
    assert D.changes_softmax(policy) and not D.changes_softmax("exact")
    with pytest.raises(D.DistillError, match="one --policy"):
        distill_cli.resolve_flags(parsed_flags("--policy=exact,mpcformer"))


def test_cli_held_out_file_reaches_distill(tmp_path, monkeypatch):
    """--held_out_data: checked before any model loads, then handed to `distill` as its held-out
    set (the small --data file then keeps all its examples for training)."""
    from pcformer import models
    from pcformer.distill import cli as distill_cli
    from pcformer.distill import evaluation, train
    data, held, empty = tmp_path / "data.txt", tmp_path / "held.txt", tmp_path / "empty.txt"
    data.write_text("one example\nanother example\na third example\n")
    held.write_text("a held-out sentence\n")
    empty.write_text("")
    with pytest.raises(D.DistillError, match="does not exist"):
        distill_cli.resolve_flags(parsed_flags(f"--held_out_data={tmp_path / 'nothing.txt'}"))
    with pytest.raises(D.DistillError, match="no non-empty examples"):
        distill_cli.resolve_flags(parsed_flags(f"--held_out_data={empty}"))
    fv = parsed_flags(f"--data={data}", f"--held_out_data={held}", "--steps=1")
    _, cfg = distill_cli.resolve_flags(fv)
    assert cfg.held_out == D.DistillConfig().held_out       # no fifth of --data split off
    seen = {}

    def fake_distill(teacher, policy, data_arg, config, **kw):
        seen.update(kw, data=data_arg)
        return D.DistillResult(params={}, policy=policy.name, config=config, step=1,
                               history=({"step": 1},), train_losses=(0.0,))

    monkeypatch.setattr(models, "load", lambda name: name)
    monkeypatch.setattr(train, "distill", fake_distill)
    monkeypatch.setattr(evaluation, "cli_fidelity", lambda *a: {})
    assert distill_cli.main(fv) == 0
    assert (seen["data"], seen["held_out"]) == (str(data), str(held))


def test_pcformer_distill_is_callable():
    import pcformer
    assert callable(pcformer.distill) and pcformer.distill.DistillConfig is D.DistillConfig


def test_config_refuses_nonsense():
    with pytest.raises(ValueError):
        D.DistillConfig(output_loss="hinge")
    with pytest.raises(ValueError):
        D.DistillConfig(lr=0.0)
    with pytest.raises(ValueError):
        D.DistillConfig(length_buckets=(0,))
    assert D.DistillConfig(length_buckets=[12, 24]).length_buckets == (12, 24)  # hashable


def test_cli_parses_length_buckets():
    from absl import flags
    from pcformer.distill import cli as distill_cli
    def buckets(*argv):
        return distill_cli.config_from_flags(parsed_flags(*argv)).length_buckets
    assert buckets("--length_buckets=8,24") == (8, 24)
    assert buckets("--length_buckets=") == ()
    with pytest.raises(flags.IllegalFlagValueError, match="comma-separated integers"):
        parsed_flags("--length_buckets=six")


# ---------------------------------------------------------------- calibrated Quad init
def test_quad_fit_and_fold_reproduce_the_fitted_quadratic():
    rng = np.random.default_rng(0)
    h = rng.normal(-0.5, 1.5, size=(4000, 3)).astype(np.float32)
    coef = D.quad_fit(h)
    g = np.asarray(jax.nn.gelu(h, approximate=False))
    fitted = coef[:, 0] * h ** 2 + coef[:, 1] * h + coef[:, 2]
    assert np.mean((fitted - g) ** 2) < 0.2 * np.mean((quad_gelu(h) - g) ** 2)
    a, b, s, const = D.fold_quad(coef)
    folded = s * quad_gelu(a * h + b) + const
    np.testing.assert_allclose(folded, fitted, rtol=1e-4, atol=1e-4)
