"""The in-process reference of a two-process model run, printed as JSON (tests/e2e/test_party_processes.py):
one line of its online bytes per party, then a line of its output (with NEW_TOKENS > 1: greedy
generation, one run per token as the pair does it: the bytes of all the runs, the last run's
output, and a last line of the tokens).

    python tests/e2e/party_reference.py FOLDER TEXT SEQ_LEN SEED [NEW_TOKENS]

The job is `pcformer.party_jobs`' (the text is the prompt for a decoder), built for both roles.

Both parties in ONE process, party-sharded over two host devices (`executor="sharded"`, which
tests/e2e/test_mesh.py holds equal, bit for bit, to the whole-program in-process executor and which
XLA compiles several times faster on CPU). The host-device flag must be set before JAX is
imported, hence a script of its own.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2").strip()


def main(folder: str, text: str, seq_len: str, seed: str, new_tokens: str = "1") -> None:
    import pcformer
    from pcformer import party_jobs, party_worker
    from pcformer.compiler import dealer_pass
    settings = party_jobs.PartySettings(model=folder, text=text, prompt=text, seq_len=int(seq_len),
                                        seed=int(seed), new_tokens=int(new_tokens))
    server = party_jobs.build(settings, party_jobs.SERVER)
    client = party_jobs.build(settings, party_jobs.CLIENT, server.manifest)
    args = (server.args[0], *client.args[1:])   # each role's own inputs, in one process
    prog = pcformer.compile(server.fn, *args, owners=server.owners, config=settings.config(),
                            executor="sharded")
    prog._exe.deployment.pinned = dealer_pass.keys(prog.config, prog.ir)[1]   # the dealer's
    sent, tokens = [0, 0], []
    for _ in range(settings.new_tokens):     # run k draws run k's keys, as the pair's step k
        out, rep = prog.run(*args)
        sent = [a + b for a, b in zip(sent, rep.totals()["online"]["bytes"])]
        if settings.new_tokens > 1:
            ids, mask, token = party_jobs.advance(args[-2], args[-1], out)
            args = (*args[:-2], ids, mask)
            tokens.append(token)
    print(json.dumps({"online_bytes": sent}))
    print(json.dumps(party_worker.output_json(out)))
    if tokens:
        print(json.dumps({"tokens": tokens}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
