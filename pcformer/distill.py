"""Distillation: recover the accuracy that friendly approximations cost.

The student is the *friendly* program of a model under a policy (`pcformer.compiler.rewrite.
friendly`: GeLU, softmax, LayerNorm replaced by the policy's approximations, still plain float JAX
and differentiable); the teacher is the exact model with frozen parameters. The student's
parameters are trained with optax (AdamW, linear warm-up then cosine decay, global-norm clipping)
to match the teacher layer by layer and at the output, as MPCFormer does:

    loss = w_h * mean_l relMSE(hidden_l)            every hidden state, embeddings included
         + w_a * mean_l relMSE(attention_l)         only where the policy changes softmax
         + w_o * output loss                        1 - cos(sentence embeddings) for BERT-like,
                                                     KL(teacher || student) of logits for GPT-2

relMSE is the squared error over real (unpadded) tokens divided by the teacher's energy there, so
layers of different scale weigh alike and the number means the same for every model.

Public: `DistillConfig`, `DistillResult`, `distill(...)`, `features_fn(model)`, `make_student`,
`fit_quad_init`, `fit_softmax_init`, `calibrated_init`, `teacher_outputs`,
`evaluate(...)`; the command line is `pcformer.distill_cli`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
import types
from typing import Any, Callable, Mapping, Sequence

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pcformer import corpus, corpus_english

STATE_FILE = "distill_state.msgpack"
POLICY_FILE = "pcformer_policy.json"


class DistillError(ValueError):
    """Distillation input that cannot be used as given (settings, data, model): the CLI prints
    it as one line."""


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that decides a distillation run; two runs with equal configs and data agree."""

    steps: int = 2000
    batch_size: int = 16
    seq_len: int = 32
    lr: float = 3e-4                # MiniLM/mpcformer, 300 steps: 2e-4..5e-4 within 0.002 cos
    warmup: int = 25                # short: the calibrated start needs no long warm-up
    end_lr_ratio: float = 0.05      # the cosine decay ends at lr * end_lr_ratio
    weight_decay: float = 0.0       # AdamW's decay pulls toward 0, not toward the teacher
    clip_norm: float = 1.0
    seed: int = 0
    eval_every: int = 100           # held-out evaluation every this many steps (0: only at the end)
    held_out: int = 64              # held-out examples split off `data` when none are given
    hidden_weight: float = 1.0
    attention_weight: float = 1.0   # used only where the policy changes softmax
    output_weight: float = 1.0
    output_loss: str = "auto"       # "auto" | "cosine" | "mse" | "kl"
    hard_examples: float = 1.0      # weight each example's loss in proportion to loss ** this
                                    # (mean 1, capped: `hard_weights`): the worst examples pull
                                    # harder; 0: every example alike
    save_every: int = 0             # write a resumable state every this many steps (0: at the end)
    length_buckets: tuple[int, ...] = (12, 16, 24)  # shorter padded lengths for batches of short
                                    # examples (each one more compile; see batch_plan); (): none
    teacher_cache_mb: int = 3072    # cache the teacher's outputs on the training set when they
                                    # fit in this many MB and the run sees every example at least
                                    # once (steps * batch_size >= examples); 0: never
    freeze_embeddings: bool = True  # token/position embedding tables stay the teacher's
    init: str = "auto"              # "auto" (fit Quad GeLU / 2Quad softmax where used) | "fit"
                                    # (fit both whatever the policy) | "copy" (teacher's weights)
    calibration: int = 256          # training examples whose pre-activations the GeLU fit uses
    softmax_calibration: int = 64   # training examples whose attention scores the 2Quad fit uses
    progress: bool = True           # one updating stderr line with the loss

    def __post_init__(self):
        if self.steps < 0 or self.batch_size < 1 or self.seq_len < 2:
            raise DistillError("steps >= 0, batch_size >= 1 and seq_len >= 2 are required")
        if self.output_loss not in ("auto", "cosine", "mse", "kl"):
            raise DistillError(f"output_loss must be auto, cosine, mse or kl, not {self.output_loss!r}")
        if not self.lr > 0:
            raise DistillError("lr must be positive")
        if not self.hard_examples >= 0:
            raise DistillError("hard_examples must be >= 0")
        if self.init not in ("auto", "fit", "copy"):
            raise DistillError(f"init must be auto, fit or copy, not {self.init!r}")
        object.__setattr__(self, "length_buckets", tuple(self.length_buckets))  # lists from JSON
        if not all(isinstance(b, int) and b >= 1 for b in self.length_buckets):
            raise DistillError(f"length_buckets must be positive ints, not {self.length_buckets!r}")


@dataclasses.dataclass(frozen=True)
class DistillResult:
    """What a run produced: the student's parameters, its held-out history, where it was saved."""

    params: Any
    policy: str
    config: DistillConfig
    step: int
    history: tuple[dict, ...]       # one dict per evaluation: step, loss parts, fidelity metrics
    train_losses: tuple[float, ...]
    out_dir: str | None = None
    model: Any = None               # the model object carrying the distilled parameters

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


# --------------------------------------------------------------------------------------------
# Model adapter: one function (params, input_ids, attention_mask) -> {"hidden", "attn", "out"}.

def _get(out, name):
    """A field of a model output that may be a mapping, an object or absent."""
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def output_kind(model) -> str:
    """"logits" for causal language models (GPT-2), "embedding" for encoders (BERT, MiniLM)."""
    kind = str(getattr(model, "kind", "bert")).lower()
    return "logits" if ("gpt" in kind or "causal" in kind or "lm" == kind) else "embedding"


def mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean over real tokens, L2-normalised: the sentence embedding of all-MiniLM-L6-v2."""
    m = mask.astype(hidden.dtype)[..., None]
    pooled = jnp.sum(hidden * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def features_fn(model) -> Callable:
    """(params, input_ids, attention_mask) -> {"hidden": tuple, "attn": tuple, "out": array}.

    Uses `model.intermediates(params, ids, mask)` (pcformer.models.LoadedModel) when the model has
    it, else `model.module.apply(..., output_hidden_states=True, output_attentions=True)`. The
    output is the mean-pooled normalised embedding for encoders and the logits for causal models.
    """
    kind = output_kind(model)
    module = model.module
    intermediates = getattr(model, "intermediates", None)

    def features(params, input_ids, attention_mask):
        if intermediates is not None:
            out = intermediates(params, input_ids, attention_mask)
        else:
            out = module.apply({"params": params}, input_ids, attention_mask,
                               output_hidden_states=True, output_attentions=True)
        hidden = tuple(_get(out, "hidden_states") or ())
        attn = tuple(_get(out, "attentions") or ())
        if kind == "logits":
            final = _get(out, "logits")
        else:
            last = _get(out, "last_hidden_state")
            final = mean_pool(last if last is not None else hidden[-1], attention_mask)
        return {"hidden": hidden, "attn": attn, "out": final}

    return features


def make_student(features: Callable, policy) -> Callable:
    """The friendly (rewritten) program of `features` under `policy`: same signature, float JAX."""
    from pcformer.compiler import rewrite
    return rewrite.friendly(features, policy)


def policy_name(policy) -> str:
    if isinstance(policy, str):
        return policy
    return str(getattr(policy, "name", policy))


def changes_softmax(policy) -> bool:
    """Whether the policy replaces softmax (then attention probabilities join the loss)."""
    name = policy_name(policy)
    try:
        from pcformer.compiler import policies
        p = policies.get(policy)
    except Exception:
        return name != "exact"
    for field in ("softmax", "softmax_approx", "attention"):
        value = getattr(p, field, None)
        if value is not None:
            return str(getattr(value, "name", value)) not in ("exact", "softmax", "none", "None")
    return name != "exact"


# --------------------------------------------------------------------------------------------
# Calibrated initialisation: make Quad GeLU start as the best quadratic, not 0.125x^2+0.25x+0.5.

QUAD = (0.125, 0.25, 0.5)  # MPCFormer's Quad: c2 x^2 + c1 x + c0


def gelu_of(policy) -> str:
    """The policy's GeLU replacement name ("quad", "relu", ...), "exact" if unknown."""
    try:
        from pcformer.compiler import policies
        return str(policies.get(policy).gelu or "exact")
    except Exception:
        return {"mpcformer": "quad", "paper": "relu", "puma": "puma"}.get(policy_name(policy),
                                                                           "exact")


def quad_fit(h: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Per column of h [n, k]: the least-squares (alpha, beta, gamma) of alpha h^2 + beta h + gamma
    against exact GeLU on those samples; returns [k, 3]."""
    h = np.asarray(h, np.float64)
    w = np.ones(h.shape[0]) if weight is None else np.asarray(weight, np.float64)
    g = np.asarray(jax.nn.gelu(jnp.asarray(h, jnp.float32), approximate=False), np.float64)
    mom = [np.einsum("n,nk->k", w, h ** p) for p in range(5)]           # sum w h^p
    rhs = [np.einsum("n,nk->k", w, g * h ** p) for p in range(3)]        # sum w g h^p
    a = np.stack([np.stack([mom[4], mom[3], mom[2]], -1),
                  np.stack([mom[3], mom[2], mom[1]], -1),
                  np.stack([mom[2], mom[1], mom[0]], -1)], -2)           # [k, 3, 3]
    b = np.stack([rhs[2], rhs[1], rhs[0]], -1)                            # [k, 3]
    a = a + 1e-6 * np.eye(3) * np.maximum(mom[0], 1.0)[:, None, None]
    return np.linalg.solve(a, b[..., None])[..., 0]


def fold_quad(coef: np.ndarray, min_alpha: float = 1e-3):
    """(a, b, s, const) per neuron such that s * Quad(a h + b) = alpha h^2 + beta h + const, with
    const the part the next layer's bias must absorb; |s| = 1 keeps fixed-point ranges tame."""
    c2, c1, c0 = QUAD
    alpha, beta, gamma = coef[:, 0], coef[:, 1], coef[:, 2]
    alpha = np.where(np.abs(alpha) < min_alpha, np.where(alpha < 0, -min_alpha, min_alpha), alpha)
    s = np.sign(alpha)
    a = np.sqrt(alpha / (s * c2))
    # s (c2 a^2 h^2 + (2 c2 a b + c1 a) h + c2 b^2 + c1 b + c0) = alpha h^2 + beta h + ...
    b = (beta / s - c1 * a) / (2 * c2 * a)
    quad_const = s * (c2 * b * b + c1 * b + c0)
    return a, b, s, gamma - quad_const


def _find_blocks(tree, is_block, path=()):
    """Paths of every sub-dict of a parameter tree for which `is_block` holds, in the order they
    appear (shorter keys first, so layer_2 comes before layer_10)."""
    found = []
    if isinstance(tree, Mapping):
        if is_block(tree):
            found.append(path)
        for k in sorted(tree, key=lambda k: (len(str(k)), str(k))):
            found.extend(_find_blocks(tree[k], is_block, path + (k,)))
    return found


def _is_mlp(tree) -> bool:
    """A BERT feed-forward block: 'intermediate/dense' and 'output'."""
    return "intermediate" in tree and "output" in tree and "dense" in tree["intermediate"]


def _is_attention(tree) -> bool:
    """A BERT self-attention block: 'query' and 'key' Dense layers."""
    return "query" in tree and "key" in tree and "kernel" in tree["query"]


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def fit_quad_init(model, params, input_ids, attention_mask):
    """BERT parameters in which every Quad GeLU starts as the best quadratic fit of GeLU over the
    pre-activations the exact model produces on the given tokens (folded into the two dense
    layers around it). Why: MPCFormer's Quad is far from GeLU (cosine ~0.01 on MiniLM before
    training); the fitted start is much closer, so a short distillation goes much further."""
    _, state = model.module.apply({"params": params}, input_ids, attention_mask,
                                  capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    valid = np.asarray(attention_mask).reshape(-1) > 0
    new = jax.tree_util.tree_map(np.array, params)
    for path in _find_blocks(new, _is_mlp):
        pre = np.asarray(_at(inter, path)["intermediate"]["dense"]["__call__"][0])
        pre = pre.reshape(-1, pre.shape[-1])[valid]
        a, b, s, const = fold_quad(quad_fit(pre))
        block = _at(new, path)
        d1, d2 = block["intermediate"]["dense"], block["output"]["dense"]
        d2["bias"] = (d2["bias"] + const @ d2["kernel"]).astype(np.float32)
        d1["kernel"] = (d1["kernel"] * a[None, :]).astype(np.float32)
        d1["bias"] = (d1["bias"] * a + b).astype(np.float32)
        d2["kernel"] = (d2["kernel"] * s[:, None]).astype(np.float32)
    return jax.tree_util.tree_map(jnp.asarray, new)


def quad_softmax_scale(scores, valid, c: float, grid) -> np.ndarray:
    """Per head: the scale s in `grid` for which 2Quad(s x) = (s x + c)^2 / sum is closest (mean
    squared error over real query/key pairs) to softmax(x). scores [B, H, S, S], valid [B, S].
    Why a scale: (s x + c)^2 / sum = (x + c/s)^2 / sum, so s sets 2Quad's effective shift
    (its temperature) while c stays the protocol's public constant; s folds into the query."""
    x = jnp.asarray(scores, jnp.float32)
    keys = jnp.asarray(valid, jnp.float32)[:, None, None, :]
    pair = keys * jnp.asarray(valid, jnp.float32)[:, None, :, None]
    ref = jax.nn.softmax(jnp.where(keys > 0, x, -1e9), axis=-1) * keys

    def err(s):
        q = jnp.square(s * x + c) * keys
        p = q / jnp.maximum(jnp.sum(q, -1, keepdims=True), 1e-12)
        return jnp.sum(jnp.square(p - ref) * pair, axis=(0, 2, 3))      # [H]

    errs = jax.lax.map(err, jnp.asarray(grid, jnp.float32))              # [G, H]
    return np.asarray(grid)[np.asarray(jnp.argmin(errs, axis=0))]


def fit_softmax_init(model, params, input_ids, attention_mask, student: Callable | None = None,
                     c: float = 5.0, grid: Sequence[float] = tuple(np.geomspace(0.05, 2.0, 40))):
    """BERT parameters in which each head's query (kernel and bias) is scaled by the s that makes
    2Quad attention closest to the exact softmax on the given tokens (see quad_softmax_scale).
    With `student` (the friendly program), its own hidden states after the earlier layers' fits
    feed each layer's fit, so later layers are fitted to what they will actually see. Costs nothing under MPC:
    the scale lives in public-to-the-server weights."""
    new = jax.tree_util.tree_map(np.array, params)
    paths = _find_blocks(new, _is_attention)
    if not paths:
        return params
    valid = np.asarray(attention_mask) > 0
    n_heads = int(getattr(getattr(model, "config", None), "num_attention_heads", 0) or 12)
    grid = np.asarray(grid, np.float64)
    hidden = jax.jit(student if student is not None else features_fn(model))
    for layer, path in enumerate(paths):
        out = hidden(jax.tree_util.tree_map(jnp.asarray, new), input_ids, attention_mask)
        h = np.asarray(out["hidden"][layer], np.float32)                   # input of this layer
        blk = _at(new, path)
        q = h @ blk["query"]["kernel"] + blk["query"]["bias"]
        k = h @ blk["key"]["kernel"] + blk["key"]["bias"]
        b, t, d = q.shape
        q = q.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)
        k = k.reshape(b, t, n_heads, d // n_heads).transpose(0, 2, 1, 3)
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // n_heads)
        s = quad_softmax_scale(scores, valid, c, grid)                       # [H]
        cols = np.repeat(s, d // n_heads)
        blk["query"]["kernel"] = (blk["query"]["kernel"] * cols[None, :]).astype(np.float32)
        blk["query"]["bias"] = (blk["query"]["bias"] * cols).astype(np.float32)
    return jax.tree_util.tree_map(jnp.asarray, new)


def softmax_of(policy) -> tuple[str, float]:
    """The policy's softmax replacement name and its 2Quad shift c ("exact", 5.0 if unknown)."""
    try:
        from pcformer.compiler import policies
        p = policies.get(policy)
        return str(p.softmax or "exact"), float(getattr(p, "quad_c", 5.0))
    except Exception:
        return {"mpcformer": "2quad", "paper": "2quad"}.get(policy_name(policy), "exact"), 5.0


def calibrated_init(model, policy, params, ids, mask, cfg: DistillConfig,
                    student_fn: Callable | None = None):
    """The student's starting parameters: Quad GeLU fitted (when the policy uses it, or always
    with init="fit"), then each head's 2Quad temperature fitted layer by layer on the student's
    own activations. Measured on MiniLM/mpcformer (100 held-out sentences): mean cosine to the
    exact model -0.01 with the teacher's weights, 0.70 with the GeLU fit, 0.81 with both."""
    fit_all = cfg.init == "fit"
    if fit_all or gelu_of(policy) == "quad":
        n = min(cfg.calibration, len(ids))
        params = fit_quad_init(model, params, ids[:n], mask[:n])
    softmax, c = softmax_of(policy)
    if (fit_all or softmax == "2quad") and cfg.softmax_calibration > 0:
        n = min(cfg.softmax_calibration, len(ids))
        student = student_fn if student_fn is not None else make_student(features_fn(model),
                                                                          policy)
        params = fit_softmax_init(model, params, ids[:n], mask[:n], student=student, c=c)
    return params


# --------------------------------------------------------------------------------------------
# Losses: per example, so that evaluation can weigh and slice them.

def _rel_mse(s, t, weight, axes):
    err = jnp.sum(weight * jnp.square(s - t), axis=axes)
    energy = jnp.sum(weight * jnp.square(t), axis=axes)
    return err / jnp.maximum(energy, 1e-9)


def loss_parts(student_out, teacher_out, mask, *, use_attention: bool, output_loss: str):
    """Per-example loss parts [B]: hidden, attention, output."""
    m = mask.astype(jnp.float32)
    b = m.shape[0]
    zero = jnp.zeros((b,), jnp.float32)
    hid = [_rel_mse(s, t, m[:, :, None], (1, 2))
           for s, t in zip(student_out["hidden"], teacher_out["hidden"])]
    hidden = jnp.mean(jnp.stack(hid), axis=0) if hid else zero
    att = zero
    if use_attention and student_out["attn"]:
        w = m[:, None, :, None] * m[:, None, None, :]
        per = [_rel_mse(s, t, w, (1, 2, 3))
               for s, t in zip(student_out["attn"], teacher_out["attn"])]
        att = jnp.mean(jnp.stack(per), axis=0)
    s, t = student_out["out"], teacher_out["out"]
    if output_loss == "cosine":
        sn = s / jnp.maximum(jnp.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
        tn = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
        out = 1.0 - jnp.sum(sn * tn, axis=-1)
    elif output_loss == "mse":
        axes = tuple(range(1, s.ndim))
        w = m.reshape(m.shape + (1,) * (s.ndim - 2)) if s.ndim > 2 else 1.0
        out = _rel_mse(s, t, w, axes)
    else:  # kl over real positions, teacher || student
        lt = jax.nn.log_softmax(t, axis=-1)
        ls = jax.nn.log_softmax(s, axis=-1)
        kl = jnp.sum(jnp.exp(lt) * (lt - ls), axis=-1)
        out = jnp.sum(kl * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
    return {"hidden": hidden, "attention": att, "output": out}


HARD_CAP = 4.0  # no example weighs more than this many times the batch's mean weight


def hard_weights(per_example: jax.Array, power: float) -> jax.Array:
    """Per-example loss weights (mean 1, no gradient) proportional to loss ** power, none above
    HARD_CAP (water-filling: capped examples get HARD_CAP, the rest share what is left in
    proportion). Why: a uniform mean is ruled by the many easy examples, so the worst-matched ones
    (the minimum cosine) improve last; weighting by the current error spends the steps where the
    student is furthest from the teacher. The cap keeps one outlier from taking over a batch."""
    if power == 0:
        return jnp.ones_like(per_example)
    loss = jax.lax.stop_gradient(per_example)
    r = (loss / jnp.maximum(jnp.max(loss), 1e-30)) ** power      # in [0, 1]: no overflow
    n = r.shape[0]
    desc = -jnp.sort(-r)
    k = jnp.arange(n)                                             # k largest capped
    rest = jnp.cumsum(desc[::-1])[::-1]                           # sum of desc[k:]
    scale = (n - k * HARD_CAP) / jnp.maximum(rest, 1e-30)
    ok = (scale * desc <= HARD_CAP * (1 + 1e-6)) & (n - k * HARD_CAP > 0)
    return jnp.minimum(scale[jnp.argmax(ok)] * r, HARD_CAP)


def _total(parts, cfg: DistillConfig):
    return (cfg.hidden_weight * parts["hidden"] + cfg.attention_weight * parts["attention"]
            + cfg.output_weight * parts["output"])


def _fidelity(student_out, teacher_out, mask, kind):
    """Per-example fidelity: cosine of embeddings, or top-1 agreement of next-token logits."""
    s, t = student_out["out"], teacher_out["out"]
    if kind == "embedding":
        sn = s / jnp.maximum(jnp.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
        tn = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
        return {"cosine": jnp.sum(sn * tn, axis=-1)}
    m = mask.astype(jnp.float32)
    agree = (jnp.argmax(s, -1) == jnp.argmax(t, -1)).astype(jnp.float32)
    return {"top1": jnp.sum(agree * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)}


# --------------------------------------------------------------------------------------------
# Data.

def tokenize(tokenizer, texts: Sequence[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask [N, seq_len] (int32), right-padded and truncated."""
    if getattr(tokenizer, "pad_token", "") is None:  # GPT-2 has no pad token: pad with EOS
        tokenizer = copy.copy(tokenizer)
        tokenizer.pad_token = tokenizer.eos_token
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=seq_len,
                    return_tensors="np")
    return (np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32))


def bucket_bounds(cfg: DistillConfig) -> tuple[int, ...]:
    """The padded lengths training batches may have: cfg.length_buckets below seq_len, then
    seq_len itself, ascending."""
    return tuple(sorted({b for b in cfg.length_buckets if b < cfg.seq_len})) + (cfg.seq_len,)


def _epoch_batches(lengths: np.ndarray, batch_size: int, epoch: int, seed: int,
                   bounds: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """One epoch's batches (examples, padded length), in training order. Each example goes to
    the shortest bucket that holds its tokens; a bucket's leftover examples (less than a batch)
    move up to the next bucket; the last bucket's partial batch is filled from its start."""
    perm = np.random.default_rng([seed, epoch]).permutation(len(lengths))
    bucket = np.searchsorted(np.asarray(bounds), lengths[perm])    # smallest bound >= length
    batches, carry = [], perm[:0]
    for k, bound in enumerate(bounds):
        pool = np.concatenate([carry, perm[bucket == k]])
        full = len(pool) // batch_size
        batches += [(pool[i * batch_size:(i + 1) * batch_size], bound) for i in range(full)]
        carry = pool[full * batch_size:]
        if k == len(bounds) - 1 and len(carry):
            batches.append((np.resize(np.concatenate([carry, pool]), batch_size), bound))
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(batches))
    return [batches[i] for i in order]


def batch_plan(lengths: np.ndarray, batch_size: int, step: int, seed: int,
               bounds: Sequence[int]) -> tuple[np.ndarray, int]:
    """The examples of training step `step` and the length to pad them to: epochs of a seeded
    permutation, batched within length buckets (`_epoch_batches`). A pure function of its
    arguments, so a resumed run sees exactly the batches it would have seen. Why buckets: the
    corpus's sentences average 19 tokens of 32, so batches of short ones cut to 16 tokens spend
    half the compute on padding instead of two thirds."""
    lengths = np.asarray(lengths)
    per_epoch = len(_epoch_batches(lengths, batch_size, 0, seed, bounds))  # same every epoch
    epoch, index = divmod(step, per_epoch)
    idx, length = _epoch_batches(lengths, batch_size, epoch, seed, bounds)[index]
    return idx.astype(np.int64), int(length)


def cut_features(features: dict, length: int) -> dict:
    """Features computed at a longer padded length, cut to `length` tokens. Exact for right
    padding: pad keys are masked out of attention, so real tokens never see them."""
    out = features["out"]
    return {"hidden": tuple(h[:, :length] for h in features["hidden"]),
            "attn": tuple(a[..., :length, :length] for a in features["attn"]),
            "out": out[:, :length] if out.ndim == 3 else out}


def fitting_held_out(n_examples: int, wanted: int) -> int:
    """Held-out examples for a data set of `n_examples` distinct ones: `wanted` when at least as
    many remain for training, else a fifth (at least one) - a user's small file just works."""
    if n_examples < 2:
        raise DistillError(f"{n_examples} distinct example(s): distillation needs at least 2 "
                        f"(one to train on, one held out)")
    return wanted if n_examples >= 2 * wanted else max(1, n_examples // 5)


def _split_data(data, held_out, cfg: DistillConfig):
    texts = corpus_english.read_texts(data)
    if held_out is not None:
        return texts, corpus_english.read_texts(held_out)
    if len(set(texts)) <= cfg.held_out:
        raise DistillError(f"{len(set(texts))} distinct examples cannot give {cfg.held_out} held-out "
                        f"ones (--held_out={fitting_held_out(len(set(texts)), cfg.held_out)} would fit)")
    return corpus.split(texts, len(set(texts)) - cfg.held_out, cfg.held_out, cfg.seed)


# --------------------------------------------------------------------------------------------
# Training.

def _global_norm(tree):
    tree_norm = getattr(getattr(optax, "tree", None), "norm", None)
    return tree_norm(tree) if tree_norm is not None else optax.global_norm(tree)


EMBEDDING_TABLES = ("word_embeddings", "position_embeddings", "token_type_embeddings", "wte", "wpe")


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


def _programs(model, policy, cfg: DistillConfig, student_fn=None):
    """Jitted (train_step, eval_step, optimizer) for this model, policy and config (memoised)."""
    program_cfg = dataclasses.replace(cfg, eval_every=0, save_every=0, progress=False, seed=0,
                                      teacher_cache_mb=0, held_out=0, length_buckets=())
    key = (id(model), id(student_fn), policy, program_cfg)  # names and frozen Policy hash
    hit = _PROGRAMS.get(key)
    if hit is not None and hit[0] is model and hit[1] is student_fn:
        return hit[2]
    programs = _build_programs(model, policy, program_cfg, student_fn)
    while len(_PROGRAMS) >= 4:
        _PROGRAMS.pop(next(iter(_PROGRAMS)))
    _PROGRAMS[key] = (model, student_fn, programs)
    return programs


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
        total = _total(parts, cfg)
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
        per = dict(parts, loss=_total(parts, cfg))
        per.update(_fidelity(s, t, mask, kind))
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
    n = ids.shape[0]
    parts = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n  # one shape: pad the last batch by wrapping
        out = jax.tree_util.tree_map(_to_cache, fn(model.params, ids[idx], mask[idx]))
        keep = min(batch_size, n - start)
        parts.append(jax.tree_util.tree_map(lambda a: a[:keep], out))
    cache = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
    _TEACHER_CACHE.clear()
    _TEACHER_CACHE[key] = (model, cache)
    return cache


CACHE_DTYPE = np.float16


def _to_cache(x) -> np.ndarray:
    x = np.asarray(x)
    return x.astype(CACHE_DTYPE) if np.issubdtype(x.dtype, np.floating) else x


def _cache_bytes(model, ids, mask) -> int:
    """Bytes `teacher_outputs` would hold for these examples (from one example's shapes)."""
    shapes = jax.eval_shape(features_fn(model), model.params, ids[:1], mask[:1])
    per = sum(int(np.prod(x.shape)) * _to_cache(np.zeros((), x.dtype)).dtype.itemsize
              for x in jax.tree_util.tree_leaves(shapes))
    return per * ids.shape[0]


def evaluate(eval_step, student_params, teacher_params, ids, mask, batch_size) -> dict:
    """Held-out means (and the minimum cosine) over all examples, batched with padding rows."""
    n = ids.shape[0]
    per: dict[str, list] = {}
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size) % n  # pad the last batch by wrapping
        out = eval_step(student_params, teacher_params, ids[idx], mask[idx])
        keep = min(batch_size, n - start)
        for k, v in out.items():
            per.setdefault(k, []).append(np.asarray(v)[:keep])
    vals = {k: np.concatenate(v) for k, v in per.items()}
    result = {k: float(np.mean(v)) for k, v in vals.items()}
    if "cosine" in vals:
        result["cosine_min"] = float(np.min(vals["cosine"]))
    return result


def _state_path(path: str) -> str:
    return os.path.join(path, STATE_FILE) if os.path.isdir(path) else path


def save_state(path: str, params, opt_state, step: int) -> None:
    """Write params + optimizer state + step (flax msgpack), atomically."""
    blob = flax.serialization.to_bytes({"params": params, "opt_state": opt_state,
                                        "step": np.int64(step)})
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)


def load_state(path: str, params, opt_state):
    """(params, opt_state, step) from a state written by `save_state`, shaped like the targets."""
    with open(_state_path(path), "rb") as f:
        restored = flax.serialization.from_bytes(
            {"params": params, "opt_state": opt_state, "step": np.int64(0)}, f.read())
    return restored["params"], restored["opt_state"], int(restored["step"])


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


def with_params(model, params):
    """A copy of the model object carrying `params` (dataclass replace or shallow copy)."""
    if dataclasses.is_dataclass(model):
        try:
            return dataclasses.replace(model, params=params)
        except (TypeError, ValueError):
            pass
    new = copy.copy(model)
    object.__setattr__(new, "params", params)
    return new


def _teacher_ref(model) -> str | None:
    """How to load the teacher again: a named model ("minilm") or its folder."""
    from pcformer import models
    folder = getattr(model, "folder", None)
    if folder is None:
        return None
    for name, find in models.NAMED.items():
        try:
            if os.path.samefile(find(), folder):
                return name
        except OSError:
            continue
    return str(folder)


def save_checkpoint(model, params, policy, out_dir: str, cfg: DistillConfig | None = None,
                    metrics: dict | None = None) -> str:
    """Hugging Face-layout folder (via `pcformer.models.save`) plus `pcformer_policy.json`."""
    from pcformer import models
    os.makedirs(out_dir, exist_ok=True)
    saved = with_params(model, params)
    if not hasattr(getattr(saved, "tokenizer", None), "save_pretrained"):
        saved = dataclasses.replace(saved, tokenizer=None)  # a stand-in tokenizer is not saved
    models.save(saved, out_dir)
    meta = {"policy": policy_name(policy),
            "teacher": _teacher_ref(model),
            "distill": dataclasses.asdict(cfg) if cfg is not None else None,
            "held_out": metrics}
    with open(os.path.join(out_dir, POLICY_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return out_dir


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
    if getattr(model, "tokenizer", None) is None:
        raise DistillError(f"{getattr(model, 'folder', None) or 'the model'} has no tokenizer "
                         "files; distillation reads text, so it needs one")
    train_texts, held_texts = _split_data(data, held_out, cfg)
    train_ids, train_mask = tokenize(model.tokenizer, train_texts, cfg.seq_len)
    held_ids, held_mask = tokenize(model.tokenizer, held_texts, cfg.seq_len)
    train_step, eval_step, optimizer = _programs(model, policy, cfg, student_fn)

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
    cache = None
    if (cfg.teacher_cache_mb > 0 and (cfg.steps - step) * cfg.batch_size >= len(train_ids)
            and _cache_bytes(model, train_ids, train_mask) <= cfg.teacher_cache_mb * 2 ** 20):
        cache = teacher_outputs(model, train_ids, train_mask, cfg.batch_size)
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
    return DistillResult(params=params, policy=policy_name(policy), config=cfg, step=step,
                         history=tuple(history), train_losses=tuple(train_losses),
                         out_dir=out_dir, model=student_model)


def parse_ints(text: str) -> tuple[int, ...]:
    """A command line's comma-separated ints ("12,16,24"); "" is none."""
    return tuple(int(x) for x in str(text).split(",") if x.strip())


class _CallableModule(types.ModuleType):
    """`pcformer.distill(model, policy, data, ...)` calls `distill` (pcformer imports this module
    lazily as the attribute `distill`), while `pcformer.distill.DistillConfig` stays reachable."""

    def __call__(self, *args, **kwargs) -> DistillResult:
        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

