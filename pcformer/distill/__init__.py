"""Distillation: recover the accuracy that friendly approximations cost.

    result = pcformer.distill(model, policy="mpcformer", data="english", config=DistillConfig())

The student is the friendly program of a model under a policy; the teacher is the exact model.
One room per job:

    config.py       DistillConfig (every setting, its default and its flag help), DistillResult
    adapter.py      the model adapter (features_fn), the student (make_student), policy queries
    data.py         tokenising, train / held-out split, length-bucketed batches of each step
    losses.py       per-example loss parts (hidden, attention, output), hard-example weights
    calibration.py  the calibrated start: Quad GeLU and 2Quad softmax fitted to the teacher
    programs.py     optimizer, jitted train / eval steps, the teacher's cached outputs
    checkpoint.py   resumable state, the saved Hugging Face folder + pcformer_policy.json
    evaluation.py   held-out metrics, in/out-of-domain fidelity of a distilled encoder
    train.py        the training loop, `distill(...)`
    cli.py          `pcformer distill` (flags derived from DistillConfig's fields)

BERT's parameter-tree layout (where the feed-forward and attention blocks are) lives with the
models: pcformer/models/bert_params.py.

Every name below is loaded on first use, so `import pcformer.distill` (and the command line's
help, which reads DistillConfig) starts without JAX; `pcformer.distill(...)` calls `distill`.
"""
from __future__ import annotations

import importlib
import sys
import types

_ROOMS = {
    "config": ("DistillConfig", "DistillError", "DistillResult", "parse_ints"),
    "adapter": ("changes_softmax", "features_fn", "gelu_of", "make_student", "output_kind",
                "policy_name", "softmax_of", "with_params"),
    "data": ("batch_plan", "bucket_bounds", "cut_features", "fitting_held_out", "map_batches",
             "split_data", "tokenize", "_epoch_batches"),
    "losses": ("HARD_CAP", "fidelity_parts", "hard_weights", "loss_parts", "total_loss"),
    "calibration": ("QUAD", "calibrated_init", "fit_quad_init", "fit_softmax_init", "fold_quad",
                    "quad_fit", "quad_softmax_scale"),
    "programs": ("CACHE_DTYPE", "frozen_labels", "make_optimizer", "step_programs",
                 "teacher_outputs", "_TEACHER_CACHE"),
    "checkpoint": ("POLICY_FILE", "STATE_FILE", "load_state", "save_checkpoint", "save_state"),
    "evaluation": ("evaluate",),
    "train": ("distill",),
}
# Names this module had before it became a package, kept so that callers work unchanged.
_RENAMED = {"_programs": ("programs", "step_programs"), "_total": ("losses", "total_loss"),
            "EMBEDDING_TABLES": ("pcformer.models.bert_params", "EMBEDDING_TABLES"),
            "mean_pool": ("pcformer.models.bert", "sentence_embedding")}
_WHERE = {name: (room, name) for room, names in _ROOMS.items() for name in names} | _RENAMED

__all__ = sorted(n for n in _WHERE if not n.startswith("_"))


class _DistillModule(types.ModuleType):
    """`pcformer.distill(model, policy, data, ...)` calls `distill`, while
    `pcformer.distill.DistillConfig` and the rest load from their rooms on first use."""

    def __call__(self, *args, **kwargs):
        return self.distill(*args, **kwargs)

    def __getattr__(self, name):
        if name not in _WHERE:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        room, attr = _WHERE[name]
        module = importlib.import_module(room if "." in room else f"{__name__}.{room}")
        value = getattr(module, attr)
        setattr(self, name, value)
        return value

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(_WHERE))


sys.modules[__name__].__class__ = _DistillModule
