"""Fidelity of a friendly student to the exact model on held-out sets (pcformer.distill_eval)."""

from __future__ import annotations

import numpy as np
import pytest

from pcformer import corpus_english as E
from pcformer import distill as D
from pcformer import distill_eval as V


@pytest.fixture(scope="module")
def small_split():
    cfg = E.SplitConfig(n_docstring_train=0, n_wordnet_train=64, n_in_domain=24,
                        n_out_domain=24)
    return E.make_split([], E.wordnet_rows(), cfg)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.slow
def test_search_agreement_counts_by_hand():
    def circle(degrees):
        a = np.radians(degrees)
        return np.stack([np.cos(a), np.sin(a)], axis=-1)

    t = circle([0, 10, 45, 90])            # nearest: 0->1, 1->0, 2->1 (35 deg), 3->2
    assert V.search_agreement(t, t) == {"top1": 1.0, "top5": 1.0}
    s = circle([0, 10, 45, 60])            # 2's nearest becomes 3 (15 deg); the rest stay
    assert V.search_agreement(s, t) == {"top1": 0.75, "top5": 1.0}  # 3 documents: top-5 hits


def test_search_against_documents_and_top5_misses():
    rng = np.random.default_rng(0)
    docs = _unit(rng.normal(size=(20, 8)))
    q = _unit(rng.normal(size=(6, 8)))
    assert V.search_agreement(q, q, docs, docs) == {"top1": 1.0, "top5": 1.0}
    far = _unit(-docs)                     # the student ranks documents in reverse
    got = V.search_agreement(q, q, far, docs)
    assert got["top1"] == 0.0 and got["top5"] == 0.0


def test_fidelity_of_identical_and_perturbed_embeddings():
    rng = np.random.default_rng(1)
    t = _unit(rng.normal(size=(30, 16)))
    same = V.fidelity(t, t)
    assert same["cos_min"] == pytest.approx(1.0) and same["top1"] == 1.0
    noisy = V.fidelity(_unit(t + 0.3 * rng.normal(size=t.shape)), t)
    assert noisy["cos_min"] < noisy["cos_mean"] < 1.0 and noisy["top1"] <= 1.0


@pytest.mark.slow
def test_exact_policy_matches_and_friendly_policy_does_not(tiny_bert, small_split):
    sets = small_split.eval_sets()
    exact = V.evaluate_stages(tiny_bert, "exact", {"before": tiny_bert.params}, sets, seq_len=12)
    assert [r["set"] for r in exact] == ["in_domain", "out_of_domain"]
    for r in exact:
        assert r["n"] == 24 and r["cos_min"] > 0.9999 and r["top1"] == 1.0 and r["top5"] == 1.0
    quad = V.evaluate_stages(tiny_bert, "mpcformer", {"before": tiny_bert.params}, sets,
                             seq_len=12)
    assert all(r["cos_mean"] < 0.999 for r in quad)
    table = V.format_table([dict(r, policy="mpcformer") for r in quad])
    assert "out_of_domain" in table and "mpcformer" in table and len(table.splitlines()) == 3


@pytest.mark.slow
def test_english_report_shape_and_stages(tiny_bert, small_split):
    import jax
    noisy = jax.tree_util.tree_map(lambda a: a * 1.3, tiny_bert.params)
    report = V.english_report(tiny_bert, "exact", noisy, seq_len=12, split=small_split)
    assert set(report) == {"in_domain", "out_of_domain"}
    for stages in report.values():
        assert stages["before"]["cos_min"] > 0.9999 and stages["before"]["n"] == 24
        assert stages["after"]["cos_mean"] < 0.9999


@pytest.mark.slow
def test_english_report_before_and_after_distillation(tiny_bert, small_split):
    cfg = D.DistillConfig(steps=8, batch_size=8, seq_len=12, lr=3e-3, warmup=2, eval_every=0,
                          progress=False, length_buckets=(), init="copy")
    res = D.distill(tiny_bert, "mpcformer", list(small_split.train), cfg,
                    held_out=list(small_split.in_domain))
    report = V.english_report(tiny_bert, "mpcformer", res.params, seq_len=12, split=small_split)
    assert set(report) == {"in_domain", "out_of_domain"}
    for stages in report.values():
        assert set(stages) == {"before", "after"}
        # 8 steps from the exact weights move the student toward the teacher
        assert stages["after"]["cos_mean"] > stages["before"]["cos_mean"]


def test_evaluation_refuses_causal_models():
    model = type("M", (), {"kind": "gpt2"})()
    with pytest.raises(ValueError, match="encoder"):
        V.evaluate_stages(model, "exact", {}, {})


# ---------------------------------------------------------------- hard-example weighting
@pytest.mark.slow
def test_hard_weights_follow_the_loss_with_mean_one_and_a_cap():
    import jax
    import jax.numpy as jnp
    loss = jnp.array([0.1, 0.2, 0.3, 0.4])
    assert np.allclose(D.hard_weights(loss, 0.0), 1.0)
    w = np.asarray(D.hard_weights(loss, 1.0))
    assert np.isclose(w.mean(), 1.0) and np.all(np.diff(w) > 0)
    assert np.allclose(w, loss / loss.mean())                  # below the cap: exactly loss/mean
    spiky = np.asarray(D.hard_weights(jnp.array([1e-3] * 15 + [10.0]), 1.0))
    assert np.isclose(spiky[-1], D.HARD_CAP) and np.isclose(spiky.mean(), 1.0)
    assert np.allclose(spiky[:-1], (16 - D.HARD_CAP) / 15)      # the rest share what is left
    grad = jax.grad(lambda x: jnp.sum(D.hard_weights(x, 2.0)))(loss)
    assert np.allclose(grad, 0.0)                               # weights carry no gradient


@pytest.mark.slow
def test_hard_examples_config_is_checked_and_changes_training():
    with pytest.raises(ValueError, match="hard_examples"):
        D.DistillConfig(hard_examples=-1.0)
    assert D.DistillConfig().hard_examples > 0                 # on by default
