"""Held-out evaluation. `evaluate`: a training run's loss parts and fidelity over its held-out
set. The rest: how close a distilled (or not yet distilled) friendly encoder is to the exact
one, on the in-domain and out-of-domain held-out sets of `pcformer.corpus_english`.

For each set of sentences and each stage (params under the policy: "before" = the exact model's
weights, "after" = the distilled ones), with embeddings L2-normalised:
- cos_mean / cos_min: cosine between the student's and the exact model's embedding of the same
  sentence (mean and worst over the set);
- top1: semantic search, each sentence querying the others (leave one out; or `documents`):
  the fraction of queries whose nearest document under the student is the exact model's nearest;
- top5: the fraction whose exact nearest document is among the student's five nearest.
Both sides of a search (query and documents) use the same model, as a user who distils for
private search would.

Public: `evaluate`, `embeddings`, `search_agreement`, `fidelity`, `evaluate_stages`, `format_table`,
`english_report`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import jax
import numpy as np

from .adapter import features_fn, make_student, output_kind, policy_name
from .data import map_batches, tokenize


def evaluate(eval_step, student_params, teacher_params, ids, mask, batch_size) -> dict:
    """Held-out means (and the minimum cosine) over all examples, batched with padding rows."""
    vals = map_batches(lambda idx: eval_step(student_params, teacher_params, ids[idx], mask[idx]),
                       ids.shape[0], batch_size)
    result = {k: float(np.mean(v)) for k, v in vals.items()}
    if "cosine" in vals:
        result["cosine_min"] = float(np.min(vals["cosine"]))
    return result


def embeddings(fn: Callable, params, ids: np.ndarray, mask: np.ndarray,
               batch: int = 32) -> np.ndarray:
    """L2-normalised sentence embeddings [n, d] of `fn` (features function: dict with "out"),
    in batches of one shape (the last padded by wrapping), so each stage compiles once."""
    e = map_batches(lambda idx: fn(params, ids[idx], mask[idx])["out"], ids.shape[0],
                    batch).astype(np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


def _ranking(queries: np.ndarray, docs: np.ndarray, leave_one_out: bool) -> np.ndarray:
    """Document indices by decreasing similarity, per query [n_q, n_d]."""
    sim = queries @ docs.T
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1, kind="stable")


def search_agreement(student_q, teacher_q, student_d=None, teacher_d=None) -> dict:
    """top1: student's nearest document == exact nearest; top5: exact nearest within the
    student's five nearest. Without documents, each query searches the other queries."""
    loo = student_d is None
    rs = _ranking(student_q, student_q if loo else student_d, loo)
    rt = _ranking(teacher_q, teacher_q if loo else teacher_d, loo)
    best = rt[:, :1]
    return {"top1": float(np.mean(rs[:, 0] == best[:, 0])),
            "top5": float(np.mean(np.any(rs[:, :5] == best, axis=1)))}


def fidelity(student: np.ndarray, teacher: np.ndarray) -> dict:
    """cos_mean, cos_min, top1, top5 of student vs teacher embeddings of the same sentences."""
    cos = np.sum(student * teacher, axis=-1)
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
            **search_agreement(student, teacher)}


def evaluate_stages(model, policy, stages: Mapping[str, object],
                    sets: Mapping[str, Sequence[str]], seq_len: int = 32,
                    batch: int = 32) -> list[dict]:
    """One row {set, stage, n, cos_mean, cos_min, top1, top5} per (set, stage): the friendly
    program of `model` under `policy` with each stage's params against the exact model."""
    if output_kind(model) != "embedding":
        raise ValueError("embedding fidelity needs an encoder (BERT-like) model")
    features = features_fn(model)
    teacher_fn = jax.jit(features)
    student_fn = jax.jit(make_student(features, policy))
    rows = []
    for set_name, texts in sets.items():
        ids, mask = tokenize(model.tokenizer, list(texts), seq_len)
        teacher = embeddings(teacher_fn, model.params, ids, mask, batch)
        for stage, params in stages.items():
            student = embeddings(student_fn, params, ids, mask, batch)
            rows.append({"set": set_name, "stage": stage, "n": len(texts),
                         **fidelity(student, teacher)})
    return rows


def format_table(rows: Sequence[dict], policy_col: bool = True) -> str:
    """A fixed-width table of `evaluate_stages` rows (each may carry a "policy")."""
    head = (f"{'policy':<10} " if policy_col else "") + (
        f"{'set':<14} {'stage':<24} {'n':>4} {'cos mean':>9} {'cos min':>8} {'top-1':>6} "
        f"{'top-5':>6}")
    lines = [head]
    for r in rows:
        ranks = "     -      -" if math.isnan(r["top1"]) else f"{r['top1']:>6.3f} {r['top5']:>6.3f}"
        lines.append((f"{r.get('policy', ''):<10} " if policy_col else "")
                     + f"{r['set']:<14} {r['stage']:<24} {r['n']:>4} {r['cos_mean']:>9.4f} "
                       f"{r['cos_min']:>8.4f} {ranks}")
    return "\n".join(lines)


def english_report(model, policy, params, seq_len: int = 32, split=None) -> dict:
    """{set: {stage: metrics}} for "before" (the exact weights under `policy`) and "after"
    (`params`) on the held-out sets of `split` (default: corpus_english.english_split())."""
    from pcformer import corpus_english
    split = split if split is not None else corpus_english.english_split()
    rows = evaluate_stages(model, policy, {"before": model.params, "after": params},
                           split.eval_sets(), seq_len)
    out: dict = {}
    for r in rows:
        out.setdefault(r["set"], {})[r["stage"]] = {k: r[k] for k in
                                                    ("n", "cos_mean", "cos_min", "top1", "top5")}
    return out


def cli_fidelity(model, policy, params, seq_len: int, stream=None) -> dict | None:
    """What `pcformer distill` adds to its report: `english_report` for encoders (None for causal
    models, whose output is not an embedding), its table written to `stream` (stderr) as well."""
    import sys
    if output_kind(model) != "embedding":
        return None
    report = english_report(model, policy, params, seq_len)
    rows = [dict(metrics, set=name, stage=stage, policy=policy_name(policy))
            for name, stages in report.items() for stage, metrics in stages.items()]
    print("\nfidelity to the exact model (held-out English, corpus_english):\n"
          + format_table(rows), file=stream or sys.stderr)
    return report
