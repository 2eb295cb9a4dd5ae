"""Private inference jobs on a loaded model: the work behind `pcformer run` and the examples.

Each job compiles the model with the server (party 0) owning the weights and the client (party 1)
owning the tokens, simulates both parties, and measures fidelity against the plaintext rewritten
program (same approximations, float arithmetic) and against the exact model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.compiler import policies as _policies

from . import api
from .config import MPCConfig
from .report import Report

SERVER, CLIENT, PUBLIC = 0, 1, None


class InputError(ValueError):
    """Bad user input (text too long, wrong model kind...): the CLI prints it as one line."""


def _noop(_: str) -> None:
    pass


def tokenize_padded(model, texts: list[str], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask padded to exactly `seq_len`; refuses text that does not fit."""
    if model.tokenizer is None:
        raise InputError(f"checkpoint {model.folder} has no tokenizer files")
    for t in texts:
        n = len(model.tokenizer(t)["input_ids"])
        if n > seq_len:
            raise InputError(f"the text has {n} tokens, more than --seq_len={seq_len}; "
                             f"raise --seq_len or shorten the text")
    enc = model.tokenizer(list(texts), padding="max_length", max_length=seq_len,
                          truncation=False, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def cosine(a, b) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-30)


def errors(private, reference) -> dict:
    """max and mean absolute error, plus cosine similarity of the flattened rows."""
    p = np.asarray(private, np.float64)
    r = np.asarray(reference, np.float64)
    d = np.abs(p - r)
    cos = cosine(p.reshape(p.shape[0], -1), r.reshape(r.shape[0], -1))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}


@dataclasses.dataclass
class EmbeddingJob:
    """A finished private sentence-embedding run (BERT/MiniLM)."""

    policy: str
    config: MPCConfig
    seq_len: int
    program: Any
    report: Report
    private: np.ndarray          # the embedding revealed to the client [1, hidden]
    plaintext: np.ndarray        # the rewritten program in float JAX
    exact: np.ndarray            # the exact model
    fidelity: dict               # {"vs_plaintext": errors, "vs_exact": errors}
    times: dict                  # compile_s (front end), xla_compile_s, simulate_s (run), exact_s

    @property
    def static_report(self) -> Report:
        """The compiler's static cost of the same run (equal to `report`, message by message)."""
        return self.program.cost


def private_embedding(model, text: str, *, policy="mpcformer", config: MPCConfig = MPCConfig(),
                      seq_len: int = 128, step: Callable[[str], None] = _noop) -> EmbeddingJob:
    """The client's sentence embedding computed privately under `policy`."""
    if model.kind != "bert":
        raise InputError(f"sentence embeddings need a BERT model; this one is {model.kind}")
    pol = _policy(policy)
    ids, mask = tokenize_padded(model, [text], seq_len)
    step("trace, rewrite and lower")
    t0 = time.perf_counter()
    prog = api.compile(model.embed_fn, model.params, ids, mask, owners=(SERVER, CLIENT, CLIENT),
                       policy=pol, config=config)
    compile_s = time.perf_counter() - t0
    step("simulate both parties")
    t0 = time.perf_counter()
    private, report = prog.run(model.params, ids, mask)
    simulate_s = time.perf_counter() - t0
    step("fidelity")
    plaintext = np.asarray(prog.plaintext(model.params, ids, mask))
    t0 = time.perf_counter()
    reference, reference_name = exact_reference(model)
    exact = np.asarray(jax.block_until_ready(
        jax.jit(reference.embed_fn)(reference.params, ids, mask)))
    exact_s = time.perf_counter() - t0
    private = np.asarray(private)
    fidelity = {"vs_plaintext": errors(private, plaintext),
                "vs_exact": {**errors(private, exact), "reference": reference_name}}
    return EmbeddingJob(_policy_name(policy, pol), config, seq_len, prog, report, private,
                        plaintext, exact, fidelity,
                        {"compile_s": compile_s, **_split_xla(simulate_s, report),
                         "exact_s": exact_s})


def _split_xla(simulate_s: float, report) -> dict:
    """The first simulation's wall time split into XLA compilation of the protocol programs
    (paid once per process and op signature) and the run itself."""
    xla = float((report.time or {}).get("compile_s", 0.0))
    return {"xla_compile_s": xla, "simulate_s": max(simulate_s - xla, 0.0)}


def load_policy(spec: str):
    """A named policy, or a policy file: JSON (`policies.get` reads it) or YAML (a mapping of
    Policy fields, optionally with `base: <named policy>`)."""
    from pcformer.compiler import policies
    if spec.endswith((".yaml", ".yml")):
        import yaml  # PyYAML, already installed with transformers' hub client
        if not Path(spec).is_file():
            raise InputError(f"policy file {spec} does not exist")
        data = yaml.safe_load(Path(spec).read_text())
        if not isinstance(data, dict):
            raise InputError(f"policy file {spec} must hold a mapping of Policy fields")
        data.setdefault("name", Path(spec).stem)
        return policies.get(data)
    return policies.get(spec)


def _policy(policy):
    """A Policy from a name, a Policy, a dict, or a JSON/YAML file (the CLI's --policy)."""
    if isinstance(policy, str):
        return load_policy(policy)
    return _policies.get(policy)


def exact_reference(model):
    """The model the private output should match when no approximation is made: for a folder
    written by `pcformer.distill`, its teacher (named in pcformer_policy.json), else itself."""
    import json
    from . import models
    meta = Path(model.folder or "") / "pcformer_policy.json"
    if model.folder is not None and meta.is_file():
        teacher = json.loads(meta.read_text()).get("teacher")
        if teacher:
            try:
                return models.load(teacher), f"teacher {Path(teacher).name}"
            except (OSError, ValueError):
                pass  # teacher no longer available: fall back to the checkpoint itself
    return model, "this checkpoint without approximations"


def _policy_name(requested, pol) -> str:
    return requested if isinstance(requested, str) else getattr(pol, "name", "custom")


@dataclasses.dataclass
class GenerationJob:
    """A finished private greedy decoding run (GPT-2): the KV cache stays secret-shared."""

    policy: str
    config: MPCConfig
    seq_len: int
    program: Any                 # the decoding-step program (one new token per run)
    prefill_program: Any         # the prompt's program
    report: Report               # the whole generation: prefill + every decoding step
    step_reports: list           # one measured Report per decoding step
    token_ids: list              # generated privately (revealed to the client only)
    plaintext_ids: list          # greedy decoding of the rewritten program in float JAX
    exact_ids: list              # greedy decoding of the exact model
    text: str
    plaintext_text: str
    agreement: float             # fraction of positions equal to the plaintext tokens
    per_token: dict              # mean online bytes per party and rounds per decoding step
    fidelity: dict
    times: dict

    @property
    def static_report(self) -> Report:
        """The static cost of the same generation, assembled like `report`: the prompt's program,
        the decoding program's setup once, and its per-run phases once per decoding step."""
        steps = len(self.step_reports)
        dec = self.program.cost.entries
        entries = list(self.prefill_program.cost.entries)
        if steps:
            entries += [e for e in dec if e.phase == "setup"]
            entries += [e for e in dec if e.phase != "setup"] * steps
        return Report(entries, static=True)


def _greedy_step(model):
    def step(params, token_ids, cache, position):
        logits, new_cache = model.decode_step(params, token_ids, cache, position)
        return jnp.argmax(logits[0, -1]).astype(jnp.int32), new_cache
    return step


def private_generation(model, prompt: str, max_new_tokens: int, *, policy="mpcformer",
                       config: MPCConfig = MPCConfig(), seq_len: int = 128,
                       step: Callable[[str], None] = _noop) -> GenerationJob:
    """Greedy decoding where the server holds GPT-2's weights and the client its prompt.

    One program runs the prompt (prefill), one program runs each later token; the KV cache
    between them stays secret-shared (`reveal=False`, passed back with owner "secret"). Each new
    token is revealed to the client only, who feeds it back as its private input.
    """
    if model.kind != "gpt2":
        raise InputError(f"private generation needs a GPT-2 model; this one is {model.kind}")
    if model.tokenizer is None:
        raise InputError(f"checkpoint {model.folder} has no tokenizer files")
    pol = _policy(policy)
    ids = model.tokenizer(prompt)["input_ids"]
    if not ids:
        raise InputError("the prompt is empty")
    total = len(ids) + max_new_tokens
    if total > seq_len:
        raise InputError(f"the prompt has {len(ids)} tokens; with --max_new_tokens={max_new_tokens} "
                         f"that is more than --seq_len={seq_len}")
    if total > model.config.n_positions:
        raise InputError(f"{total} tokens exceed the model's {model.config.n_positions} positions")
    fn = _greedy_step(model)
    prompt_ids = jnp.asarray([ids], jnp.int32)
    cache0 = model.init_cache(1, total)
    one = jnp.zeros((1, 1), jnp.int32)
    step("trace, rewrite and lower")
    t0 = time.perf_counter()
    pre = api.compile(fn, model.params, prompt_ids, cache0, jnp.int32(0),
                      owners=(SERVER, CLIENT, PUBLIC, PUBLIC), reveal=(True, False),
                      policy=pol, config=config)
    # The decoding program traces with Secret placeholders of the cache's shapes.
    secret_cache = jax.tree_util.tree_map(lambda c: _placeholder(c, config), cache0)
    dec = api.compile(fn, model.params, one, secret_cache, jnp.int32(len(ids)),
                      owners=(SERVER, CLIENT, "secret", PUBLIC), reveal=(True, False),
                      policy=pol, config=config)
    compile_s = time.perf_counter() - t0
    step("simulate both parties")
    t0 = time.perf_counter()
    (tok, cache), pre_report = pre.run(model.params, prompt_ids, cache0, jnp.int32(0))
    tokens, reports = [int(tok)], []
    pos = len(ids)
    while len(tokens) < max_new_tokens:
        (tok, cache), r = dec.run(model.params, jnp.asarray([[tokens[-1]]], jnp.int32), cache,
                                  jnp.int32(pos))
        tokens.append(int(tok))
        reports.append(r)
        pos += 1
    simulate_s = time.perf_counter() - t0
    step("fidelity")
    # The same decoding in plain float JAX: the rewritten program, then the exact model.
    plain_tokens, plain_cache = _plain_greedy(pre.plaintext, dec.plaintext, model.params,
                                              prompt_ids, cache0, len(ids), max_new_tokens)
    exact_tokens, exact_cache = _plain_greedy(jax.jit(fn), jax.jit(fn), model.params, prompt_ids, cache0,
                                    len(ids), max_new_tokens)
    # Setup (opening the weights' masks) is paid once per program, not per token.
    once = [e for e in reports[0].entries if e.phase == "setup"] if reports else []
    report = Report(list(pre_report.entries) + once
                    + [e for r in reports for e in r.entries if e.phase != "setup"],
                    time={k: sum(r.time[k] for r in [pre_report, *reports])
                          for k in ("compile_s", "run_s")})
    per = _per_token(reports or [pre_report])
    # Numeric fidelity: the secret KV cache (reconstructed by the simulator's oracle) against the
    # rewritten program's float cache after the same tokens (only where the tokens agree).
    secret_k = np.stack([np.asarray(c.peek()) for c in jax.tree_util.tree_leaves(
        cache, is_leaf=lambda x: isinstance(x, api.Secret))])
    fidelity = {}
    for key, ref_cache, ref_tokens in (("vs_plaintext", plain_cache, plain_tokens),
                                       ("vs_exact", exact_cache, exact_tokens)):
        ref = np.stack([np.asarray(c) for c in jax.tree_util.tree_leaves(ref_cache)])
        fidelity[key] = {**errors(secret_k.reshape(1, -1), ref.reshape(1, -1)),
                         "token_agreement": _agreement(tokens, ref_tokens)}
    dec_text = model.tokenizer.decode(tokens, skip_special_tokens=True)
    return GenerationJob(_policy_name(policy, pol), config, seq_len, dec, pre, report, reports,
                         tokens, plain_tokens, exact_tokens, dec_text,
                         model.tokenizer.decode(plain_tokens, skip_special_tokens=True),
                         _agreement(tokens, plain_tokens), per, fidelity,
                         {"compile_s": compile_s, **_split_xla(simulate_s, report)})


def _placeholder(c, config):
    """A Secret standing for a cache array at compile time (only its shape is read)."""
    from pcformer.runtime.shares import AShare
    return api.Secret(AShare(jax.ShapeDtypeStruct((2,) + tuple(c.shape), jnp.uint64), 0),
                      config.frac_bits, config.ring_bits)


def _plain_greedy(prefill, decode, params, prompt_ids, cache0, start, n):
    tok, cache = prefill(params, prompt_ids, cache0, jnp.int32(0))
    tokens, pos = [int(tok)], start
    while len(tokens) < n:
        tok, cache = decode(params, jnp.asarray([[tokens[-1]]], jnp.int32), cache, jnp.int32(pos))
        tokens.append(int(tok))
        pos += 1
    return tokens, cache


def _agreement(a: list, b: list) -> float:
    return float(np.mean([x == y for x, y in zip(a, b)])) if a else 1.0


def _per_token(reports: list) -> dict:
    online = [r.totals()["online"] for r in reports]
    return {"online_bytes": [int(np.mean([o["bytes"][p] for o in online])) for p in (0, 1)],
            "online_rounds": int(np.mean([o["rounds"] for o in online])),
            "offline_bytes": [int(np.mean([r.totals()["offline"]["bytes"][p] for r in reports]))
                              for p in (0, 1)]}
