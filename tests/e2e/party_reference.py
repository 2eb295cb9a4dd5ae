"""The in-process reference of a two-process BERT run, printed as JSON (tests/e2e/test_party_processes.py).

    python tests/e2e/party_reference.py FOLDER TEXT SEQ_LEN SEED

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


def main(folder: str, text: str, seq_len: str, seed: str) -> None:
    import pcformer
    from pcformer import models, party_worker
    from pcformer.config import MPCConfig
    from pcformer.inference import tokenize_padded
    model = models.load(folder)
    ids, mask = tokenize_padded(model, [text], int(seq_len))
    prog = pcformer.compile(model.embed_fn, model.params, ids, mask, owners=(0, 1, 1),
                            config=MPCConfig(seed=int(seed)), executor="sharded")
    out, _ = prog.run(model.params, ids, mask)
    print(json.dumps(party_worker.output_json(out)))


if __name__ == "__main__":
    main(*sys.argv[1:5])
