"""Checks of party-sharded execution, run by tests/e2e/test_mesh.py in a subprocess: they need
several host devices, i.e. XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX is
imported, which the test process (JAX already imported) cannot do for itself.

    python tests/e2e/mesh_checks.py protocols|fss_protocols|separation|hlo|bert|gpt2|minilm|batch|
        batch_compiled|compiled|dealer|dealer_fss|dealer_runs|dealer_runs_fss|model [devices]

Each check prints one JSON line of findings and exits non-zero on the first mismatch.
"""
import functools
import json
import os
import re
import sys

N_DEVICES = int(sys.argv[2]) if len(sys.argv) > 2 else 2
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count={N_DEVICES}")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import pcformer  # noqa: E402
from pcformer.runtime import MPCConfig, decode, encode, mesh, program, x64  # noqa: E402
from pcformer.runtime import protocols as P  # noqa: E402

_BYTES = {"u64": 8, "s64": 8, "f64": 8, "u32": 4, "s32": 4, "f32": 4, "u8": 1, "pred": 1}
_PERMUTE = re.compile(r"=\s*(\w+)\[([\d,]*)\][^=]*?\scollective-permute(?:-start)?\(.*?"
                      r"source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}")


def hlo_permute_bytes(hlo: str, pair_filter=None) -> int:
    """XLA's own count: over every collective-permute of the compiled (per-device) program, its
    operand's bytes times the number of (source, target) pairs, i.e. the bytes on the wire.
    pair_filter(source, target): count only the pairs it accepts (e.g. those between parties)."""
    total = 0
    for line in hlo.splitlines():
        m = _PERMUTE.search(line)
        if not m:
            continue
        dt, dims, pairs = m.groups()
        n = int(np.prod([int(d) for d in dims.split(",") if d], dtype=np.int64))
        found = [tuple(map(int, q)) for q in re.findall(r"\{(\d+),(\d+)\}", pairs)]
        if pair_filter is not None:
            found = [q for q in found if pair_filter(*q)]
        total += n * _BYTES[dt] * len(found)
    return total


def ledger_wire_bytes(entries, phases=("online", "setup")) -> int:
    """What the ledger says moved between the parties: both parties' bytes, summed."""
    return sum(e.bytes[0] + e.bytes[1] for e in entries if e.phase in phases)


def fail(msg):
    print(json.dumps({"ok": False, "error": msg}))
    sys.exit(1)


def _equal_trees(a, b, name):
    """a: in-process outputs; b: sharded. Shares equal as shares, public values per viewer."""
    with x64():
        for k in a:
            va, vb = a[k], b[k]
            if hasattr(va, "data"):
                if not np.array_equal(np.asarray(va.data), np.asarray(vb.data)) or \
                        va.depth != vb.depth:
                    fail(f"{name}: share output {k} differs")
            elif not np.array_equal(np.asarray(va), np.asarray(vb[1])):
                fail(f"{name}: public output {k} differs in party 1's view")


def _protocols(ctx, x, y, w):
    sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
    m = P.truncate(ctx, P.mul(ctx, sx, sy))
    d = P.truncate(ctx, P.dot_general(ctx, sx, P.share(ctx, w, 0)))
    return {"mul": m, "dot": d, "square": P.square(ctx, sx),
            "private": P.dot_general_private(ctx, sy, w, party=0, weight_id="W"),
            "drelu": P.drelu(ctx, sy), "relu": P.relu(ctx, sx),
            "reveal": P.reveal(ctx, m), "reveal_to_1": P.reveal(ctx, d, to=1)}


def _ring_only(ctx, x, y, w):
    sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
    m = P.truncate(ctx, P.mul(ctx, sx, sy))
    d = P.dot_general_private(ctx, m, w, party=0, weight_id="W")
    return {"out": P.reveal(ctx, P.truncate(ctx, d), to=1)}


def _inputs():
    rng = np.random.default_rng(0)
    return (encode(rng.normal(size=(3, 5)), 16), encode(rng.normal(size=(3, 5)), 16),
            encode(rng.normal(size=(5, 4)), 16))


def _both_executors(fn, cfg, name):
    """fn's outputs and ledger in-process (a, la) and party-sharded (b), checked equal: shares
    as shares, public values per viewer, every ledger entry."""
    args = _inputs()
    a, la = program.run(fn, *args, config=cfg)
    b, lb = mesh.run(fn, *args, config=cfg, owners=(0, 1, 0))
    _equal_trees(a, b, name)
    if la.entries != lb.entries:
        fail(f"{name}: ledgers differ")
    return a, la, b


def check_protocols():
    a, la, b = _both_executors(_protocols, MPCConfig(seed=11), "protocols")
    with x64():   # the party that is not revealed to sees nothing useful: its view is not it
        if np.array_equal(np.asarray(b["reveal_to_1"][0]), np.asarray(a["reveal_to_1"])):
            fail("party 0's view of an output revealed to party 1 equals the output")
    return {"entries": len(la.entries), "online_bytes": la.totals()["online"]["bytes"]}


def check_separation():
    """Party separation by construction: on a party's device every share (Beaver and FSS ops,
    whatever the protocol built on the way) is its own [1, ...] row, so a protocol that reads
    "the other party's row" there reads nothing of the other party: JAX clamps the index and
    gives the device's own row again (in one process, where both rows exist, it is the other
    party's share)."""
    from pcformer.runtime.protocols import fss
    seen = {}

    def record(ctx, x, y, w):
        sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
        outs = {"share": sx, "mul": P.truncate(ctx, P.mul(ctx, sx, sy)),
                "private": P.dot_general_private(ctx, sy, w, party=0, weight_id="W"),
                "relu": P.relu(ctx, sx), "fss_relu": fss.relu(ctx, sy),
                "fss_truncate": fss.truncate(ctx, sx), "lut": fss.lut(
                    ctx, sy, encode(np.linspace(-1.0, 1.0, 16), 16), 4)}
        seen[ctx.party_axis is None] = {k: int(v.data.shape[0]) for k, v in outs.items()}
        return outs

    def reads_the_other_row(ctx, x, y, w):
        sy = P.share(ctx, y, 1)
        return {"share": sy, "row_1": sy.data[1]}

    cfg = MPCConfig(seed=5)
    _both_executors(record, cfg, "separation")       # and the outputs and ledgers equal
    if set(seen[True].values()) != {2} or set(seen[False].values()) != {1}:
        fail(f"separation: party-axis sizes in one process / on a device: {seen}")
    a, _, b = _both_executors(reads_the_other_row, cfg, "separation")
    with x64():
        shares = np.asarray(a["share"].data)
        if not np.array_equal(np.asarray(a["row_1"]), shares[1]):
            fail("separation: in one process row 1 is not party 1's share")
        got = np.asarray(b["row_1"])[0]              # what party 0's device read as "row 1"
        if not np.array_equal(got, shares[0]) or np.array_equal(got, shares[1]):
            fail("separation: party 0's device read something other than its own share")
    return {"rows_on_a_device": seen[False], "row_1_on_party_0": "its own share"}


def _fss_protocols(ctx, x, y, w):
    """The FSS family's own ops (docs/fss.md) beside the Beaver products it keeps."""
    from pcformer.runtime.protocols import fss, fss_compare
    sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
    m = fss.truncate(ctx, P.mul(ctx, sx, sy))
    d = fss.drelu(ctx, sy)
    table = encode(np.linspace(-1.0, 1.0, 64), 16)
    return {"truncate": m, "drelu": d, "relu": fss.relu(ctx, sx),
            "select": fss.select(ctx, d, sx, sy), "lut": fss.lut(ctx, sy, table, 6),
            "max": fss_compare.max_(ctx, sx, axis=-1),
            "argmax": fss_compare.argmax(ctx, sy, axis=0),
            "reveal": P.reveal(ctx, m), "relu_to_1": P.reveal(ctx, fss.relu(ctx, sy), to=1)}


def check_fss_protocols():
    """The FSS family under the party-sharded executor: shares, outputs and every ledger entry
    equal the in-process run's, the revealed ReLU is the plaintext's, and XLA's
    collective-permute bytes equal the ledger's online messages in whole words."""
    cfg = MPCConfig(seed=13, protocols="fss")
    _, la, b = _both_executors(_fss_protocols, cfg, "fss_protocols")
    with x64():
        got = decode(np.asarray(b["relu_to_1"][1]), 16)
        want = np.maximum(decode(_inputs()[1], 16), 0.0)
        if not np.allclose(got, want, atol=1e-4):
            fail(f"fss_protocols: revealed relu {got} is not the plaintext's {want}")
    hlo, led, sizes = _hlo_of_runtime(_fss_protocols, cfg)
    words = ledger_word_bytes(led.entries, sizes, cfg.ring_bits)
    if hlo != words or hlo == 0:
        fail(f"fss_protocols: HLO collective-permute bytes {hlo} != ledger in words {words}")
    ops = sorted({e.op for e in la.entries})
    return {"entries": len(la.entries), "ops": ops, "hlo_bytes": hlo,
            "offline_bytes": la.totals()["offline"]["bytes"]}


def _hlo_of_runtime(fn, cfg):
    lowered, led, sizes = mesh.lower_run(fn, *_inputs(), config=cfg, owners=(0, 1, 0))
    with x64():
        return hlo_permute_bytes(lowered.compile().as_text()), led, sizes


def ledger_word_bytes(entries, sizes, ring_bits, phases=("online", "setup")) -> int:
    """The ledger's messages in whole ring words (how XLA moves them): each entry's elements per
    sender (bits / bits per element; the ledger charges ring payloads l bits and boolean ones
    their width <= l) times the word size, times the number of senders. Checks on the way that
    every entry's bits are its elements times a width <= l."""
    total = 0
    for e, (kind, n, senders) in zip(entries, sizes, strict=True):
        if e.phase not in phases:
            continue
        bits = max(e.bits)
        if n == 0 or bits % n or not 0 < bits // n <= ring_bits:
            fail(f"ledger entry {e} is not {n} elements of <= {ring_bits} bits")
        if (senders == 2) != (e.bits[0] == e.bits[1]):
            fail(f"ledger entry {e} disagrees with its message kind {kind}")
        total += n * (ring_bits // 8) * senders
    return total


def check_hlo():
    cfg = MPCConfig(seed=5)
    hlo, led, _ = _hlo_of_runtime(_ring_only, cfg)
    want = ledger_wire_bytes(led.entries)
    if hlo != want or hlo == 0:
        fail(f"ring-only program: HLO collective-permute bytes {hlo} != ledger {want}")
    out = {"ring_only": {"hlo_bytes": hlo, "ledger_bytes": want,
                         "offline_bytes": led.totals()["offline"]["bytes"]}}
    # with comparisons: boolean messages are charged `width` bits per element by the ledger but
    # move as whole ring words through XLA; scale each entry to words (width from the ledger)
    hlo, led, sizes = _hlo_of_runtime(_protocols, cfg)
    words = ledger_word_bytes(led.entries, sizes, cfg.ring_bits)
    if hlo != words:
        fail(f"with comparisons: HLO collective-permute bytes {hlo} != ledger in words {words}")
    out["with_comparisons"] = {"hlo_bytes": hlo, "ledger_word_bytes": words,
                               "ledger_bytes": ledger_wire_bytes(led.entries)}
    return out


H, FF, SEQ, VOCAB = 8, 16, 4, 11
# XLA's cheapest compile: these checks compare bits, not speed
O0 = {"xla_backend_optimization_level": 0}


class _Layer(nn.Module):
    @nn.compact
    def __call__(self, ids):
        x = nn.Embed(VOCAB, H, name="embed")(ids)
        q, k, v = (nn.Dense(H, name=n)(x) for n in ("query", "key", "value"))
        p = jax.nn.softmax(jnp.einsum("bqd,bkd->bqk", q, k) / np.sqrt(H), axis=-1)
        x = nn.LayerNorm(name="ln_1")(x + nn.Dense(H, name="out")(jnp.einsum("bqk,bkd->bqd", p, v)))
        h = nn.gelu(nn.Dense(FF, name="ff_in")(x), approximate=False)
        x = nn.LayerNorm(name="ln_2")(x + nn.Dense(H, name="ff_out")(h))
        return nn.Dense(2, name="classifier")(x[:, 0])


def _bert(executor, m=None, policy="mpcformer"):
    model = _Layer()
    ids = jnp.asarray(np.random.default_rng(1).integers(0, VOCAB, (1, SEQ)), jnp.int32)
    params = model.init(jax.random.PRNGKey(0), ids)
    prog = pcformer.compile(lambda p, i: model.apply(p, i), params, ids, owners=(0, 1),
                            policy=policy, config=MPCConfig(seed=3), executor=executor, mesh=m,
                            compiler_options=O0)
    return prog, params, ids


@functools.lru_cache(maxsize=1)
def _gpt2_folder():
    """A one-layer GPT-2 checkpoint folder (tiny, random weights), made once per check."""
    import tempfile

    from pcformer import models
    return models.make_tiny_gpt2(tempfile.mkdtemp(), n_layer=1, n_embd=16, n_head=2,
                                 vocab_size=64, n_positions=16)


def _gpt2(executor, m=None):
    """The one-layer GPT-2's logits, compiled for `executor`."""
    from pcformer import models
    model = models.load(_gpt2_folder())
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 64, (1, SEQ)), jnp.int32)
    prog = pcformer.compile(lambda p, i: model.forward(p, i), model.params, ids, owners=(0, 1),
                            policy="mpcformer", config=MPCConfig(seed=3), executor=executor,
                            mesh=m)
    return prog, model.params, ids


def check_gpt2():
    return check_bert(_gpt2)


def _minilm(executor, m=None):
    """The real all-MiniLM-L6-v2 checkpoint (six layers), its last hidden state for 4 tokens."""
    from pcformer import models
    model = models.load("minilm")
    ids = jnp.asarray(model.tokenizer(["A private sentence."], padding="max_length",
                                      max_length=SEQ, truncation=True)["input_ids"], jnp.int32)
    prog = pcformer.compile(lambda p, i: model.forward(p, i), model.params, ids, owners=(0, 1),
                            policy="mpcformer", config=MPCConfig(seed=3), executor=executor,
                            mesh=m, compiler_options=O0)
    return prog, model.params, ids


def check_minilm():
    """The real MiniLM, one in-process reference against the party mesh (its first two devices)
    and, with 8 devices, the party x batch mesh too: one reference compile serves both."""
    meshes = [mesh.party_mesh()] + ([mesh.party_mesh(batch=N_DEVICES // 2)]
                                    if N_DEVICES > 2 else [])
    return check_bert(_minilm, meshes)


def check_bert(build=None, meshes=None):
    build = build or _bert
    meshes = meshes or [mesh.party_mesh() if N_DEVICES == 2
                        else mesh.party_mesh(batch=N_DEVICES // 2)]
    ref, params, ids = build("program")
    a, ra = ref.run(params, ids)
    print(f"in-process: {ra.time}", file=sys.stderr, flush=True)
    # each message's elements and senders, from an audited abstract trace (shapes only)
    sizes = mesh.message_sizes([(kind, sender, arrays) for _, kind, sender, arrays
                                in ref._exe.message_shapes(ref._flat((params, ids)))])
    words = ledger_word_bytes(ra.entries, sizes, ref.config.ring_bits)
    found = []
    for m in meshes:
        sh, _, _ = build("sharded", m)
        b, rb = sh.run(params, ids)
        print(f"sharded {dict(m.shape)}: {rb.time}", file=sys.stderr, flush=True)
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            fail(f"bert: sharded output {np.asarray(b)} != in-process {np.asarray(a)}")
        if ra.entries != rb.entries:
            fail("bert: ledgers differ")
        # XLA's count of what the parties sent each other vs the ledger (words: see check_hlo)
        with x64():   # the executable the run used (cached: no second compile)
            hlo = hlo_permute_bytes(sh._exe.compile(sh._flat((params, ids)))[0].as_text())
        groups = m.shape.get("batch", 1)   # the compiled executor runs replicated over a batch
        if hlo != words * groups:          # axis: every group's pair sends the same messages
            fail(f"bert: HLO collective-permute bytes {hlo} != ledger in words {words} x "
                 f"{groups}")
        found.append({"mesh": dict(m.shape), "hlo_bytes": hlo,
                      "ledger_word_bytes": words * groups, "sharded_s": rb.time})
    return {"devices": N_DEVICES, "output": np.asarray(a).ravel()[:8].tolist(),
            "entries": len(ra.entries), "ledger_bytes": ledger_wire_bytes(ra.entries),
            "in_process_s": ra.time, "meshes": found, **found[-1]}


def check_compiled():
    """A small compiled program (dense, ReLU, a secret output kept shared) under
    executor="sharded" == executor="program" bit for bit; then the sharded executor takes that
    secret as a next program's input (split by share over the party axis)."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(-2, 2, (3, 6)), jnp.float32)
    w = jnp.asarray(rng.uniform(-1, 1, (6, 4)), jnp.float32)
    fn = lambda x, w: (jax.nn.relu(x @ w) * 0.5, x @ w)
    res = {}
    for ex in ("program", "sharded"):
        prog = pcformer.compile(fn, x, w, owners=(1, 0), policy=None, reveal=(True, False),
                                config=MPCConfig(seed=1), executor=ex)
        (out, sec), rep = prog.run(x, w)
        with x64():
            res[ex] = (np.asarray(out), np.asarray(sec.share.data), rep.entries)
    a, b = res["program"], res["sharded"]
    for i, name in enumerate(("revealed output", "secret output", "ledger")):
        same = a[i] == b[i] if isinstance(a[i], list) else np.array_equal(a[i], b[i])
        if not same:
            fail(f"compiled: {name} differs between sharded and in-process")
    err = float(np.max(np.abs(a[0] - np.asarray(fn(x, w)[0]))))
    # (the whole-program executor takes no Secret input; the sharded one does)
    nxt = pcformer.compile(lambda s, w: jnp.maximum(s @ w.T, 0.0), sec, w,
                           owners=("secret", 0), policy=None, config=MPCConfig(seed=2),
                           executor="sharded")
    out2, _ = nxt.run(sec, w)
    err2 = float(np.max(np.abs(np.asarray(out2) - np.maximum((x @ w) @ w.T, 0.0))))
    if not (err < 1e-2 and err2 < 1e-2):
        fail(f"compiled: errors vs plaintext {err}, {err2}")
    return {"entries": len(a[2]), "max_abs_err": err, "secret_input_err": err2}


def check_batch():
    """party x batch mesh (2 x N/2): each batch group runs its slice with fold_in(key, b); equal
    to in-process runs of each slice with that key, bit for bit, and each with the same ledger."""
    b = N_DEVICES // 2
    m = mesh.party_mesh(batch=b)
    rng = np.random.default_rng(2)
    x = encode(rng.normal(size=(2 * b, 5)), 16)
    y = encode(rng.normal(size=(2 * b, 5)), 16)
    w = encode(rng.normal(size=(2 * b, 5)), 16)

    def fn(ctx, x, y, w):
        sx, sy = P.share(ctx, x, 0), P.share(ctx, y, 1)
        z = P.relu(ctx, P.truncate(ctx, P.mul_private(ctx, P.mul(ctx, sx, sy), w, party=0)))
        return {"z": z, "open": P.reveal(ctx, z, to=1)}

    key = jax.random.PRNGKey(9)
    out, led = mesh.run(fn, x, y, w, config=MPCConfig(), key=key, mesh=m, owners=(0, 1, 0))
    with x64():
        for g in range(b):
            sl = slice(2 * g, 2 * g + 2)
            ref, lr = program.run(fn, x[sl], y[sl], w[sl], key=jax.random.fold_in(key, g))
            if not np.array_equal(np.asarray(ref["z"].data), np.asarray(out["z"].data)[:, sl]):
                fail(f"batch group {g}: shares differ")
            if not np.array_equal(np.asarray(ref["open"]), np.asarray(out["open"])[1, sl]):
                fail(f"batch group {g}: revealed output differs")
            if lr.entries != led.entries:
                fail(f"batch group {g}: ledger differs")
    return {"mesh": dict(m.shape), "groups": b, "entries": len(led.entries)}


def check_batch_compiled():
    """A compiled tiny BERT on a party x batch mesh (2 x N/2), one prompt per batch group
    (`Program.run_batch`): group b's output equals the in-process whole-program executor's run
    of prompt b under key fold_in(run key, b), bit for bit, with the same ledger; and XLA's
    collective bytes are the ledger's (in words) times the groups."""
    from pcformer.runtime.shares import run_key
    b = N_DEVICES // 2
    ref, params, ids = _bert("program")
    prompts = jnp.asarray(np.random.default_rng(7).integers(0, VOCAB, (b,) + ids.shape), jnp.int32)
    sh, _, _ = _bert("sharded", mesh.party_mesh(batch=b))
    try:
        sh.run_batch(params, prompts[:1] if b > 1 else prompts[0])
        fail("batch: a prompt array without the batch's leading dim was accepted")
    except ValueError as e:
        if "leading batch dim" not in str(e):
            raise
    outs, rep = sh.run_batch(params, prompts)
    key = run_key(ref.config, 0)     # the batch's run key (seeded: run 0's)
    exe = ref._exe
    for g in range(b):
        flat = [exe._as_input(x) for x in ref._flat((params, prompts[g]))]
        compiled, entries, _, _ = exe.compile(flat)
        with x64():
            want = compiled(flat, jax.random.fold_in(key, g), exe.deployment.key(flat))[0][0]
        if not np.array_equal(np.asarray(want), np.asarray(outs[g])):
            fail(f"batch group {g}: output {np.asarray(outs[g])} != in-process {np.asarray(want)}")
        if entries != rep.entries:
            fail(f"batch group {g}: ledger differs")
    if np.array_equal(np.asarray(outs[0]), np.asarray(outs[-1])):
        fail("batch: two different prompts gave the same output")
    sizes = mesh.message_sizes([(kind, sender, arrays) for _, kind, sender, arrays
                                in exe.message_shapes(ref._flat((params, ids)))])
    words = ledger_word_bytes(rep.entries, sizes, ref.config.ring_bits)
    batch_flat = [jnp.asarray(x) for x in jax.tree_util.tree_leaves((params, prompts))]
    with x64():   # the executable the batch ran (cached: no second compile)
        hlo = hlo_permute_bytes(sh._batch.compile(batch_flat)[0].as_text())
    if hlo != words * b:
        fail(f"batch: HLO collective-permute bytes {hlo} != ledger in words {words} x {b}")
    return {"groups": b, "entries": len(rep.entries), "time": rep.time,
            "hlo_bytes": hlo, "ledger_word_bytes": words * b}


def check_model():
    """Tensor parallel: a compiled tiny BERT on a party x model mesh (2 x N/2) with the server's
    weight matrices split over `model` (XLA partitions each party's program): output and ledger
    equal the in-process whole-program executor's bit for bit (ring arithmetic is exact, so the
    partitioned sums are the same), the bytes XLA permutes BETWEEN the parties equal the ledger
    in words, and each device's arguments are smaller than on the party-only mesh."""
    n = N_DEVICES // 2
    ref, params, ids = _bert("program")
    a, ra = ref.run(params, ids)
    found = {}
    for name, m in (("party", mesh.party_mesh()), ("model", mesh.party_mesh(model=n))):
        sh, _, _ = _bert("sharded", m)
        b, rb = sh.run(params, ids)
        if not np.array_equal(np.asarray(a), np.asarray(b)):
            fail(f"model: {name} mesh output {np.asarray(b)} != in-process {np.asarray(a)}")
        if ra.entries != rb.entries:
            fail(f"model: {name} mesh ledger differs")
        with x64():
            compiled = sh._exe.compile(sh._flat((params, ids)))[0]
        party_of = {d.id: p for p, row in enumerate(np.asarray(m.devices).reshape(2, -1))
                    for d in row}
        hlo = compiled.as_text()
        found[name] = {
            "between_parties": hlo_permute_bytes(hlo, lambda s, t: party_of[s] != party_of[t]),
            "within_a_party": hlo_permute_bytes(hlo, lambda s, t: party_of[s] == party_of[t]),
            "argument_bytes": int(compiled.memory_analysis().argument_size_in_bytes),
            "time": rb.time}
    shapes = ref._exe.message_shapes(ref._flat((params, ids)))
    sizes = mesh.message_sizes([(kind, sender, arrays) for _, kind, sender, arrays in shapes])
    words = ledger_word_bytes(ra.entries, sizes, ref.config.ring_bits)
    # a message leaf no dim of which `model` divides stays replicated: each of the party's n
    # devices sends it (mesh._split_over_model); the rest cross once, in slices
    word = ref.config.ring_bits // 8
    copies = 0
    for phase, kind, _, arrays in shapes:
        if phase not in ("online", "setup"):
            continue
        for a in jax.tree_util.tree_leaves(arrays):
            sent = a.shape[1:] if kind == "exchange" else a.shape
            if mesh.model_dim(sent, n) is None:
                copies += (n - 1) * int(np.prod(sent, dtype=np.int64)) * word * \
                    (2 if kind == "exchange" else 1)
    want = {"party": words, "model": words + copies}
    for name, f in found.items():
        if f["between_parties"] != want[name]:
            fail(f"model: {name} mesh permutes {f['between_parties']} bytes between the parties, "
                 f"want {want[name]} (ledger in words {words}, replicated copies {copies})")
    if not found["model"]["argument_bytes"] < found["party"]["argument_bytes"]:
        fail(f"model: per-device arguments not smaller with the weights split: {found}")
    return {"model": n, "ledger_word_bytes": words, "replicated_copies": copies,
            "entries": len(ra.entries), **found}


def _dealer_case(protocols):
    """(function, arguments, owners) the dealer checks run: a tiny BERT for the Beaver family;
    for FSS the two-process job's MLP (pcformer/party_jobs.py), whose ReLU and GeLU comparisons
    exercise the same DCF keys at a fraction of the tiny BERT's compile time."""
    import tempfile

    from pcformer import models, party_jobs
    if protocols == "fss":
        return party_jobs.mlp, party_jobs.mlp_inputs(), (0, 0, 0, 1)
    folder = tempfile.mkdtemp()
    models.make_tiny_bert(folder, num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                          intermediate_size=32, vocab_size=100)
    m = models.load(folder)
    ids = np.array([[1, 5, 7, 9, 2, 0, 0, 0]], np.int32)
    mask = (ids > 0).astype(np.int32)
    return m.embed_fn, (m.params, ids, mask), (0, 1, 1)


def check_dealer(protocols: str = "beaver"):
    """The dealer separated (compiler/dealer_pass.py): each device reads only its own party's
    seed, setup key and tape. A program under the sharded executor with separated material
    equals the in-process simulation bit for bit (same keys), with the same ledger; each party's
    tape is exactly its offline messages; the tapes do not depend on the inputs; material serves
    one run and only the program it was made for. protocols="fss": the same for the FSS family,
    whose keys' correction words reach each device from its tape only."""
    from pcformer.compiler import dealer_pass, sharded
    from pcformer.runtime import dealer_tape
    fn, args, owners = _dealer_case(protocols)
    cfg = MPCConfig(seed=3, protocols=protocols)
    ref = pcformer.compile(fn, *args, owners=owners, policy="mpcformer", config=cfg,
                           executor="sharded", compiler_options=O0)
    want, rep = ref.run(*args)
    flat = ref._flat(args)
    setup = ref._exe.deployment.key([ref._exe._as_input(x) for x in flat])
    mats = dealer_pass.deal(ref.ir, cfg, flat, setup_key=setup)
    exe = sharded.ShardedExecutable(ref.ir, cfg, materials=mats, compiler_options=O0)
    outs, entries, _, _ = exe(flat)
    if not np.array_equal(np.asarray(want).view(np.uint32), np.asarray(outs[0]).view(np.uint32)):
        fail("dealer: the separated run's output differs from the in-process run's")
    if entries != rep.entries:
        fail("dealer: ledgers differ")
    offline = [sum(e.bits[p] for e in entries if e.phase == "offline") for p in (0, 1)]
    tape = [dealer_tape.tape_bits(mats[0].schedule, p) for p in (0, 1)]
    if tape != offline:
        fail(f"dealer: tape bits {tape} != ledger offline bits {offline}")
    again = dealer_pass.deal(ref.ir, cfg, flat, setup_key=setup, zero_inputs=False)
    if not all(np.array_equal(a.tape, b.tape) for a, b in zip(mats, again)):
        fail("dealer: a tape depends on the inputs")
    try:
        exe(flat)
        fail("dealer: material served a second run")
    except ValueError as e:
        reuse = str(e)
    other = pcformer.compile(lambda x: x * x, np.ones(3, np.float32), owners=(1,), config=cfg)
    try:
        sharded.ShardedExecutable(other.ir, cfg, materials=mats)
        fail("dealer: material accepted by another program")
    except dealer_tape.MaterialMismatch as e:
        mismatch = str(e)
    return {"entries": len(entries), "offline_bits": offline, "tape_words":
            [int(x.tape.size) for x in mats], "setup_words": [int(x.setup_word) != 0 for x in mats],
            "reuse": reuse, "mismatch": mismatch}


def check_dealer_runs(protocols: str = "beaver"):
    """`compile(..., executor="sharded", dealer="separated")`: the dealer's pass deals every run
    (and every batch group) its own material before the run. Seeded, `run` (two runs) and
    `run_batch` (2 x 2 party x batch mesh) equal the simulated dealer's bit for bit with the
    same ledgers; fresh, the dealer's seeds differ between runs and between groups, and the
    outputs still match the plaintext."""
    from pcformer import party_jobs
    from pcformer.compiler import sharded
    w1, b1, w2, x = party_jobs.mlp_inputs()
    owners = (0, 0, 0, 1)
    m = mesh.party_mesh(batch=2)
    prompts = np.stack([x, -0.5 * x])
    found = {}

    def programs(dealer, seed):
        cfg = MPCConfig(seed=seed, protocols=protocols)
        return pcformer.compile(party_jobs.mlp, w1, b1, w2, x, owners=owners, config=cfg,
                                executor="sharded", mesh=m, dealer=dealer, compiler_options=O0)

    sim, sep = programs("simulated", 5), programs("separated", 5)
    for run in range(2):            # run 1 takes run 1's material, not run 0's again
        (a, ra), (b, rb) = sim.run(w1, b1, w2, x), sep.run(w1, b1, w2, x)
        if not np.array_equal(np.asarray(a), np.asarray(b)) or ra.entries != rb.entries:
            fail(f"dealer_runs: run {run} with the separated dealer differs from the simulated")
        if not rb.time.get("deal_s", 0) > 0:
            fail(f"dealer_runs: no dealer time in the report: {rb.time}")
    (a, ra), (b, rb) = sim.run_batch(w1, b1, w2, prompts), sep.run_batch(w1, b1, w2, prompts)
    for g in range(2):
        if not np.array_equal(np.asarray(a[g]), np.asarray(b[g])):
            fail(f"dealer_runs: batch group {g} with the separated dealer differs")
    if ra.entries != rb.entries:
        fail("dealer_runs: batch ledgers differ")
    fresh = programs("separated", None)
    words = []
    real = sharded.ShardedExecutable._deal

    def recorded(self, flat, group=None):
        mats = real(self, flat, group)
        words.append((int(mats[0].dealer_word), int(mats[1].dealer_word)))
        return mats

    sharded.ShardedExecutable._deal = recorded
    try:
        for _ in range(2):
            outs, _ = fresh.run_batch(w1, b1, w2, prompts)
            for g in range(2):
                want = party_jobs.mlp(w1, b1, w2, prompts[g])
                err = float(np.max(np.abs(np.asarray(outs[g]) - np.asarray(want))))
                if not err < 0.05:
                    fail(f"dealer_runs: fresh batch group {g} is {err} from the plaintext")
    finally:
        sharded.ShardedExecutable._deal = real
    if len(words) != 4 or len(set(words)) != 4:
        fail(f"dealer_runs: the dealer's seeds repeat across runs or groups: {words}")
    found.update(entries=len(rb.entries), deal_s=rb.time["deal_s"], fresh_dealings=len(words))
    return found


if __name__ == "__main__":
    which = sys.argv[1]
    result = {"protocols": check_protocols, "fss_protocols": check_fss_protocols,
              "separation": check_separation,
              "hlo": check_hlo, "bert": check_bert,
              "batch": check_batch, "compiled": check_compiled, "dealer": check_dealer,
              "batch_compiled": check_batch_compiled, "model": check_model,
              "dealer_fss": functools.partial(check_dealer, "fss"),
              "dealer_runs": check_dealer_runs,
              "dealer_runs_fss": functools.partial(check_dealer_runs, "fss"),
              "gpt2": check_gpt2, "minilm": check_minilm}[which]()
    print(json.dumps({"ok": True, which: result}))
