"""Distillation losses, per example so that evaluation can weigh and slice them.

    loss = w_h * mean_l relMSE(hidden_l)            every hidden state, embeddings included
         + w_a * mean_l relMSE(attention_l)         only where the policy changes softmax
         + w_o * output loss                        1 - cos(sentence embeddings) for BERT-like,
                                                     KL(teacher || student) of logits for GPT-2

relMSE is the squared error over real (unpadded) tokens divided by the teacher's energy there, so
layers of different scale weigh alike and the number means the same for every model.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from .config import DistillConfig


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


def total_loss(parts, cfg: DistillConfig):
    return (cfg.hidden_weight * parts["hidden"] + cfg.attention_weight * parts["attention"]
            + cfg.output_weight * parts["output"])


def fidelity_parts(student_out, teacher_out, mask, kind):
    """Per-example fidelity: cosine of embeddings, or top-1 agreement of next-token logits."""
    s, t = student_out["out"], teacher_out["out"]
    if kind == "embedding":
        sn = s / jnp.maximum(jnp.linalg.norm(s, axis=-1, keepdims=True), 1e-12)
        tn = t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
        return {"cosine": jnp.sum(sn * tn, axis=-1)}
    m = mask.astype(jnp.float32)
    agree = (jnp.argmax(s, -1) == jnp.argmax(t, -1)).astype(jnp.float32)
    return {"top1": jnp.sum(agree * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)}
