"""Private sentence embeddings with all-MiniLM-L6-v2, and a small private semantic search.

The server holds MiniLM's weights and a corpus whose embeddings it computed in plaintext; the
client's query is embedded privately (two-party simulation: the server never sees the query, the
client never sees the weights) and matched against the corpus. For each policy the script prints
what the private query cost and whether its ranking agrees with the plaintext (exact model) one.

    python examples/bert_private_inference.py                       # mpcformer and exact, ~2-4 min on CPU
    python examples/bert_private_inference.py --policies=puma --seq_len=16

Un-distilled `mpcformer` (Quad GeLU, 2Quad softmax) moves MiniLM far from the exact model, so its
ranking disagrees: that is what examples/distill_minilm.py recovers. `exact` keeps the ranking.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from pcformer import models
from pcformer.inference import cosine, private_embedding
from pcformer.progress import Progress
from pcformer.tables import human_bytes, human_seconds, render

CORPUS = [
    "The cat sleeps on the warm windowsill.",
    "A kitten naps in the afternoon sun.",
    "Stock markets fell sharply on Monday.",
    "Investors sold shares after the earnings report.",
    "The recipe needs two cups of flour and an egg.",
    "Bake the bread for forty minutes at high heat.",
    "The football team won the championship final.",
    "Fans celebrated the victory in the streets.",
    "Encryption keeps messages secret from eavesdroppers.",
    "Secure computation lets parties compute without revealing inputs.",
    "The train to the airport leaves every ten minutes.",
    "Heavy rain is expected over the weekend.",
]
QUERY = "Two parties compute a function while keeping their data private."


def ranking(query_emb: np.ndarray, corpus_emb: np.ndarray) -> np.ndarray:
    """Corpus indices, most similar first (cosine; embeddings are L2-normalised)."""
    return np.argsort(-(corpus_emb @ query_emb.reshape(-1)), kind="stable")


def agreement(private: np.ndarray, exact: np.ndarray, k: int) -> dict:
    """Top-1 agreement, top-k overlap and Spearman rank correlation of two rankings."""
    n = len(exact)
    pos_p, pos_e = np.empty(n), np.empty(n)
    pos_p[private] = np.arange(n)
    pos_e[exact] = np.arange(n)
    rho = 1 - 6 * np.sum((pos_p - pos_e) ** 2) / (n * (n * n - 1))
    return {"top1": float(private[0] == exact[0]),
            "topk_overlap": len(set(private[:k]) & set(exact[:k])) / k,
            "spearman": float(rho)}


def run(policies: list[str], seq_len: int, query: str, k: int = 3, model=None) -> dict:
    """The private search for each policy; returns {policy: results} (also printed)."""
    with Progress("minilm") as bar:   # each stage over a second shows on stderr, as in the CLI
        bar.stage("load the model")
        model = model or models.load("minilm")
        bar.stage("embed the corpus in plaintext")
        corpus_emb = model.encode(CORPUS)                   # the server's plaintext index
        exact_query = model.encode([query])[0]
        bar.done()
    exact_rank = ranking(exact_query, corpus_emb)
    print(f"query: {query!r}\nplaintext top-{k}:")
    for i in exact_rank[:k]:
        print(f"  {CORPUS[i]}")
    results, rows = {}, []
    for policy in policies:
        with Progress(policy) as bar:
            job = private_embedding(model, query, policy=policy, seq_len=seq_len,
                                    step=bar.stage, detail=bar.detail)
            bar.done()
        emb = job.private[0]
        rank = ranking(emb, corpus_emb)
        agree = agreement(rank, exact_rank, k)
        online = job.report.totals()["online"]
        lan, wan = job.report.estimate("lan"), job.report.estimate("wan")
        results[policy] = {
            "ranking": rank.tolist(), "exact_ranking": exact_rank.tolist(), **agree,
            "cosine_vs_exact": float(cosine(emb[None], exact_query[None])[0]),
            "cosine_vs_plaintext": job.fidelity["vs_plaintext"]["cosine_mean"],
            "online_bytes": online["bytes"], "online_rounds": online["rounds"],
            "lan_s": lan["per_run"], "wan_s": wan["per_run"],
            "static_equals_measured": job.static_report.to_json()["totals"] == job.report.to_json()["totals"],
            "top": [CORPUS[i] for i in rank[:k]],
        }
        r = results[policy]
        rows.append([policy, human_bytes(online["bytes"][0]), human_bytes(online["bytes"][1]),
                     str(online["rounds"]), human_seconds(r["lan_s"]), human_seconds(r["wan_s"]),
                     f"{r['cosine_vs_plaintext']:.5f}", f"{r['cosine_vs_exact']:.3f}",
                     f"{r['top1']:.0f}", f"{r['topk_overlap']:.2f}", f"{r['spearman']:.2f}"])
    print()
    print(render(["policy", "online P0", "online P1", "rounds", "lan/run", "wan/run",
                  "cos vs rewritten", "cos vs exact", "top-1", f"top-{k}", "spearman"], rows))
    for policy, r in results.items():
        print(f"\n{policy}: private top-{k}: " + " | ".join(r["top"]))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--policies", default="mpcformer,exact")
    p.add_argument("--seq_len", type=int, default=24)
    p.add_argument("--query", default=QUERY)
    p.add_argument("--k", type=int, default=3)
    a = p.parse_args(argv)
    results = run([s for s in a.policies.split(",") if s], a.seq_len, a.query, a.k)
    return 0 if all(r["static_equals_measured"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
