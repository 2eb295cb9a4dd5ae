"""What decides a distillation run (`DistillConfig`), what a run produces (`DistillResult`) and
the one error a bad setting raises (`DistillError`).

Light on purpose (no JAX): the command line (pcformer/cli.py) derives `pcformer distill`'s flags
from DistillConfig's fields and their help, so a new field is a new flag with no other edit.
"""
from __future__ import annotations

import dataclasses
from typing import Any


class DistillError(ValueError):
    """Distillation input that cannot be used as given (settings, data, model): the CLI prints
    it as one line."""


def setting(default, help: str):  # noqa: A002 - the flag's help text, as absl names it
    """A DistillConfig field: its default (visible where the field is declared) and the help
    line its command-line flag shows."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Everything that decides a distillation run; two runs with equal configs and data agree."""

    # the run
    steps: int = setting(2000, "Training steps.")
    batch_size: int = setting(16, "Examples a step.")
    seq_len: int = setting(32, "Padded length of every example (tokens).")
    # the optimizer
    lr: float = setting(3e-4, "Peak learning rate of AdamW (MiniLM/mpcformer, 300 steps: "
                              "2e-4..5e-4 are within 0.002 cosine).")
    warmup: int = setting(25, "Linear warm-up steps (short: the calibrated start needs no long "
                              "warm-up).")
    end_lr_ratio: float = setting(0.05, "The cosine decay ends at lr * end_lr_ratio.")
    weight_decay: float = setting(0.0, "AdamW's decay (it pulls toward 0, not toward the "
                                       "teacher).")
    clip_norm: float = setting(1.0, "Global gradient-norm clipping.")
    # data order and held-out evaluation
    seed: int = setting(0, "Data order, held-out split and initialisation.")
    eval_every: int = setting(100, "Held-out evaluation every this many steps (0: only at the "
                                   "end).")
    held_out: int = setting(64, "Held-out examples split off the data when no held-out set is "
                                "given (the command line: a fifth of a small file).")
    # the loss (losses.py)
    hidden_weight: float = setting(1.0, "Weight of the hidden-state loss (relative MSE).")
    attention_weight: float = setting(1.0, "Weight of the attention loss (only where the policy "
                                           "changes softmax).")
    output_weight: float = setting(1.0, "Weight of the output loss.")
    output_loss: str = setting("auto", "auto | cosine | mse | kl (auto: kl for causal models, "
                                       "cosine for encoders).")
    hard_examples: float = setting(1.0, "Weigh each example's loss by loss ** this (mean 1, "
                                        "capped): the worst examples pull harder; 0: all alike.")
    # saving and speed
    save_every: int = setting(0, "Write a resumable state every this many steps (0: at the "
                                 "end).")
    length_buckets: tuple[int, ...] = setting(
        (12, 16, 24), "Shorter padded lengths for batches of short examples, comma-separated "
                      "(each one more compile); empty: none.")
    teacher_cache_mb: int = setting(
        3072, "Cache the teacher's outputs on the training set when they fit in this many MB "
              "and every example is seen at least once; 0: never.")
    # the student's start and what it trains (calibration.py)
    freeze_embeddings: bool = setting(True, "Token/position embedding tables stay the "
                                            "teacher's.")
    init: str = setting("auto", "auto (fit Quad GeLU / 2Quad softmax where the policy uses "
                                "them) | fit (fit both) | copy (the teacher's weights).")
    calibration: int = setting(256, "Training examples whose pre-activations the GeLU fit "
                                    "uses.")
    softmax_calibration: int = setting(64, "Training examples whose attention scores the 2Quad "
                                           "fit uses.")
    # output
    progress: bool = setting(True, "One updating stderr line with the loss.")

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


def parse_ints(text: str) -> tuple[int, ...]:
    """A command line's comma-separated ints ("12,16,24"); "" is none."""
    return tuple(int(x) for x in str(text).split(",") if x.strip())
