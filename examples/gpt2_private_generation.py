"""Private GPT-2 generation: the client's prompt and the generated tokens stay the client's.

The server holds GPT-2's weights, the client its prompt. Greedy decoding runs privately: the
prompt in one two-party program, then one program per new token, the key/value cache kept in
secret shares between them; each new token is revealed to the client only. The script compares
the private tokens with plaintext greedy decoding (of the rewritten program and of the exact
model) and prints the cost per generated token.

    python examples/gpt2_private_generation.py                          # a small GPT-2 is built
    python examples/gpt2_private_generation.py --checkpoint=path/to/gpt2 --max_new_tokens=4

With no --checkpoint, a small random GPT-2 checkpoint folder (Hugging Face layout, tokenizer
trained offline) is written to a temporary folder, removed at the end: no weights can be
downloaded here. Its text is gibberish; the point is the cost and the agreement with plaintext
decoding. The generation's rounds are the prompt's program's plus each token's (they run one
after another): the table shows both the per-token figures and the total.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from pcformer import models
from pcformer.inference import private_generation
from pcformer.progress import Progress
from pcformer.tables import human_bytes, render


def run(checkpoint: str | None, prompt: str, max_new_tokens: int, policies: list[str],
        seq_len: int, tiny: dict | None = None) -> dict:
    """Private generation for each policy; returns {policy: results} (also printed)."""
    if checkpoint is None:
        with tempfile.TemporaryDirectory(prefix="pcformer-gpt2-") as tmp:  # removed afterwards
            models.make_tiny_gpt2(tmp, **(tiny or {}))
            print(f"built a small GPT-2 checkpoint in {tmp} (removed at the end)")
            return run(tmp, prompt, max_new_tokens, policies, seq_len)
    with Progress("gpt2") as bar:   # each stage over a second shows on stderr, as in the CLI
        bar.stage("load the model")
        model = models.load(checkpoint)
        bar.done()
    print(f"prompt: {prompt!r}")
    results, rows = {}, []
    for policy in policies:
        with Progress(policy) as bar:
            job = private_generation(model, prompt, max_new_tokens, policy=policy,
                                     seq_len=seq_len, step=bar.stage, detail=bar.detail)
            bar.done()
        per = job.per_token
        static_ok = job.static_report.to_json()["totals"] == job.report.to_json()["totals"]
        results[policy] = {
            "token_ids": job.token_ids, "plaintext_ids": job.plaintext_ids,
            "exact_ids": job.exact_ids, "text": job.text,
            "agreement_plaintext": job.agreement,
            "agreement_exact": job.fidelity["vs_exact"]["token_agreement"],
            "per_token": per, "totals": job.report.totals(),
            "static_equals_measured": static_ok,
        }
        rows.append([policy, " ".join(map(str, job.token_ids)), f"{job.agreement:.2f}",
                     f"{results[policy]['agreement_exact']:.2f}",
                     human_bytes(per["online_bytes"][0]), human_bytes(per["online_bytes"][1]),
                     str(per["online_rounds"]), str(job.report.totals()["online"]["rounds"]),
                     "yes" if static_ok else "NO"])
        print(f"\n{policy}: private continuation {job.text!r}; plaintext (rewritten) "
              f"{job.plaintext_text!r}")
    print()
    print(render(["policy", "private token ids", "= rewritten", "= exact", "online P0/token",
                  "online P1/token", "rounds/token", "rounds in all", "static == measured"], rows))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=None, help="a GPT-2 checkpoint folder (HF layout)")
    p.add_argument("--prompt", default="Once upon a time")
    p.add_argument("--max_new_tokens", type=int, default=4)
    p.add_argument("--policies", default="mpcformer,exact")
    p.add_argument("--seq_len", type=int, default=32)
    p.add_argument("--n_layer", type=int, default=2, help="layers of the built checkpoint")
    p.add_argument("--n_embd", type=int, default=64, help="width of the built checkpoint")
    a = p.parse_args(argv)
    results = run(a.checkpoint, a.prompt, a.max_new_tokens,
                  [s for s in a.policies.split(",") if s], a.seq_len,
                  tiny={"n_layer": a.n_layer, "n_embd": a.n_embd})
    return 0 if all(r["static_equals_measured"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
