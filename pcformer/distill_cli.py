"""The `pcformer distill` command and a standalone parser over every DistillConfig field.

    pcformer distill --model=minilm --policy=mpcformer --steps=2000 --out=distilled/
    python -m pcformer.distill_cli --model=minilm --init=copy --freeze_embeddings=false ...

Kept apart from `pcformer.distill` (the training library) so that the library does not import its
own evaluation: this module sits above both (distill, distill_eval) and wires them together.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Sequence

from pcformer import corpus_english
from pcformer.distill import (DistillConfig, DistillError, distill, fitting_held_out,
                              parse_ints)


def _parser() -> argparse.ArgumentParser:
    d = DistillConfig()
    p = argparse.ArgumentParser(prog="pcformer distill", description="Distil a friendly student of a model (every DistillConfig field is a flag).")
    p.add_argument("--model", default="minilm", help="model name or checkpoint folder")
    p.add_argument("--policy", default="mpcformer")
    p.add_argument("--data", default="english",
                   help='text file with one example a line, "english" (built-in, default) or "stdlib"')
    p.add_argument("--held_out", "--held-out", default=None,
                   help="held-out text file (default: split off --data)")
    p.add_argument("--out", default=None, help="output checkpoint folder")
    p.add_argument("--resume", default=None, help="state file or folder to continue from")
    for f in dataclasses.fields(DistillConfig):
        if f.name in ("progress",):
            continue
        default = getattr(d, f.name)
        kind = type(default)
        if kind is bool:
            kind = lambda v: str(v).lower() in ("1", "true", "yes")  # noqa: E731
        elif kind is tuple:
            kind = parse_ints
        flag = "--held_out_size" if f.name == "held_out" else f"--{f.name}"
        p.add_argument(flag, dest=f"cfg_{f.name}", type=kind, default=default,
                       help=f"(default {default})")
    p.add_argument("--no_progress", "--no-progress", action="store_true")
    return p


def run_distill_cli(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (without the program name), distil, save, print the final metrics as JSON."""
    args = _parser().parse_args(list(argv) if argv is not None else None)
    from pcformer import models
    cfg = DistillConfig(**{f.name: getattr(args, f"cfg_{f.name}")
                           for f in dataclasses.fields(DistillConfig) if f.name != "progress"},
                        progress=not args.no_progress)
    model = models.load(args.model)
    result = distill(model, args.policy, args.data, cfg, held_out=args.held_out,
                     out_dir=args.out, resume=args.resume)
    from pcformer import distill_eval  # in/out-of-domain English fidelity, before and after
    fidelity = distill_eval.cli_fidelity(model, args.policy, result.params, cfg.seq_len)
    print(json.dumps({"policy": result.policy, "steps": result.step, "out": result.out_dir,
                      "held_out": result.final, "fidelity": fidelity}, indent=2))
    return 0


def run_cli(*, model: str = "minilm", policy: str = "mpcformer", data: str | None = None,
            out: str | None = None, held_out: str | None = None, resume: str | None = None,
            **config) -> int:
    """The `pcformer distill` command (pcformer/cli.py): keyword flags -> distil, save, print JSON.
    `config` takes DistillConfig fields (steps, seq_len, seed, ...); None values keep defaults."""
    from pcformer import models
    held_out_size = config.pop("held_out_size", None)
    cfg = DistillConfig(**{k: v for k, v in config.items() if v is not None})
    if held_out_size is not None:
        cfg = dataclasses.replace(cfg, held_out=held_out_size)
    elif held_out is None and data:   # the default share adapts to a small file
        try:
            n = len(set(corpus_english.read_texts(data)))
        except (ValueError, UnicodeError) as e:
            raise DistillError(f"--data={data}: {e}") from None
        cfg = dataclasses.replace(cfg, held_out=fitting_held_out(n, cfg.held_out))
    teacher = models.load(model)
    result = distill(teacher, policy, data or "english", cfg, held_out=held_out,
                     out_dir=out, resume=resume)
    from pcformer import distill_eval  # in/out-of-domain English fidelity, before and after
    fidelity = distill_eval.cli_fidelity(teacher, policy, result.params, cfg.seq_len)
    print(json.dumps({"policy": result.policy, "steps": result.step, "out": result.out_dir,
                      "held_out": result.final, "fidelity": fidelity}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_distill_cli())
