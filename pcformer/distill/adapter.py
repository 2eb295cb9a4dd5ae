"""The model adapter: one function (params, input_ids, attention_mask) -> {"hidden", "attn",
"out"} for teacher and student alike, and what distillation asks of a policy.

The policy is always resolved by `pcformer.compiler.policies.load` (names, Policy objects,
dicts, JSON/YAML files): no names are special here.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Callable, Mapping

from pcformer.compiler import policies
from pcformer.models.bert import sentence_embedding


def _get(out, name):
    """A field of a model output that may be a mapping, an object or absent."""
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)


def output_kind(model) -> str:
    """"logits" for causal language models (GPT-2), "embedding" for encoders (BERT, MiniLM)."""
    kind = str(getattr(model, "kind", "bert")).lower()
    return "logits" if ("gpt" in kind or "causal" in kind or "lm" == kind) else "embedding"


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
            final = sentence_embedding(last if last is not None else hidden[-1], attention_mask)
        return {"hidden": hidden, "attn": attn, "out": final}

    return features


def make_student(features: Callable, policy) -> Callable:
    """The friendly (rewritten) program of `features` under `policy`: same signature, float JAX."""
    from pcformer.compiler import rewrite  # tracing machinery: only when a student is made
    return rewrite.friendly(features, policies.load(policy))


def policy_name(policy) -> str:
    """The name a policy spec resolves to (a policy file's stem unless it names itself)."""
    return policies.load(policy).name


def changes_softmax(policy) -> bool:
    """Whether the policy replaces softmax (then attention probabilities join the loss)."""
    return policies.load(policy).softmax not in (None, "exact")


def gelu_of(policy) -> str:
    """The policy's GeLU replacement name ("quad", "relu", ...); "exact" when left alone."""
    return policies.load(policy).gelu or "exact"


def softmax_of(policy) -> tuple[str, float]:
    """The policy's softmax replacement name and its 2Quad shift c."""
    p = policies.load(policy)
    return p.softmax or "exact", float(p.quad_c)


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
