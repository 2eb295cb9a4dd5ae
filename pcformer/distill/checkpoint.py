"""What a run leaves on disk: a resumable training state (flax msgpack) and a Hugging Face-layout
folder with `pcformer_policy.json` (policy, teacher, settings, held-out metrics) that
`pcformer run --model=FOLDER` takes.
"""
from __future__ import annotations

import dataclasses
import json
import os

import flax.serialization
import numpy as np

from pcformer.compiler import policies

from .adapter import policy_name, with_params
from .config import DistillConfig

STATE_FILE = "distill_state.msgpack"
POLICY_FILE = "pcformer_policy.json"


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
            "policy_fields": policies.to_dict(policies.load(policy)),  # what it was trained for
            "teacher": _teacher_ref(model),
            "distill": dataclasses.asdict(cfg) if cfg is not None else None,
            "held_out": metrics}
    with open(os.path.join(out_dir, POLICY_FILE), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    return out_dir
