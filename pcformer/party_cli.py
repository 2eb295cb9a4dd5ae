"""`pcformer party --role=server|client --coordinator=HOST:PORT` and `pcformer run --processes=2`.

A party command runs its party's process (pcformer/party_worker.py: the JAX side) as a child and
watches it: the child announces each step on stdout (`phase NAME`), and a step that waits on the
peer has a bound. Whatever goes wrong (the peer dies, stops answering, never connects, compiled a
different program) the command exits with status 4 and ONE line saying which, within the bound,
and prints no result: the result is printed only when the child finished the run and both
processes reached the last barrier.

`pcformer run --processes=2` is the dealer and starts the pair on a free localhost port: it
prepares each party's dealer material (compiler/dealer_pass.py) in a private folder, hands
each party process only its own file, and prints the client's output (the server's weights stay
in the server's process, the text in the client's).
"""
from __future__ import annotations

import dataclasses
import json
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl import flags

from .party_jobs import ROLES, PartySettings

FLAGS = flags.FLAGS
PEER_FAULT = 4
# Signs, in a child's log, that JAX's coordination service saw the other process go silent.
GLOG_LINE = re.compile(r"^[IWEF]\d{4} ")   # JAX's C++ log lines: not the error itself
PEER_LOST_LINE = "the peer process died or stopped answering"
PEER_LOST = ("heartbeat timeout", "another task died", "detected fatal errors", "unavailable")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """connect: to reach the coordinator and agree; peer: the longest a waiting step may wait for
    the peer (also JAX's heartbeat timeout: how soon a dead peer is noticed)."""

    connect_s: int = 120
    peer_s: int = 60
    announced: float | None = None     # the bound the child gave with its current step

    def bound(self, phase: str) -> float | None:
        """How long the child may stay in `phase` (None: local work, not waiting on the peer;
        a dead peer still ends it through the heartbeat within peer_s). A bound the child
        announced (its own wait's, plus 30 s) comes first."""
        if self.announced is not None:
            return self.announced + 30
        return {"start": self.connect_s + 60, "connect": self.connect_s + 30,
                "wait": self.peer_s + 30, "run": self.peer_s, "done": self.peer_s + 30}.get(phase)


def parse_phase(line: str) -> tuple[str, float, float | None]:
    """(step, when it began, its announced bound or None) from `phase NAME [BOUND_S]`."""
    words = line.split()
    return words[1], time.monotonic(), float(words[2]) if len(words) > 2 else None


def settings_from_flags() -> PartySettings:
    """The settings both processes run under, their MPCConfig checked here (a bad value is a
    usage error before any process starts)."""
    from .cli import UsageError
    settings = _settings_from_flags()
    try:
        settings.config()
    except (TypeError, ValueError) as e:
        raise UsageError(str(e)) from None
    return settings


def _settings_from_flags() -> PartySettings:
    return PartySettings(job=FLAGS.job, model=FLAGS.model,
                         text=FLAGS.text, prompt=FLAGS.prompt,
                         image=FLAGS.image or "", seq_len=FLAGS.seq_len, policy=FLAGS.policy,
                         seed=FLAGS.seed, ring_bits=int(FLAGS.ring_bits),
                         frac_bits=FLAGS.frac_bits, trunc_mode=FLAGS.trunc_mode,
                         protocols=FLAGS.protocols, compare_bits=FLAGS.compare_bits,
                         # a decoder's pair computes the next token's logits unless asked to
                         # generate (in one process, --max_new_tokens has a default of its own)
                         new_tokens=FLAGS.max_new_tokens if FLAGS["max_new_tokens"].present
                         else 1, model_parallel=FLAGS.model_parallel)


def timeouts_from_flags() -> Timeouts:
    return Timeouts(FLAGS.connect_timeout, FLAGS.peer_timeout)


def child_env() -> dict:
    """The environment of a party process: CPU only, one device (a forced host-device count
    would give a process two devices), unbuffered output."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    xla = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(xla)
    return env


def _read_lines(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


@dataclasses.dataclass
class Outcome:
    """How a party process ended: status 0 with its result, or an error line."""

    status: int
    result: dict | None = None
    error: str = ""
    phase: str = ""          # the step it was in when it ended


def explain(returncode: int, log: str) -> str:
    """One line for a child that failed: its own `party error`, the peer lost, or the rest."""
    lines = [line for line in log.splitlines() if line.strip()]
    own = [line for line in lines if line.startswith("party error: ")]
    if own:
        return own[-1][len("party error: "):]
    if any(sign in log.lower() for sign in PEER_LOST):
        return PEER_LOST_LINE + " (JAX's coordination service lost its heartbeat)"
    plain = [line for line in lines if not GLOG_LINE.match(line)] or lines or ["no output"]
    last = plain[-1]
    return f"the party process failed (exit status {returncode}): {last[:200]}"


def supervise(proc: subprocess.Popen, log_path: str, timeouts: Timeouts,
              progress=lambda phase: None) -> Outcome:
    """Watch a party process until it ends or a step outlasts its bound (then kill it)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    phase, since, result = "start", time.monotonic(), None
    while True:
        bound = timeouts.bound(phase)
        wait = None if bound is None else max(0.0, since + bound - time.monotonic())
        try:
            line = lines.get(timeout=wait)
        except queue.Empty:
            proc.kill()
            proc.wait()
            return Outcome(PEER_FAULT, error=f"no answer from the peer within {bound:g} s "
                                             f"(step '{phase}'); stopped", phase=phase)
        if line is None:
            break
        if line.startswith("phase "):
            phase, since, announced = parse_phase(line)
            timeouts = dataclasses.replace(timeouts, announced=announced)
            progress(phase)
        elif line.startswith("result "):
            result = json.loads(line[len("result "):])
    returncode = proc.wait()
    if returncode == 0 and result is not None:
        return Outcome(0, result)
    with open(log_path, errors="replace") as f:
        return Outcome(PEER_FAULT, error=explain(returncode, f.read()), phase=phase)


def start_worker(settings: PartySettings, party: int, coordinator: str, timeouts: Timeouts,
                 log, material: str) -> subprocess.Popen:
    spec = {"settings": dataclasses.asdict(settings), "party": party,
            "coordinator": coordinator, "connect_timeout": timeouts.connect_s,
            "peer_timeout": timeouts.peer_s, "material": material}
    return subprocess.Popen([sys.executable, "-m", "pcformer.party_worker", json.dumps(spec)],
                            stdout=subprocess.PIPE, stderr=log, text=True, env=child_env(),
                            preexec_fn=die_with_parent)


def die_with_parent() -> None:
    """(Linux, in the child before exec) The party process dies with its watcher: a watcher
    killed outright must not leave its party running on alone."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_party(settings: PartySettings, role: str, coordinator: str, timeouts: Timeouts,
              material: str, progress=lambda phase: None) -> Outcome:
    """One party's process (with its own dealer `material` file), started and watched to its
    end."""
    with tempfile.NamedTemporaryFile("w+", prefix=f"pcformer-{role}-", suffix=".log",
                                     delete=False) as log:
        try:
            proc = start_worker(settings, ROLES[role], coordinator, timeouts, log, material)
            out = supervise(proc, log.name, timeouts, progress)
        finally:
            os.unlink(log.name)
    if out.phase == "connect" and out.error.startswith(PEER_LOST_LINE):
        # a peer lost before the two had joined was never there
        out = dataclasses.replace(out, error=f"could not join the peer through the coordinator "
                                             f"{coordinator} within {timeouts.connect_s} s")
    return out


def progress_of(role: str):
    """Each step of a party process, as `[role] step` on stderr (the tests wait on these)."""
    return lambda phase: print(f"[{role}] {phase}", file=sys.stderr, flush=True)


def describe(role: str, result: dict) -> list[str]:
    sent = result["online_bytes"]
    n = result.get("runs", 1)
    runs = f" ({n} runs: one per new token)" if n > 1 else ""
    seeded = ("reproducible mode (--seed): every key derives from the seed, NOT secure"
              if result["reproducible"] else "fresh keys from the operating system")
    lines = [f"party     {role} (party {result['party']} of 2: one process each)",
             f"program   fingerprint {result['fingerprint']} (both processes compiled the same)",
             *([f"devices   {result['devices']} per party (the server's weight matrices split "
                f"over them)"] if result.get("devices", 1) > 1 else []),
             f"time      XLA compile {result['compile_s']:.1f} s, run {result['run_s']:.2f} s"
             + runs,
             f"online    server sent {sent[0]} B, client sent {sent[1]} B" + runs,
             f"dealer    a third party: this process held only its own seed and tape "
             f"({result['offline_bytes']} B of corrections dealt to it); {seeded}"]
    if role == "client":
        if "tokens" in result:
            lines.append(f"generated {json.dumps(result['generated'])} (greedy token ids "
                         f"{result['tokens']}; each revealed to the client only)")
        lines.append("result    " + json.dumps({"outputs": result["outputs"]}))
    else:
        lines.append("result    (none: outputs are revealed to the client)")
    return lines


def dealer() -> int:
    """`pcformer party --role=dealer --dealer_material=DIR`: each party's material, one file each."""
    settings = settings_from_flags()
    status, paths = prepare_material(settings, FLAGS.dealer_material)
    if status != 0:
        print(f"pcformer party: error: dealer: {paths}", file=sys.stderr, flush=True)
        return status
    more = (f" and its {settings.new_tokens - 1} later steps' files PATH.stepK"
            if settings.new_tokens > 1 else "")
    for role, path in paths.items():
        print(f"dealer    {role}: {path}{more} (give it to the {role} only)", flush=True)
    return 0


def prepare_material(settings: PartySettings, out_dir: str) -> tuple:
    """The dealer's step in a process of its own (JAX stays out of this watcher, which forks
    the parties): (0, {role: path}) or (4, its one-line error)."""
    spec = {"settings": dataclasses.asdict(settings), "dealer_dir": out_dir}
    done = subprocess.run([sys.executable, "-m", "pcformer.party_worker", json.dumps(spec)],
                          capture_output=True, text=True, env=child_env())
    paths = {w[1]: w[2] for w in (line.split(" ", 2) for line in done.stdout.splitlines())
             if w[0] == "material"}
    if done.returncode != 0 or set(paths) != set(ROLES):
        return PEER_FAULT, explain(done.returncode, done.stderr)
    return 0, paths


def party() -> int:
    """`pcformer party --role=server|client|dealer ...`."""
    from .cli import UsageError
    if FLAGS.role == "dealer":
        if not FLAGS.dealer_material:
            raise UsageError("pcformer party --role=dealer needs --dealer_material=DIR (where "
                             "it writes each party's file)")
        return dealer()
    if FLAGS.role is None or FLAGS.coordinator is None or not FLAGS.dealer_material:
        raise UsageError("pcformer party needs --role=server|client, --coordinator=HOST:PORT and "
                         "--dealer_material=FILE (this party's file from `pcformer party "
                         "--role=dealer`)")
    out = run_party(settings_from_flags(), FLAGS.role, FLAGS.coordinator, timeouts_from_flags(),
                    FLAGS.dealer_material, progress_of(FLAGS.role))
    if out.status != 0:
        print(f"pcformer party: error: {FLAGS.role}: {out.error}", file=sys.stderr, flush=True)
        return out.status
    print("\n".join(describe(FLAGS.role, out.result)), flush=True)
    return 0


def check_run_flags() -> None:
    """What a two-process run does not do (yet), refused before anything starts."""
    from .cli import UsageError
    if "," in FLAGS.policy:
        raise UsageError("--processes=2 runs one policy at a time")
    if FLAGS.mode != "protocol" or FLAGS.check_overflow:
        raise UsageError("--processes=2 runs protocol mode only (ideal mode and the overflow "
                         "check reconstruct secrets across the parties)")
    given = [n for n in ("report", "dump_ir", "trace", "plot")
             if FLAGS[n].present]
    if given:
        raise UsageError(f"--{given[0]} is not available with --processes=2 yet")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two() -> int:
    """`pcformer run --processes=2`: the server and the client as two processes on this host."""
    check_run_flags()
    settings, timeouts = settings_from_flags(), timeouts_from_flags()
    coordinator = f"127.0.0.1:{free_port()}"
    outcomes: dict = {}
    with tempfile.TemporaryDirectory(prefix="pcformer-dealer-") as folder:
        # this process is the dealer: it prepares each party's material, then hands each
        # party process the path of its own file only
        progress_of("dealer")("prepare")
        status, material = prepare_material(settings, folder)
        if status != 0:
            print(f"pcformer run: error: dealer: {material}", file=sys.stderr, flush=True)
            return status
        threads = [threading.Thread(target=lambda r=role: outcomes.__setitem__(
            r, run_party(settings, r, coordinator, timeouts, material[r], progress_of(r))),
            daemon=True) for role in ROLES]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    failed = {r: o for r, o in outcomes.items() if o.status != 0}
    for role, out in failed.items():
        print(f"pcformer run: error: {role}: {out.error}", file=sys.stderr, flush=True)
    if failed:
        return PEER_FAULT
    print("\n".join(describe("client", outcomes["client"].result)), flush=True)
    return 0
