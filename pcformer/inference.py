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
from .report import Report, sequential

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
    ids = enc["input_ids"].astype(np.int32)
    check_vocab(model, ids)
    return ids, enc["attention_mask"].astype(np.int32)


def check_vocab(model, ids) -> None:
    """Token ids the model's embedding table does not have (a tokenizer from another model)
    would silently read a clamped row: refuse them."""
    vocab = getattr(model.config, "vocab_size", None)
    ids = np.asarray(ids)
    if vocab is not None and ids.size and (ids.max() >= vocab or ids.min() < 0):
        raise InputError(f"token id {int(ids.max())} is outside the model's vocabulary of {vocab} "
                         f"(the tokenizer does not match the checkpoint {model.folder})")


DECODERS = ("gpt2", "llama")   # model kinds `private_generation` decodes


def check_prompt(model, prompt: str, max_new_tokens: int, seq_len: int) -> list[int]:
    """A decoder: the prompt's token ids, refused when empty, too long or outside the vocabulary."""
    if model.tokenizer is None:
        raise InputError(f"checkpoint {model.folder} has no tokenizer files")
    ids = model.tokenizer(prompt)["input_ids"]
    if not ids:
        raise InputError("the prompt is empty")
    total = len(ids) + max_new_tokens
    if total > seq_len:
        raise InputError(f"the prompt has {len(ids)} tokens; with --max_new_tokens={max_new_tokens} "
                         f"that is more than --seq_len={seq_len}")
    if total > model.max_positions:
        raise InputError(f"{total} tokens exceed the model's {model.max_positions} positions")
    check_vocab(model, ids)
    return ids


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
    times: dict                  # frontend_s (trace, rewrite, lower), xla_compile_s, simulate_s, exact_s

    @property
    def static_report(self) -> Report:
        """The compiler's static cost of the same run (equal to `report`, message by message)."""
        return self.program.cost


def _watch(prog, detail: Callable[[str], None], label: str = "") -> None:
    """Report a simulation's progress (steps done, XLA programs compiled) through `detail`."""
    if detail is _noop or not hasattr(prog._exe, "progress"):
        return
    prog._exe.progress = lambda done, steps, compiled: detail(
        f"{label}{done}/{steps} steps, {compiled} programs compiled by XLA")


def private_embedding(model, text: str, *, policy="mpcformer", config: MPCConfig = MPCConfig(),
                      seq_len: int = 128, step: Callable[[str], None] = _noop,
                      detail: Callable[[str], None] = _noop) -> EmbeddingJob:
    """The client's sentence embedding computed privately under `policy`; `step(label)` is told
    each stage, `detail(text)` how far the simulation is."""
    if model.kind != "bert":
        raise InputError(f"sentence embeddings need a BERT model; this one is {model.kind}")
    pol = _policy(policy)
    ids, mask = tokenize_padded(model, [text], seq_len)
    step("trace, rewrite and lower")
    t0 = time.perf_counter()
    prog = api.compile(model.embed_fn, model.params, ids, mask, owners=(SERVER, CLIENT, CLIENT),
                       policy=pol, config=config)
    compile_s = time.perf_counter() - t0
    step(f"simulate both parties ({len(prog.ir.ops)} IR ops)")
    _watch(prog, detail)
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
                        {"frontend_s": compile_s, **_split_xla(simulate_s, report),
                         "exact_s": exact_s})


def _split_xla(simulate_s: float, report) -> dict:
    """The first simulation's wall time split into XLA compilation of the protocol programs
    (paid once per process and op signature) and the run itself."""
    xla = float((report.time or {}).get("compile_s", 0.0))
    return {"xla_compile_s": xla, "simulate_s": max(simulate_s - xla, 0.0)}


def load_policy(spec):
    """A Policy from a name, a Policy, a dict, or a JSON/YAML policy file: `policies.load`."""
    return _policies.load(spec)


_policy = load_policy


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
    report: Report               # the whole generation: prefill, then every decoding step, in
                                 # sequence (rounds and latency estimates add up)
    step_reports: list           # one measured Report per decoding step
    token_ids: list              # generated privately (revealed to the client only)
    plaintext_ids: list          # greedy decoding of the rewritten program in float JAX
    exact_ids: list              # greedy decoding of the exact model
    text: str
    plaintext_text: str
    agreement: float             # fraction of positions equal to the plaintext tokens
    per_token: dict              # mean bytes per party and rounds per decoding step
    prefill: dict                # the same figures for the prompt's program
    fidelity: dict
    times: dict

    @property
    def static_report(self) -> Report:
        """The static cost of the same generation, assembled like `report`: the prompt's program,
        the decoding program's setup once, and its per-run phases once per decoding step."""
        dec = self.program.cost.entries
        return sequential(_generation_parts(self.prefill_program.cost.entries,
                                            [dec] * len(self.step_reports)), static=True)

    def phases(self) -> dict:
        """Prefill, mean per generated token, and total: bytes per party and rounds per phase,
        and the latency estimate on each preset network (sequential programs add)."""
        from .config import NETWORKS
        total = {**self.report.totals(),
                 "estimate": {n: self.report.estimate(net) for n, net in NETWORKS.items()}}
        return {"prefill": self.prefill, "per_token": self.per_token, "total": total}


def _greedy_step(model):
    def step(params, token_ids, cache, position):
        logits, new_cache = model.decode_step(params, token_ids, cache, position)
        return jnp.argmax(logits[0, -1]).astype(jnp.int32), new_cache
    return step


def private_generation(model, prompt: str, max_new_tokens: int, *, policy="mpcformer",
                       config: MPCConfig = MPCConfig(), seq_len: int = 128,
                       step: Callable[[str], None] = _noop,
                       detail: Callable[[str], None] = _noop) -> GenerationJob:
    """Greedy decoding where the server holds a decoder's weights (GPT-2 or LLaMA-style) and the
    client its prompt.

    One program runs the prompt (prefill), one program runs each later token; the KV cache
    between them stays secret-shared (`reveal=False`, passed back with owner "secret"). Each new
    token is revealed to the client only, who feeds it back as its private input.
    """
    if model.kind not in DECODERS:
        raise InputError(f"private generation needs a decoder ({', '.join(DECODERS)}); "
                         f"this one is {model.kind}")
    pol = _policy(policy)
    ids = check_prompt(model, prompt, max_new_tokens, seq_len)
    total = len(ids) + max_new_tokens
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
    step(f"simulate both parties (prompt, then {max_new_tokens - 1} decoding programs)")
    _watch(pre, detail, "prompt: ")
    t0 = time.perf_counter()
    (tok, cache), pre_report = pre.run(model.params, prompt_ids, cache0, jnp.int32(0))
    tokens, reports = [int(tok)], []
    pos = len(ids)
    while len(tokens) < max_new_tokens:
        _watch(dec, detail, f"token {len(tokens) + 1}/{max_new_tokens}: ")
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
    report = sequential(_generation_parts(pre_report.entries, [r.entries for r in reports]),
                        time={k: sum(r.time[k] for r in [pre_report, *reports])
                              for k in ("compile_s", "run_s")})
    # the decoding steps share the prefill's keys and reveal one token each: carry both facts
    report.reproducible_seed = pre_report.reproducible_seed
    report.revealed = [v for r in [pre_report, *reports] for v in (r.revealed or [])]
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
                         _agreement(tokens, plain_tokens), per, _per_token([pre_report]), fidelity,
                         {"frontend_s": compile_s, **_split_xla(simulate_s, report)})


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


def _generation_parts(prefill: list, steps: list[list]) -> list[list]:
    """The programs of a generation in the order they run: the prompt's, then one per decoding
    step. The decoding program's setup (opening the weights' masks) is paid once, with its first
    step, not per token."""
    parts = [list(prefill)]
    for k, entries in enumerate(steps):
        parts.append([e for e in entries if k == 0 or e.phase != "setup"])
    return parts


def _per_token(reports: list) -> dict:
    """Mean bytes per party and rounds of the per-run phases over `reports` (one per program run;
    the mean over decoding steps is the cost of one generated token)."""
    from .config import NETWORKS
    tot = [r.totals() for r in reports]
    out = {}
    for ph in ("online", "offline"):
        out[f"{ph}_bytes"] = [int(np.mean([t[ph]["bytes"][p] for t in tot])) for p in (0, 1)]
        out[f"{ph}_rounds"] = int(np.mean([t[ph]["rounds"] for t in tot]))
    out["estimate_s"] = {n: float(np.mean([Report([e for e in r.entries if e.phase != "setup"])
                                           .estimate(net)["per_run"] for r in reports]))
                         for n, net in NETWORKS.items()}
    return out
