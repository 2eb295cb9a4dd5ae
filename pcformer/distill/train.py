"""The training loop: `distill(model, policy, data, config)`.

The student is the *friendly* program of a model under a policy (`pcformer.compiler.rewrite.
friendly`: GeLU, softmax, LayerNorm replaced by the policy's approximations, still plain float JAX
and differentiable); the teacher is the exact model with frozen parameters. The student's
parameters are trained with optax (AdamW, linear warm-up then cosine decay, global-norm clipping)
to match the teacher layer by layer and at the output, as MPCFormer does (losses.py).
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from pcformer.compiler import policies

from .adapter import with_params
from .calibration import calibrated_init
from .checkpoint import STATE_FILE, load_state, save_checkpoint, save_state
from .config import DistillConfig, DistillError, DistillResult
from .data import batch_plan, bucket_bounds, cut_features, split_data, tokenize
from .evaluation import evaluate
from .programs import cached_teacher, step_programs


class _Progress:
    """One stderr line rewritten in place: step, loss, speed."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0 = total, enabled, time.time()

    def update(self, step: int, loss: float, extra: str = ""):
        if not self.enabled:
            return
        rate = step / max(time.time() - self.t0, 1e-9)
        sys.stderr.write(f"\rdistill {step}/{self.total} loss {loss:.4f} "
                         f"({rate:.2f} step/s){extra}   ")
        sys.stderr.flush()

    def note(self, text: str):
        if self.enabled:
            sys.stderr.write("\n" + text + "\n")
            sys.stderr.flush()


def distill(model, policy="mpcformer", data="stdlib", config: DistillConfig | None = None, *,
            held_out=None, out_dir: str | None = None, resume: str | None = None,
            student_fn: Callable | None = None, **overrides) -> DistillResult:
    """Distil the friendly program of `model` under `policy` from the exact `model`.

    data / held_out: a list of strings, a text file with one example a line, or "stdlib" (the
    offline standard-library corpus); without `held_out`, `config.held_out` examples of `data`
    are split off with the seed. Keyword overrides (steps=..., lr=...) build the config.
    out_dir: the distilled model is saved there (HF layout + pcformer_policy.json) together with
    a resumable state; resume: a state file or a folder holding one, to continue a run.
    student_fn: the student program instead of `make_student(features_fn(model), policy)`.
    """
    cfg = dataclasses.replace(config or DistillConfig(), **overrides)
    policy = policies.load(policy)  # names, Policy objects, dicts, JSON/YAML files: one door
    if getattr(model, "tokenizer", None) is None:
        raise DistillError(f"{getattr(model, 'folder', None) or 'the model'} has no tokenizer "
                         "files; distillation reads text, so it needs one")
    train_texts, held_texts = split_data(data, held_out, cfg)
    train_ids, train_mask = tokenize(model.tokenizer, train_texts, cfg.seq_len)
    held_ids, held_mask = tokenize(model.tokenizer, held_texts, cfg.seq_len)
    train_step, eval_step, optimizer = step_programs(model, policy, cfg, student_fn)

    teacher_params = model.params
    params = jax.tree_util.tree_map(jnp.array, model.params)  # the student's own copy
    opt_state = optimizer.init(params)
    step = 0
    if resume is not None:
        params, opt_state, step = load_state(resume, params, opt_state)
    elif cfg.init != "copy":
        params = calibrated_init(model, policy, params, train_ids, train_mask, cfg, student_fn)
        opt_state = optimizer.init(params)

    bar = _Progress(cfg.steps, cfg.progress)
    history, train_losses = [], []

    def run_eval(at):
        metrics = dict(step=at, **evaluate(eval_step, params, teacher_params, held_ids,
                                           held_mask, cfg.batch_size))
        history.append(metrics)
        bar.note("eval " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in metrics.items()))

    if step == 0:  # the 'before' point of every run
        run_eval(0)
    state_file = os.path.join(out_dir, STATE_FILE) if out_dir else None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
    cache = cached_teacher(model, train_ids, train_mask, cfg, cfg.steps - step)
    lengths, bounds = train_mask.sum(axis=1), bucket_bounds(cfg)
    while step < cfg.steps:
        idx, length = batch_plan(lengths, cfg.batch_size, step, cfg.seed, bounds)
        t_out = None if cache is None else cut_features(
            jax.tree_util.tree_map(lambda a: a[idx], cache), length)
        params, opt_state, loss, parts, gnorm = train_step(
            params, opt_state, teacher_params, train_ids[idx, :length],
            train_mask[idx, :length], t_out)
        step += 1
        loss = float(loss)
        if not math.isfinite(loss):
            raise FloatingPointError(f"distillation loss became {loss} at step {step}; "
                                     "lower lr or raise clip_norm")
        train_losses.append(loss)
        bar.update(step, loss, f" hid {float(parts['hidden']):.3f} att "
                               f"{float(parts['attention']):.3f} out {float(parts['output']):.4f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            run_eval(step)
        if state_file and cfg.save_every and step % cfg.save_every == 0:
            save_state(state_file, params, opt_state, step)
    run_eval(step)
    student_model = with_params(model, params)
    if out_dir:
        save_state(state_file, params, opt_state, step)
        save_checkpoint(model, params, policy, out_dir, cfg, history[-1])
    return DistillResult(params=params, policy=policy.name, config=cfg, step=step,
                         history=tuple(history), train_losses=tuple(train_losses),
                         out_dir=out_dir, model=student_model)
