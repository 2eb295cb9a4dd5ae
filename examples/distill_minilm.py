"""Distil all-MiniLM-L6-v2 under friendly policies and show what it recovers.

For each policy (default: mpcformer, then paper): the friendly model's fidelity to the exact model
on held-out English sentences before and after `pcformer.distill` -- mean and minimum cosine
similarity of the sentence embeddings, and agreement of a semantic-search ranking (each held-out
sentence queries the others: top-1 = same nearest neighbour as the exact model, top-5 = mean
overlap of the five nearest). Then the distilled model's private (two-party simulated) embedding of
one short sentence is checked against its plaintext.

    python examples/distill_minilm.py            # defaults: mpcformer 2000 steps, paper 750;
                                                 # 753 s on an idle 2-core CPU (README's table)
    python examples/distill_minilm.py --steps=50 --policies=mpcformer --private_seq_len=0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import numpy as np

from pcformer import corpus, models
from pcformer import distill as D


def embeddings(fn, params, ids, mask, batch: int = 32) -> np.ndarray:
    """Sentence embeddings [n, hidden] in batches (fn: jitted features function)."""
    outs = [np.asarray(fn(params, ids[i:i + batch], mask[i:i + batch])["out"])
            for i in range(0, len(ids), batch)]
    e = np.concatenate(outs)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def fidelity(student: np.ndarray, teacher: np.ndarray) -> dict:
    """Cosine to the exact embeddings and semantic-search agreement among held-out sentences."""
    cos = np.sum(student * teacher, axis=-1)
    def ranks(e):
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1)
    rt, rs = ranks(teacher), ranks(student)
    top1 = float(np.mean(rt[:, 0] == rs[:, 0]))
    top5 = float(np.mean([len(set(a[:5]) & set(b[:5])) / 5 for a, b in zip(rt, rs)]))
    return {"cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "top1": top1,
            "top5": top5}


def main(argv=None) -> int:
    d = D.DistillConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm")
    p.add_argument("--policies", default="mpcformer,paper")
    p.add_argument("--steps", default=f"{d.steps},750",
                   help="training steps, one per policy in --policies order (or one for all)")
    p.add_argument("--batch_size", type=int, default=d.batch_size)
    p.add_argument("--seq_len", type=int, default=d.seq_len)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--length_buckets", default=",".join(map(str, d.length_buckets)),
                   help="shorter padded lengths for batches of short sentences (comma list)")
    p.add_argument("--n_train", type=int, default=0, help="training sentences (0: all)")
    p.add_argument("--n_heldout", type=int, default=100)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None, help="save each distilled model to OUT/<policy>")
    p.add_argument("--private_seq_len", type=int, default=8,
                   help="tokens of the private check (0: skip it)")
    p.add_argument("--no_progress", action="store_true")
    args = p.parse_args(argv)
    policies = [s for s in args.policies.split(",") if s]
    steps = list(D.parse_ints(args.steps))
    if len(steps) == 1:
        steps *= len(policies)
    if len(steps) != len(policies):
        p.error(f"--steps gives {len(steps)} values for {len(policies)} policies")

    t_start = time.time()
    model = models.load(args.model)
    train, held = corpus.load_corpus(args.n_train or None, args.n_heldout, args.seed)
    ids, mask = D.tokenize(model.tokenizer, held, args.seq_len)
    features = D.features_fn(model)
    teacher = embeddings(jax.jit(features), model.params, ids, mask)
    print(f"{args.model}: {len(train)} training / {len(held)} held-out sentences from the "
          f"standard library's docstrings, seq_len {args.seq_len}")

    rows, results = [], {}
    for policy, n_steps in zip(policies, steps):
        student = jax.jit(D.make_student(features, policy))
        rows.append((policy, "before", fidelity(embeddings(student, model.params, ids, mask),
                                                teacher)))
        cfg = D.DistillConfig(steps=n_steps, batch_size=args.batch_size, seq_len=args.seq_len,
                              lr=args.lr, warmup=args.warmup, seed=args.seed,
                              length_buckets=D.parse_ints(args.length_buckets),
                              eval_every=max(n_steps // 4, 1), held_out=0,
                              progress=not args.no_progress)
        t0 = time.time()
        res = D.distill(model, policy, train, cfg, held_out=held,
                        out_dir=f"{args.out}/{policy}" if args.out else None)
        train_s = time.time() - t0
        if res.history and res.history[0]["step"] == 0 and cfg.init != "copy":
            rows.append((policy, "init", {"cos_mean": res.history[0]["cosine"],
                                          "cos_min": res.history[0]["cosine_min"],
                                          "top1": float("nan"), "top5": float("nan")}))
        after = embeddings(student, res.params, ids, mask)
        rows.append((policy, f"after {res.step} steps ({train_s:.0f} s)", fidelity(after, teacher)))
        results[policy] = res

    print("\nfidelity to the exact model on held-out sentences")
    print(f"{'policy':<10} {'stage':<24} {'cos mean':>9} {'cos min':>8} {'top-1':>6} {'top-5':>6}")
    for policy, stage, f in rows:
        ranks = "     -      -" if np.isnan(f["top1"]) else f"{f['top1']:>6.2f} {f['top5']:>6.2f}"
        print(f"{policy:<10} {stage:<24} {f['cos_mean']:>9.4f} {f['cos_min']:>8.4f} {ranks}")

    if args.private_seq_len:
        try:
            from pcformer import inference
        except ImportError as e:  # the private path is optional for this example
            print(f"\nprivate check skipped: {e}")
        else:
            text = "Return the number of items."
            for policy, res in results.items():
                t0 = time.time()
                job = inference.private_embedding(res.model, text, policy=policy,
                                                  seq_len=args.private_seq_len)
                sid, smask = D.tokenize(model.tokenizer, [text], args.private_seq_len)
                exact = np.asarray(model.embed_fn(model.params, sid, smask))[0]
                priv = np.asarray(job.private).reshape(-1)
                priv_cos = float(priv @ exact / np.linalg.norm(priv) / np.linalg.norm(exact))
                print(f"\nprivate embedding of {text!r} ({args.private_seq_len} tokens, {policy}, "
                      f"distilled): vs its plaintext max|err| "
                      f"{job.fidelity['vs_plaintext']['max_abs']:.2e}, cosine "
                      f"{job.fidelity['vs_plaintext']['cosine_min']:.6f}; cosine to the exact "
                      f"original model {priv_cos:.4f}; online "
                      f"{job.report.totals().get('online', job.report.totals())} "
                      f"({time.time() - t0:.0f} s)")
    print(f"\ntotal {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
