"""Private image classification (ViT): the client's image, the server's ViTForImageClassification.

The server (party 0) owns the weights, the client (party 1) the pixels; the class logits are
revealed to the client only. Fidelity is measured as for embeddings (against the rewritten
program in float JAX and against the exact model) plus whether the private top-1 class is the
exact model's.

Input: `pixel_values` as the model takes them, i.e. after the checkpoint's image processor
(resized to image_size, normalised): a .npy file of shape [C, H, W] or [1, C, H, W] (`load_image`).
No image decoding library is a dependency; convert a PNG/JPEG once with the processor that goes
with the checkpoint and `numpy.save`.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from . import api
from .config import MPCConfig
from .inference import (CLIENT, SERVER, InputError, _noop, _policy, _policy_name, _split_xla,
                        _watch, errors, exact_reference)
from .report import Report


@dataclasses.dataclass
class ClassificationJob:
    """A finished private classification run (ViT)."""

    policy: str
    config: MPCConfig
    seq_len: int                 # tokens the encoder saw: patches + the class token
    program: Any
    report: Report
    private: np.ndarray          # class logits revealed to the client [1, num_labels]
    plaintext: np.ndarray
    exact: np.ndarray
    fidelity: dict               # vs_plaintext / vs_exact errors, and top-1 agreement
    times: dict
    labels: tuple = ()           # class names (config.json id2label), if the checkpoint has them

    @property
    def static_report(self) -> Report:
        return self.program.cost

    def label(self, logits=None) -> str:
        k = int(np.argmax(self.private if logits is None else logits))
        return self.labels[k] if k < len(self.labels) else f"class {k}"


def load_image(path, model) -> np.ndarray:
    """`pixel_values` [1, C, H, W] float32 from a .npy file, checked against the model's
    num_channels and image_size before anything is compiled."""
    path = Path(path)
    if path.suffix != ".npy":
        raise InputError(f"--image={path}: give the pixel values as a .npy file ([C, H, W], after "
                         f"the checkpoint's image processor); other image formats are not read")
    if not path.is_file():
        raise InputError(f"--image={path}: no such file")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"--image={path} is not a numeric .npy array ({e})") from None
    return check_pixels(x, model, str(path))


def check_pixels(x, model, where: str = "the image") -> np.ndarray:
    c = model.config
    want = (c.num_channels, c.image_size, c.image_size)
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1 or tuple(x.shape[1:]) != want:
        raise InputError(f"{where} has shape {tuple(np.shape(x))}; this model takes pixel values "
                         f"[{', '.join(map(str, want))}] (channels, height, width)")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise InputError(f"{where} holds non-numeric, NaN or infinite values")
    return x.astype(np.float32)


def _labels(model) -> tuple:
    raw = model.hf_config if isinstance(model.hf_config, dict) else {}
    id2label = raw.get("id2label") or {}
    return tuple(str(id2label.get(str(k), id2label.get(k, f"class {k}")))
                 for k in range(model.config.num_labels))


def private_classification(model, pixels, *, policy="mpcformer", config: MPCConfig = MPCConfig(),
                           step: Callable[[str], None] = _noop,
                           detail: Callable[[str], None] = _noop) -> ClassificationJob:
    """The client's image classified privately under `policy`; `pixels` [1, C, H, W]."""
    from .models import vit
    if model.kind != "vit" or not isinstance(model.module, vit.ViTForImageClassification):
        raise InputError(f"private classification needs a ViTForImageClassification checkpoint; "
                         f"this one is {type(model.module).__name__}")
    pixels = check_pixels(pixels, model)
    pol = _policy(policy)
    step("trace, rewrite and lower")
    t0 = time.perf_counter()
    prog = api.compile(model.logits_fn, model.params, pixels, owners=(SERVER, CLIENT),
                       policy=pol, config=config)
    frontend_s = time.perf_counter() - t0
    step(f"simulate both parties ({len(prog.ir.ops)} IR ops)")
    _watch(prog, detail)
    t0 = time.perf_counter()
    private, report = prog.run(model.params, pixels)
    simulate_s = time.perf_counter() - t0
    step("fidelity")
    plaintext = np.asarray(prog.plaintext(model.params, pixels))
    t0 = time.perf_counter()
    reference, reference_name = exact_reference(model)
    exact = np.asarray(jax.block_until_ready(jax.jit(reference.logits_fn)(reference.params, pixels)))
    exact_s = time.perf_counter() - t0
    private = np.asarray(private)
    fidelity = {"vs_plaintext": errors(private, plaintext),
                "vs_exact": {**errors(private, exact), "reference": reference_name},
                "top1_agrees_with_exact": bool(np.argmax(private) == np.argmax(exact)),
                "top1_agrees_with_plaintext": bool(np.argmax(private) == np.argmax(plaintext))}
    patches = (model.config.image_size // model.config.patch_size) ** 2
    return ClassificationJob(_policy_name(policy, pol), config, patches + 1, prog, report, private,
                             plaintext, exact, fidelity,
                             {"frontend_s": frontend_s, **_split_xla(simulate_s, report),
                              "exact_s": exact_s}, _labels(model))
