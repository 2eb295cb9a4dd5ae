"""Peak memory and time of real-size private inference: GPT-2 small generation, BERT-base.

    python benchmarks/memory.py [--jobs gpt2,bert-base] [--policy mpcformer]
                                [--prompt_tokens 128] [--new_tokens 8] [--seq_len 128]

Each job runs in a fresh child process (so its peak resident memory, `ru_maxrss`, is its own):
- `gpt2`: a GPT-2 small checkpoint folder (the `gpt2` preset's shapes: 12 layers, hidden 768,
  vocabulary 50257; random weights, a small tokenizer trained offline) written to a temporary
  folder, then `pcformer.inference.private_generation` of `--new_tokens` tokens after a prompt of
  exactly `--prompt_tokens` tokens, the KV cache in shares (what `pcformer run` does);
- `bert-base`: a BERT-base folder (12 layers, hidden 768, MLP 3072; random weights, MiniLM's
  uncased WordPiece tokenizer, which has BERT-base's 30522-word vocabulary), then
  `pcformer.inference.private_embedding` of one sentence padded to `--seq_len` tokens.
Weights are random: the figures are about cost and memory, not accuracy. Printed per job: peak
RSS, front end / XLA compile / simulate seconds, online bytes per party and rounds. The last line
is JSON of everything.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, shutil, sys, time
from pathlib import Path
job, policy, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
prompt_tokens, new_tokens, seq_len = map(int, sys.argv[4:7])
import pcformer
from pcformer import inference, models
from pcformer.models import tiny
t0 = time.perf_counter()
if job == "gpt2":
    tiny.make_tiny_gpt2(folder, n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                        n_positions=1024)
else:
    tiny.make_tiny_bert(folder, num_hidden_layers=12, hidden_size=768, num_attention_heads=12,
                        intermediate_size=3072, vocab_size=30522, max_position_embeddings=512)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(models.minilm_folder() / name, folder / name)
model = models.load(folder)
build_s = time.perf_counter() - t0
words = "the quick brown fox jumps over a lazy dog while private inference keeps it secret".split()


def text_of(n_tokens):
    # the longest run of words whose tokens (special tokens included) fit in n_tokens
    text, k = "", 0
    while True:
        longer = (text + " " + words[k % len(words)]).strip()
        if len(model.tokenizer(longer)["input_ids"]) > n_tokens:
            return text
        text, k = longer, k + 1


if job == "gpt2":
    text = text_of(prompt_tokens)
    tokens = len(model.tokenizer(text)["input_ids"])
    run = inference.private_generation(model, text, new_tokens, policy=policy,
                                       seq_len=tokens + new_tokens)
else:
    text = text_of(seq_len)
    run = inference.private_embedding(model, text, policy=policy, seq_len=seq_len)
    tokens = seq_len
totals = run.report.totals()
print(json.dumps({
    "job": job, "policy": policy, "tokens": tokens, "build_s": build_s,
    "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    **{k: run.times[k] for k in ("frontend_s", "xla_compile_s", "simulate_s")},
    "online_bytes": totals["online"]["bytes"], "online_rounds": totals["online"]["rounds"],
    "offline_bytes": totals["offline"]["bytes"],
    "static_equals_measured": run.report.totals() == run.static_report.totals()}))
"""


def child(job: str, args) -> dict:
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([sys.executable, "-c", CHILD, job, args.policy, f"{d}/{job}",
                              str(args.prompt_tokens), str(args.new_tokens), str(args.seq_len)],
                             capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{job} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", default="gpt2,bert-base")
    p.add_argument("--policy", default="mpcformer")
    p.add_argument("--prompt_tokens", type=int, default=128)
    p.add_argument("--new_tokens", type=int, default=8)
    p.add_argument("--seq_len", type=int, default=128)
    args = p.parse_args(argv)
    results = []
    for job in args.jobs.split(","):
        r = child(job, args)
        results.append(r)
        what = (f"{r['tokens']}-token prompt + {args.new_tokens} new tokens" if job == "gpt2"
                else f"{r['tokens']} tokens")
        print(f"{job:9s} {r['policy']:9s} {what}: peak RSS {r['peak_rss_gib']:.2f} GiB; front end "
              f"{r['frontend_s']:.1f} s, XLA compile {r['xla_compile_s']:.1f} s, simulate "
              f"{r['simulate_s']:.1f} s; online {r['online_bytes'][0] / 1e6:.1f} / "
              f"{r['online_bytes'][1] / 1e6:.1f} MB, {r['online_rounds']} rounds; "
              f"static == measured: {r['static_equals_measured']}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
