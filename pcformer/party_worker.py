"""The JAX side of one party process (`python -m pcformer.party_worker SETTINGS_JSON`): started and
watched by `pcformer party` (pcformer/party_cli.py), which turns its exit into a clear message.

Steps, each announced on stdout as `phase NAME` (the supervisor bounds the waits by them):
1. connect: `jax.distributed.initialize` (process 0 = server, which also hosts the coordinator),
   CPU collectives over gloo, one CPU device per process;
2. agree: the server publishes the public facts of the run in the coordinator's key-value store
   (its weights' manifest: shapes only; the parties' shared run key); the client reads them; both
   publish their program's fingerprint and refuse to run when they differ (different flags),
   and each checks that its dealer material (a file from the dealer, compiler/dealer_pass.py)
   was made for this program;
3. compile: each process compiles the same party-sharded program for its own device;
4. run: after a barrier (both compiled), one run: every message a collective between processes
   (greedy generation: one run per new token, each with its own material and run key);
5. result: the client prints `result {json}` (its revealed outputs, bit-exact); both wait at a
   last barrier so neither leaves while the other still needs it.

Errors print one line `party error: ...` on stderr and exit with status 4.

With `dealer_dir` in its spec the process is the dealer instead: it writes each party's
material (compiler/dealer_pass.py) there and exits; it never joins the parties.
"""
from __future__ import annotations

import json
import sys
import time

PEER_EXIT = 4
KEY_PREFIX = "pcformer/party/"


class PartyError(RuntimeError):
    """The peer is missing, late or disagrees: one line for the user."""


def phase(name: str, bound_s: float | None = None) -> None:
    """Announce a step (and, for a wait whose bound only this process knows, that bound)."""
    print(f"phase {name}" + ("" if bound_s is None else f" {bound_s:.0f}"), flush=True)


def compiled_wait_s(peer_s: int, compile_s: float) -> float:
    """How long to wait at the `compiled` barrier: the peer compiles the same program, on its
    own machine and load, so it may take longer than we did: allow it twice our time more."""
    return peer_s + 2 * compile_s


def connect(coordinator: str, party: int, connect_timeout: int, peer_timeout: int,
            devices: int = 1) -> None:
    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", devices)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=2,
                                   process_id=party, initialization_timeout=connect_timeout,
                                   heartbeat_timeout_seconds=peer_timeout,
                                   shutdown_timeout_seconds=peer_timeout)
    except Exception as e:  # noqa: BLE001 - JAX raises plain RuntimeErrors / XlaRuntimeErrors
        raise PartyError(f"could not join the peer through the coordinator {coordinator} within "
                         f"{connect_timeout} s ({_first_line(e)})") from None
    # both backends start now: each waits for the other's device topology, which must not
    # wait behind anything else (e.g. the client waiting for the server's manifest)
    if len(jax.devices()) != 2 * devices:
        raise PartyError(f"expected {devices} device(s) per process, found {jax.devices()}")


def _client():
    from pcformer.compiler import compat
    return compat.distributed_client()


def publish(name: str, value: str) -> None:
    _client().key_value_set(KEY_PREFIX + name, value)


def fetch(name: str, timeout_s: int, what: str) -> str:
    try:
        return _client().blocking_key_value_get(KEY_PREFIX + name, int(timeout_s * 1000))
    except Exception as e:  # noqa: BLE001 - the coordinator's timeout / unavailable errors
        raise PartyError(f"no {what} from the peer within {timeout_s} s ({_first_line(e)})") from None


def barrier(name: str, timeout_s: int, what: str) -> None:
    try:
        _client().wait_at_barrier(KEY_PREFIX + name, int(timeout_s * 1000))
    except Exception as e:  # noqa: BLE001
        raise PartyError(f"the peer did not reach '{what}' within {timeout_s} s "
                         f"({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _job(settings, party: int, connect_s: int):
    """This role's job: the server builds it and publishes its weights' manifest; the client
    builds its own from that manifest."""
    from pcformer import party_jobs
    if party == party_jobs.SERVER:
        job = party_jobs.build(settings, party)
        publish("manifest", json.dumps(job.manifest))
        return job
    manifest = json.loads(fetch("manifest", connect_s, "weights manifest"))
    try:
        return party_jobs.build(settings, party, manifest)
    except ValueError as e:     # the client's own input (too long, wrong shape, ...): say so
        raise PartyError(f"the client's input: {e}") from None


def _exchange_run_key(party, config, connect_s, step: int = 0):
    """The parties' shared seed (input sharing) of run `step`, drawn by the server: fresh, or
    the seed's run key of that run (a seeded pair equals the in-process simulation). The
    dealer's seeds are not in it."""
    import numpy as np
    if party == 0:
        from pcformer.runtime.shares import run_key
        key = np.asarray(run_key(config, step))
        publish(f"keys/{step}", json.dumps({"run": [int(w) for w in key.ravel()]}))
        return key
    got = json.loads(fetch(f"keys/{step}", connect_s, "run key"))
    return np.asarray(got["run"], np.uint32)


def _material(path: str, prog, party: int):
    """This party's dealer material, refused (one line) when it was made for another program."""
    from pcformer.compiler import dealer_pass
    from pcformer.runtime.dealer_tape import MaterialMismatch
    try:
        material = dealer_pass.Material.load(path)
    except (OSError, ValueError, KeyError) as e:
        raise PartyError(f"could not read the dealer material {path}: {_first_line(e)}") from None
    try:
        dealer_pass.check_for(material, prog, party)
    except MaterialMismatch as e:
        raise PartyError(str(e)) from None
    return material


def work(settings, party: int, coordinator: str, connect_s: int, peer_s: int,
         material_path: str) -> dict:
    phase("connect")
    connect(coordinator, party, connect_s, peer_s, settings.model_parallel)
    phase("agree")
    from pcformer import party_jobs
    job = _job(settings, party, connect_s)
    prog, flat = party_jobs.lower(settings, job)
    config = settings.config()
    material = _material(material_path, prog, party)
    key = _exchange_run_key(party, config, connect_s)
    from pcformer.compiler.dealer_pass import fingerprint
    mine = fingerprint(prog)
    agreed = f"{mine}/{settings.new_tokens}/{settings.model_parallel}"   # program, runs, mesh
    publish(f"program/{party}", agreed)
    theirs = fetch(f"program/{1 - party}", connect_s, "program fingerprint")
    if theirs != agreed:
        raise PartyError("the two processes compiled different programs or runs (give both the "
                         "same --job, --model, --seq_len, --max_new_tokens, --model_parallel, "
                         "--policy and MPC flags)")
    phase("compile")
    from pcformer.compiler.party_process import ProcessPartyExecutable, process_mesh
    exe = ProcessPartyExecutable(prog, config, party, material,
                                 process_mesh(settings.model_parallel))
    t0 = time.perf_counter()
    exe.compile([exe._as_input(x) for x in flat])
    compile_s = time.perf_counter() - t0
    wait_s = compiled_wait_s(peer_s, compile_s)
    phase("wait", wait_s)
    barrier("compiled", wait_s, "compiled")
    outs, entries, run_s, tokens = _runs(settings, exe, flat, key, material_path, connect_s)
    phase("done")
    barrier("done", peer_s, "done")
    from pcformer.runtime.ledger import totals_of
    totals = totals_of(entries)   # bytes per message rounded up, as every report counts them
    result = {"party": party, "outputs": [output_json(o) for o in outs],
              "online_bytes": list(totals["online"]["bytes"]),
              "offline_bytes": totals["offline"]["bytes"][party],
              "reproducible": material.reproducible, "runs": settings.new_tokens,
              "devices": settings.model_parallel,
              "compile_s": compile_s, "run_s": run_s, "fingerprint": mine}
    if tokens:
        result["tokens"] = tokens
        result["generated"] = job.tokenizer.decode(tokens, skip_special_tokens=True)
    return result


def _runs(settings, exe, flat, key, material_path, connect_s):
    """One run, or one per new token (greedy generation): each with its own dealer material and
    run key; the client writes each revealed token into its own ids before the next run
    (`party_jobs.advance`), the server's inputs stay as they are. Returns (the last run's
    outputs, every run's ledger entries, run seconds in all, the client's tokens)."""
    from pcformer import party_jobs
    entries, run_s, tokens = [], 0.0, []
    for step in range(settings.new_tokens):
        if step:
            exe.take(_material(party_jobs.material_path(material_path, step), exe.prog,
                               exe.party))
            key = _exchange_run_key(exe.party, settings.config(), connect_s, step)
        phase("run")
        outs, step_entries, times = exe.run_party(flat, key)
        entries += step_entries
        run_s += times["run_s"]
        if settings.new_tokens > 1 and exe.party == party_jobs.CLIENT:
            ids, mask, token = party_jobs.advance(flat[-2], flat[-1], outs[0])
            flat = [*flat[:-2], ids, mask]
            tokens.append(token)
    return outs, entries, run_s, tokens


def output_json(x):
    """An output as {shape, dtype, values} (floats by repr: exact for float32), or None."""
    import numpy as np
    if x is None:
        return None
    a = np.asarray(getattr(x, "data", x))
    return {"shape": list(a.shape), "dtype": str(a.dtype), "values": a.ravel().tolist()}


def from_json(out: dict):
    """The array `output_json` wrote, bit for bit."""
    import numpy as np
    return np.asarray(out["values"], dtype=out["dtype"]).reshape(out["shape"])


def deal(settings, out_dir: str) -> int:
    """The dealer's process (`spec["dealer_dir"]`): each party's material, one file each, printed
    as `material ROLE PATH` lines."""
    from pcformer.party_jobs import prepare_material
    try:
        paths = prepare_material(settings, out_dir)
    except (ValueError, OSError) as e:
        print(f"party error: {_first_line(e)}", file=sys.stderr, flush=True)
        return PEER_EXIT
    for role, path in paths.items():
        print(f"material {role} {path}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    from pcformer.party_jobs import PartySettings
    spec = json.loads(argv[1])
    settings = PartySettings(**spec["settings"])
    if "dealer_dir" in spec:
        return deal(settings, spec["dealer_dir"])
    try:
        result = work(settings, spec["party"], spec["coordinator"], spec["connect_timeout"],
                      spec["peer_timeout"], spec["material"])
    except PartyError as e:
        print(f"party error: {e}", file=sys.stderr, flush=True)
        return PEER_EXIT
    print("result " + json.dumps(result), flush=True)
    import jax
    jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
