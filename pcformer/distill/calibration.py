"""Calibrated initialisation: the student starts as close to the teacher as the policy allows.

MPCFormer's Quad GeLU (0.125x^2 + 0.25x + 0.5) and 2Quad softmax are far from what they replace
(cosine ~0.01 on MiniLM before training). Fitting them to the exact model's own activations and
folding the fit into the neighbouring (server-held) weights costs nothing under MPC and lets a
short distillation go much further.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.models import bert_params as bp

from .adapter import features_fn, gelu_of, make_student, softmax_of
from .config import DistillConfig


QUAD = (0.125, 0.25, 0.5)  # MPCFormer's Quad: c2 x^2 + c1 x + c0


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
    for path in bp.find_blocks(new, bp.is_mlp):
        pre = np.asarray(bp.mlp_pre_activation(inter, path))
        pre = pre.reshape(-1, pre.shape[-1])[valid]
        a, b, s, const = fold_quad(quad_fit(pre))
        d1, d2 = bp.mlp_denses(bp.at(new, path))
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
    paths = bp.find_blocks(new, bp.is_attention)
    if not paths:
        return params
    valid = np.asarray(attention_mask) > 0
    n_heads = int(getattr(getattr(model, "config", None), "num_attention_heads", 0) or 12)
    grid = np.asarray(grid, np.float64)
    hidden = jax.jit(student if student is not None else features_fn(model))
    for layer, path in enumerate(paths):
        out = hidden(jax.tree_util.tree_map(jnp.asarray, new), input_ids, attention_mask)
        h = np.asarray(out["hidden"][layer], np.float32)                   # input of this layer
        blk = bp.at(new, path)
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
