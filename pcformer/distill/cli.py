"""The `pcformer distill` command: its flags, derived from DistillConfig's fields, and its work.

    pcformer distill --model=minilm --policy=mpcformer --steps=2000 --out=distilled/
    pcformer distill --model=minilm --policy=my_policy.yaml --init=copy --nofreeze_embeddings

Light at import (absl and the config dataclass only): pcformer/cli.py calls `define_flags` when it
builds the command table, so help and flag errors answer without JAX. A new DistillConfig field
is a new flag with no edit here. The policy goes through `pcformer.compiler.policies.load`, as
for `pcformer run`: a name, or a JSON/YAML policy file.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from absl import flags

from .config import DistillConfig, DistillError, parse_ints

BUILTIN_DATA = ("english", "stdlib")


class IntTupleParser(flags.ArgumentParser):
    """Comma-separated ints ("12,16,24"; "" is none) for tuple-of-int fields."""

    syntactic_help = "comma-separated integers"

    def parse(self, argument):
        if isinstance(argument, (tuple, list)):
            return tuple(int(x) for x in argument)
        try:
            return parse_ints(argument)
        except ValueError:
            raise ValueError(f"{argument!r} is not comma-separated integers") from None

    def flag_type(self):
        return "int tuple"


_DEFINE_BY_TYPE = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
                   float: flags.DEFINE_float, str: flags.DEFINE_string}


def _define_field(field: dataclasses.Field, flag_values) -> None:
    default, help_text = field.default, field.metadata["help"]
    if isinstance(default, tuple):
        flags.DEFINE(IntTupleParser(), field.name, default, help_text, flag_values=flag_values)
    else:
        _DEFINE_BY_TYPE[type(default)](field.name, default, help_text, flag_values=flag_values)


def define_flags(flag_values=flags.FLAGS) -> tuple[str, ...]:
    """Define the command's own flags (data, out, resume) and one flag per DistillConfig field;
    a field whose flag another command already defined (seq_len, seed) shares it. Returns the
    names, in help order. `model` and `policy` are the front door's (pcformer/cli.py)."""
    flags.DEFINE_string("data", None, "A text file with one example per line (default: the "
                        "built-in English corpus: standard-library docstrings and WordNet "
                        "sentences; \"stdlib\" for docstrings alone).", flag_values=flag_values)
    flags.DEFINE_string("held_out_data", None, "A text file of held-out examples, one per line "
                        "(default: --held_out examples split off --data with the seed).",
                        flag_values=flag_values)
    flags.DEFINE_string("out", None, "Output checkpoint folder.", flag_values=flag_values)
    flags.DEFINE_string("resume", None, "A saved state file or output folder to continue from.",
                        flag_values=flag_values)
    for field in dataclasses.fields(DistillConfig):
        if field.name not in flag_values:
            _define_field(field, flag_values)
    return ("data", "held_out_data", "out", "resume",
            *(f.name for f in dataclasses.fields(DistillConfig)))


def config_from_flags(flag_values) -> DistillConfig:
    """DistillConfig from parsed flags. A shared flag left unset (--seed: None) keeps the field's
    default; so does --held_out when unset, except that a small --data file keeps a fifth of its
    examples for training's sake (`fitting_held_out`)."""
    given = {f.name: flag_values[f.name].value for f in dataclasses.fields(DistillConfig)
             if flag_values[f.name].value is not None}
    cfg = DistillConfig(**given)
    data = flag_values["data"].value
    if flag_values["held_out"].present or flag_values["held_out_data"].value or not data:
        return cfg
    from pcformer import corpus_english
    from .data import fitting_held_out
    try:
        n = len(set(corpus_english.read_texts(data)))
    except (ValueError, UnicodeError) as e:
        raise DistillError(f"--data={data}: {e}") from None
    return dataclasses.replace(cfg, held_out=fitting_held_out(n, cfg.held_out))


def resolve_flags(flag_values):
    """(Policy, DistillConfig) from parsed flags, every check made before any model loads: one
    policy (a name or a JSON/YAML file, through `policies.load`), an --out that is not a file, a
    --data and a readable, non-empty --held_out_data that exist."""
    from pcformer.compiler import policies
    spec = flag_values["policy"].value
    if "," in spec:
        raise DistillError("distill takes one --policy")
    policy = policies.load(spec)
    out, data = flag_values["out"].value, flag_values["data"].value
    if out and Path(out).exists() and not Path(out).is_dir():
        raise DistillError(f"--out={out} is a file; give a folder")
    if data and data not in BUILTIN_DATA and not Path(data).is_file():
        raise DistillError(f"--data={data} does not exist")
    held = flag_values["held_out_data"].value
    if held is not None:
        _check_held_out_file(held)
    return policy, config_from_flags(flag_values)


def _check_held_out_file(path: str) -> None:
    from pcformer import corpus_english
    if not Path(path).is_file():
        raise DistillError(f"--held_out_data={path} does not exist")
    try:
        corpus_english.read_texts(path)       # refuses an empty or undecodable file
    except (ValueError, UnicodeError) as e:
        raise DistillError(f"--held_out_data={path}: {e}") from None


def main(flag_values=flags.FLAGS) -> int:
    """`pcformer distill`: distil, save, print the final metrics and English fidelity as JSON."""
    policy, cfg = resolve_flags(flag_values)
    from pcformer import models
    from .evaluation import cli_fidelity
    from .train import distill
    teacher = models.load(flag_values["model"].value)
    result = distill(teacher, policy, flag_values["data"].value or "english", cfg,
                     held_out=flag_values["held_out_data"].value,
                     out_dir=flag_values["out"].value, resume=flag_values["resume"].value)
    fidelity = cli_fidelity(teacher, policy, result.params, cfg.seq_len)
    print(json.dumps({"policy": result.policy, "steps": result.step, "out": result.out_dir,
                      "held_out": result.final, "fidelity": fidelity}, indent=2))
    return 0
