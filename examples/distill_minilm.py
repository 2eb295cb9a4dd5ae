"""Distil all-MiniLM-L6-v2 under friendly policies and show what it recovers.

For each policy (default: mpcformer, then paper): the friendly model's fidelity to the exact model
before and after `pcformer.distill`, on two held-out sets of `pcformer.corpus_english` -- in
domain (docstrings and WordNet sentences of the training domains) and out of domain (WordNet
sentences of everyday domains never trained on: food, travel, news, money) -- as mean and minimum
cosine similarity of the sentence embeddings and agreement of a semantic search (each held-out
sentence queries the others: top-1 = the same nearest sentence as the exact model, top-5 = the
exact model's nearest among the student's five nearest; `pcformer.distill.evaluation`). Then the
distilled model's private (two-party simulated) embedding of one short sentence is checked
against its plaintext.

    python examples/distill_minilm.py            # defaults: mpcformer 2000 steps, paper 750
    python examples/distill_minilm.py --steps=50 --policies=mpcformer --private_seq_len=0
    python examples/distill_minilm.py --corpus=stdlib   # the docstring corpus alone
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pcformer import corpus, corpus_english, models
from pcformer import distill as D
from pcformer.distill import evaluation as V
from pcformer.progress import Progress


def load_split(name: str, n_train: int, n_heldout: int, seed: int) -> corpus_english.EnglishSplit:
    """The training sentences and held-out sets: corpus_english's split ("english"; n_train 0:
    its defaults, else a third docstrings and the rest WordNet), or docstrings alone ("stdlib";
    the out-of-domain set is corpus_english's all the same)."""
    d = corpus_english.SplitConfig()
    cfg = corpus_english.SplitConfig(
        seed=seed, n_in_domain=n_heldout, n_out_domain=n_heldout,
        n_docstring_train=n_train // 3 if n_train else d.n_docstring_train,
        n_wordnet_train=n_train - n_train // 3 if n_train else d.n_wordnet_train)
    split = corpus_english.english_split(cfg)
    if name == "english":
        return split
    train, held = corpus.load_corpus(n_train or None, n_heldout, seed)
    ood = {t.lower() for t in split.out_of_domain}
    return corpus_english.EnglishSplit(train=tuple(t for t in train if t.lower() not in ood),
                                       in_domain=tuple(held),
                                       out_of_domain=split.out_of_domain, config=cfg)


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
    p.add_argument("--corpus", choices=("english", "stdlib"), default="english",
                   help="english: docstrings + WordNet (corpus_english); stdlib: docstrings")
    p.add_argument("--n_train", type=int, default=0,
                   help="training sentences (0: the corpus's default)")
    p.add_argument("--n_heldout", type=int, default=200,
                   help="sentences in each held-out set (in and out of domain)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--hard_examples", type=float, default=d.hard_examples,
                   help="weight each example's loss in proportion to loss ** this (0: uniform)")
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
    # each stage over a second shows on stderr, as in the CLI (the training loop has its own line)
    delay = float("inf") if args.no_progress else 1.0
    with Progress(args.model, delay=delay) as bar:
        bar.stage("load the model and the corpus")
        model = models.load(args.model)
        split = load_split(args.corpus, args.n_train, args.n_heldout, args.seed)
        bar.done()
    print(f"{args.model}: {len(split.train)} training sentences ({args.corpus}), held out "
          f"{len(split.in_domain)} in domain and {len(split.out_of_domain)} out of domain "
          f"({', '.join(split.config.eval_domains)}), seq_len {args.seq_len}")

    rows, results = [], {}
    for policy, n_steps in zip(policies, steps):
        cfg = D.DistillConfig(steps=n_steps, batch_size=args.batch_size, seq_len=args.seq_len,
                              lr=args.lr, warmup=args.warmup, seed=args.seed,
                              length_buckets=D.parse_ints(args.length_buckets),
                              hard_examples=args.hard_examples,
                              eval_every=max(n_steps // 4, 1), held_out=0,
                              progress=not args.no_progress)
        t0 = time.time()
        res = D.distill(model, policy, list(split.train), cfg, held_out=list(split.in_domain),
                        out_dir=f"{args.out}/{policy}" if args.out else None)
        train_s = time.time() - t0
        stages = {"before": model.params,
                  f"after {res.step} steps ({train_s:.0f} s)": res.params}
        with Progress(policy, delay=delay) as bar:
            bar.stage("fidelity before and after, on the held-out sets")
            rows += [dict(r, policy=policy) for r in
                     V.evaluate_stages(model, policy, stages, split.eval_sets(), args.seq_len)]
            bar.done()
        results[policy] = res

    print("\nfidelity to the exact model on held-out sentences")
    print(V.format_table(sorted(rows, key=lambda r: (policies.index(r["policy"]), r["set"]))))

    if args.private_seq_len:
        try:
            from pcformer import inference
        except ImportError as e:  # the private path is optional for this example
            print(f"\nprivate check skipped: {e}")
        else:
            text = "Return the number of items."
            for policy, res in results.items():
                t0 = time.time()
                with Progress(f"{policy} (private check)", delay=delay) as bar:
                    job = inference.private_embedding(res.model, text, policy=policy,
                                                      seq_len=args.private_seq_len,
                                                      step=bar.stage, detail=bar.detail)
                    bar.done()
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
