"""The compiled programs of a run: the optimizer, the jitted train and eval steps (memoised per
model, policy and config), and the teacher's outputs cached once per set of tokens.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from pcformer.compiler import policies
from pcformer.models.bert_params import EMBEDDING_TABLES

from .adapter import changes_softmax, features_fn, make_student, output_kind
from .config import DistillConfig
from .data import map_batches
from .losses import fidelity_parts, hard_weights, loss_parts, total_loss


def _global_norm(tree):
    tree_norm = getattr(getattr(optax, "tree", None), "norm", None)
    return tree_norm(tree) if tree_norm is not None else optax.global_norm(tree)


def frozen_labels(params, cfg: DistillConfig):
    """"frozen" for embedding tables (when cfg.freeze_embeddings), "train" elsewhere. Why: the
    policies change nothing before the first LayerNorm, and the tables are most of MiniLM's
    parameters (30522 x 384): updating them costs time and invites overfitting a small corpus."""
    def label(path, _):
        names = {str(getattr(k, "key", getattr(k, "name", k))) for k in path}
        return "frozen" if cfg.freeze_embeddings and names & set(EMBEDDING_TABLES) else "train"
    return jax.tree_util.tree_map_with_path(label, params)


def make_optimizer(cfg: DistillConfig, params=None) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW on a warm-up + cosine-decay schedule; embedding tables
    frozen (set_to_zero) when cfg.freeze_embeddings and `params` shows where they are."""
    warmup = min(cfg.warmup, max(cfg.steps - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
        decay_steps=max(cfg.steps, warmup + 1), end_value=cfg.lr * cfg.end_lr_ratio)
    train = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                        optax.adamw(schedule, weight_decay=cfg.weight_decay))
    if params is None or not cfg.freeze_embeddings:
        return train
    labels = frozen_labels(params, cfg)
    if "frozen" not in jax.tree_util.tree_leaves(labels):
        return train
    return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels)


_PROGRAMS: dict = {}  # a few recent (model, policy, config) -> programs: no recompiling on reuse


def step_programs(model, policy, cfg: DistillConfig, student_fn=None):
    """Jitted (train_step, eval_step, optimizer) for this model, policy and config (memoised)."""
    program_cfg = dataclasses.replace(cfg, eval_every=0, save_every=0, progress=False, seed=0,
                                      teacher_cache_mb=0, held_out=0, length_buckets=())
    policy = policies.load(policy)
    key = (id(model), id(student_fn), policy, program_cfg)  # a frozen Policy hashes by its fields
    hit = _PROGRAMS.get(key)
    if hit is not None and hit[0] is model and hit[1] is student_fn:
        return hit[2]
    built = _build_programs(model, policy, program_cfg, student_fn)
    while len(_PROGRAMS) >= 4:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[key] = (model, student_fn, built)
    return built


def _build_programs(model, policy, cfg: DistillConfig, student_fn=None):
    kind = output_kind(model)
    out_loss = cfg.output_loss
    if out_loss == "auto":
        out_loss = "kl" if kind == "logits" else "cosine"
    use_attn = changes_softmax(policy)
    teacher = features_fn(model)
    student = student_fn if student_fn is not None else make_student(teacher, policy)
    optimizer = make_optimizer(cfg, model.params)

    def losses(sp, tp, ids, mask, t=None):
        # t: the teacher's outputs for this batch when cached (float16, see teacher_outputs)
        if t is None:
            t = teacher(tp, ids, mask)
        else:
            t = jax.tree_util.tree_map(
                lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, t)
        t = jax.lax.stop_gradient(t)
        s = student(sp, ids, mask)
        parts = loss_parts(s, t, mask, use_attention=use_attn, output_loss=out_loss)
        return parts, s, t

    def loss_fn(sp, tp, ids, mask, t):
        parts, _, _ = losses(sp, tp, ids, mask, t)
        mean_parts = {k: jnp.mean(v) for k, v in parts.items()}
        total = total_loss(parts, cfg)
        weighted = jnp.mean(hard_weights(total, cfg.hard_examples) * total)
        return weighted, (jnp.mean(total), mean_parts)  # reported: the plain mean

    @jax.jit
    def train_step(sp, opt_state, tp, ids, mask, t=None):
        (_, (loss, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            sp, tp, ids, mask, t)
        updates, opt_state = optimizer.update(grads, opt_state, sp)
        sp = optax.apply_updates(sp, updates)
        return sp, opt_state, loss, parts, _global_norm(grads)

    @jax.jit
    def eval_step(sp, tp, ids, mask):
        parts, s, t = losses(sp, tp, ids, mask)
        per = dict(parts, loss=total_loss(parts, cfg))
        per.update(fidelity_parts(s, t, mask, kind))
        return per

    return train_step, eval_step, optimizer


_TEACHER_CACHE: dict = {}  # one (model, tokens) -> teacher outputs: shared by the policies of a run


def teacher_outputs(model, ids: np.ndarray, mask: np.ndarray, batch_size: int) -> dict:
    """The exact model's features (hidden states, attentions, output) for every example, as host
    arrays with the example axis first, computed once per (model, tokens) and memoised.
    Why: the teacher is frozen, so its forward pass in every training step is repeated work
    (about a quarter of a step); over several epochs computing it once is cheaper. Floating
    outputs are held as float16 (`CACHE_DTYPE`): half the memory, so the whole corpus fits, and a
    rounding of 2^-11 relative, far below what the student's error (relMSE >= 1e-2) notices."""
    key = (id(model), ids.shape, hash(ids.tobytes()), hash(mask.tobytes()))
    hit = _TEACHER_CACHE.get(key)
    if hit is not None and hit[0] is model:
        return hit[1]
    fn = jax.jit(features_fn(model))
    cache = map_batches(lambda idx: jax.tree_util.tree_map(
        _to_cache, fn(model.params, ids[idx], mask[idx])), ids.shape[0], batch_size)
    _TEACHER_CACHE.clear()
    _TEACHER_CACHE[key] = (model, cache)
    return cache


CACHE_DTYPE = np.float16


def _to_cache(x) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(CACHE_DTYPE) if np.issubdtype(x.dtype, np.floating) else x


def cached_teacher(model, ids, mask, cfg: DistillConfig, steps_left: int) -> dict | None:
    """`teacher_outputs` on the training set when caching pays (the remaining steps see every
    example at least once) and fits (cfg.teacher_cache_mb), else None: the teacher runs live."""
    if cfg.teacher_cache_mb <= 0 or steps_left * cfg.batch_size < len(ids):
        return None
    if cache_bytes(model, ids, mask) > cfg.teacher_cache_mb * 2 ** 20:
        return None
    return teacher_outputs(model, ids, mask, cfg.batch_size)


def cache_bytes(model, ids, mask) -> int:
    """Bytes `teacher_outputs` would hold for these examples (from one example's shapes)."""
    shapes = jax.eval_shape(features_fn(model), model.params, ids[:1], mask[:1])
    per = sum(int(np.prod(x.shape)) * _to_cache(np.zeros((), x.dtype)).dtype.itemsize
              for x in jax.tree_util.tree_leaves(shapes))
    return per * ids.shape[0]
