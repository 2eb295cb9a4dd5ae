"""Two-party runs as two operating-system processes (pcformer/party_cli.py, party_worker.py,
compiler/party_process.py): the pair's output equals the in-process simulation's bit for bit, and a
killed peer ends the other side with a clear error within a bound.

The process tests are slow (each process imports JAX and compiles the program) and every one is
bounded by subprocess timeouts, so a hang fails the test instead of blocking the suite.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from pcformer import party_cli, party_jobs, party_worker
from pcformer.compiler import dealer_pass

SEED = 3
RUN_BOUND_S = 400          # the whole two-process run (imports, two compiles on 2 shared cores)
PEER_TIMEOUT_S = 10        # what the fault tests give the surviving side
FAULT_BOUND_S = 90         # the survivor must have exited this long after the kill


def _pcformer(*args) -> list[str]:
    return [sys.executable, "-m", "pcformer", *args]


def _result_outputs(stdout: str) -> list:
    line = next(l for l in stdout.splitlines() if l.startswith("result "))
    return [party_worker.from_json(o) for o in json.loads(line[len("result "):])["outputs"]]


def _prints_ledger_bytes(stdout: str, sent) -> bool:
    """Whether a pair's report line carries these online bytes per party (the ledger's: each
    message rounded up to bytes)."""
    return f"online    server sent {sent[0]} B, client sent {sent[1]} B" in stdout


def _in_process_mlp(report: bool = False, protocols: str = "beaver", compare_bits=None):
    """The same program simulated in one process (the whole-program executor, same seed); with
    `report`, its report too."""
    import pcformer
    from pcformer.config import MPCConfig
    args = party_jobs.mlp_inputs()
    prog = pcformer.compile(party_jobs.mlp, *args, owners=(0, 0, 0, 1), policy="mpcformer",
                            config=MPCConfig(seed=SEED, protocols=protocols,
                                             compare_bits=compare_bits), executor="program")
    # the seeded dealer's setup key (it holds no weights: from the seed and the program)
    prog._exe.deployment.pinned = dealer_pass.keys(prog.config, prog.ir)[1]
    out, rep = prog.run(*args)
    return (np.asarray(out), rep) if report else np.asarray(out)


# -- fast checks of the pieces ---------------------------------------------------------------

def test_manifest_round_trip_keeps_tree_shapes_and_no_values():
    params = {"a": {"kernel": np.ones((3, 2), np.float32), "bias": np.ones((2,), np.float32)},
              "emb": np.ones((5, 4), np.float16)}
    manifest = party_jobs.weights_manifest(params)
    assert json.loads(json.dumps(manifest)) == manifest      # travels as JSON
    zeros = party_jobs.zeros_from_manifest(manifest)
    assert np.asarray(zeros["a"]["kernel"]).shape == (3, 2)
    assert np.asarray(zeros["emb"]).dtype == np.float16
    assert all(not np.asarray(x).any() for x in (zeros["a"]["kernel"], zeros["a"]["bias"]))


def test_each_role_holds_only_its_own_inputs():
    server = party_jobs.build(party_jobs.PartySettings(job="mlp"), party_jobs.SERVER)
    client = party_jobs.build(party_jobs.PartySettings(job="mlp"), party_jobs.CLIENT)
    real = party_jobs.mlp_inputs()
    assert np.array_equal(server.args[0], real[0]) and not np.asarray(server.args[3]).any()
    assert np.array_equal(client.args[3], real[3])
    assert not any(np.asarray(a).any() for a in client.args[:3])


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    from pcformer import models
    return models.make_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"), n_layer=1, n_embd=16,
                                 n_head=2, vocab_size=300, n_positions=32)


def _both_roles(settings):
    server = party_jobs.build(settings, party_jobs.SERVER)
    client = party_jobs.build(settings, party_jobs.CLIENT, server.manifest)
    return server, client


def test_decoder_job_gives_the_client_its_next_token_logits_only(tiny_gpt2):
    """A decoder pair computes the logits after the client's prompt: [1, vocab], picked at the
    last real token by the client's own mask, equal to the plaintext model's."""
    from pcformer import models
    settings = party_jobs.PartySettings(model=str(tiny_gpt2), prompt="the cat sat", seq_len=12)
    server, client = _both_roles(settings)
    assert server.owners == client.owners == (party_jobs.SERVER,) + (party_jobs.CLIENT,) * 2
    weights = jax.tree_util.tree_leaves(client.args[0])
    assert weights and not any(np.asarray(w).any() for w in weights)     # zeros, not weights
    assert not np.asarray(server.args[1]).any()                          # zeros, not the prompt
    ids, mask = client.args[1:]
    n = int(mask.sum())
    assert 0 < n < 12
    got = np.asarray(server.fn(server.args[0], ids, mask))
    model = models.load(tiny_gpt2)
    full = np.asarray(model.forward(model.params, ids, mask))
    assert got.shape == (1, model.config.vocab_size)
    np.testing.assert_allclose(got[0], full[0, n - 1], rtol=1e-5, atol=1e-5)


def test_vit_job_takes_the_clients_image_and_checks_its_shape(tmp_path):
    from pcformer import models
    folder = models.make_tiny_vit(tmp_path / "vit", num_hidden_layers=1, hidden_size=16,
                                  num_attention_heads=2, intermediate_size=32, num_labels=3)
    image = tmp_path / "image.npy"
    np.save(image, np.ones((3, 16, 16), np.float32))
    server, client = _both_roles(party_jobs.PartySettings(model=str(folder), image=str(image)))
    assert np.asarray(client.args[1]).shape == np.asarray(server.args[1]).shape == (1, 3, 16, 16)
    assert np.asarray(server.fn(server.args[0], client.args[1])).shape == (1, 3)
    np.save(image, np.ones((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"shape \[1, 3, 8, 8\]; the model takes \[1, 3, 16, 16\]"):
        _both_roles(party_jobs.PartySettings(model=str(folder), image=str(image)))
    with pytest.raises(ValueError, match="--image"):
        _both_roles(party_jobs.PartySettings(model=str(folder)))


def test_explain_names_the_peer_fault():
    assert party_cli.explain(-6, "F1203 client.h:80] Terminating process because the JAX "
                                 "distributed service detected fatal errors") .startswith(
        "the peer process died or stopped answering")
    assert party_cli.explain(4, "I1203 x\nparty error: no run keys from the peer within 5 s") == \
        "no run keys from the peer within 5 s"
    assert "exit status 1" in party_cli.explain(1, "Traceback\nValueError: boom")


def test_waiting_steps_are_bounded_and_local_work_is_not():
    t = party_cli.Timeouts(connect_s=7, peer_s=11)
    assert t.bound("run") == 11 and t.bound("wait") == 41 and t.bound("connect") == 37
    assert t.bound("compile") is None and t.bound("agree") is None
    assert dataclasses.replace(t, announced=100).bound("wait") == 130
    assert party_cli.parse_phase("phase wait 75")[::2] == ("wait", 75.0)
    assert party_worker.compiled_wait_s(11, 50.0) == 111     # the peer may compile slower


def test_child_env_drops_the_forced_device_count(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_foo=1")
    env = party_cli.child_env()
    assert env["XLA_FLAGS"] == "--xla_cpu_foo=1" and env["JAX_PLATFORMS"] == "cpu"


def test_a_generation_step_writes_the_greedy_token_at_the_first_padding_position():
    ids = np.array([[5, 6, 0, 0]], np.int32)
    mask = np.array([[1, 1, 0, 0]], np.int32)
    logits = np.array([[0.1, 2.0, -1.0, 0.3]], np.float32)
    new_ids, new_mask, token = party_jobs.advance(ids, mask, logits)
    assert token == 1
    assert new_ids.tolist() == [[5, 6, 1, 0]] and new_mask.tolist() == [[1, 1, 1, 0]]
    assert ids.tolist() == [[5, 6, 0, 0]]          # the client's earlier inputs are not touched
    assert party_jobs.material_path("m/client.npz", 0) == "m/client.npz"
    assert party_jobs.material_path("m/client.npz", 2) == "m/client.npz.step2"


@pytest.mark.parametrize("kind, used, new_tokens, says", [
    ("bert", 2, 3, "generates with a decoder"),
    ("gpt2", 3, 3, "need 5 positions, more than --seq_len=4"),
])
def test_generation_the_client_cannot_fit_is_refused_before_compiling(kind, used, new_tokens, says):
    settings = party_jobs.PartySettings(seq_len=4, new_tokens=new_tokens)
    mask = np.zeros((1, 4), np.int32)
    mask[0, :used] = 1
    with pytest.raises(ValueError, match=says):
        party_jobs.check_generation(settings, kind, (np.zeros((1, 4), np.int32), mask))
    # what fits passes: every token but the last is written into the ids
    room = used + new_tokens - 1
    fits = np.zeros((1, room), np.int32)
    fits[0, :used] = 1
    party_jobs.check_generation(dataclasses.replace(settings, seq_len=room), "gpt2", (None, fits))


# -- two real processes ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("protocols, compare_bits", [("beaver", None), ("fss", None), ("fss", 36)])
def test_two_processes_equal_the_in_process_run_bit_for_bit(protocols, compare_bits):
    # fss: each process evaluates its DCF keys from its own root seed and the correction words
    # on its tape (runtime/fss_dealer.py), never generating a key; --compare_bits reaches both
    # processes and the dealer (the ledgers agree only if all three use the declared width)
    width = [f"--compare_bits={compare_bits}"] if compare_bits else []
    done = subprocess.run(_pcformer("run", "--processes=2", "--job=mlp", f"--seed={SEED}",
                                    f"--protocols={protocols}", "--peer_timeout=120", *width),
                          capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert done.returncode == 0, done.stderr[-2000:]
    (got,) = _result_outputs(done.stdout)
    want, rep = _in_process_mlp(report=True, protocols=protocols, compare_bits=compare_bits)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert _prints_ledger_bytes(done.stdout, rep.totals()["online"]["bytes"])
    # the client's dealt bytes are the in-process ledger's (they shrink with --compare_bits)
    assert f"({rep.totals()['offline']['bytes'][1]} B of corrections dealt to it)" in done.stdout


@pytest.mark.slow
def test_two_devices_per_process_split_the_weights_and_equal_the_in_process_run():
    # --model_parallel=2: each party process holds two devices, the server's weight matrices
    # split over them (its process supplies only its own pieces); the client puts its output
    # back together from its devices' pieces
    done = subprocess.run(_pcformer("run", "--processes=2", "--job=mlp", f"--seed={SEED}",
                                    "--model_parallel=2", "--peer_timeout=120"),
                          capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "devices   2 per party" in done.stdout
    (got,) = _result_outputs(done.stdout)
    want, rep = _in_process_mlp(report=True)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert _prints_ledger_bytes(done.stdout, rep.totals()["online"]["bytes"])


@pytest.fixture(scope="module")
def mlp_material(tmp_path_factory) -> Path:
    """`pcformer party --role=dealer`: each party's material for the MLP job, one file each."""
    folder = tmp_path_factory.mktemp("dealer") / "material"
    done = subprocess.run(_pcformer("party", "--role=dealer", f"--dealer_material={folder}",
                                    "--job=mlp", f"--seed={SEED}"),
                          capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in folder.iterdir()) == ["client.npz", "server.npz"]
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)      # the dealer's folder is private
    return folder


def _start_party(role: str, coordinator: str, material: Path, extra=()) -> subprocess.Popen:
    return subprocess.Popen(_pcformer("party", f"--role={role}", f"--coordinator={coordinator}",
                                      f"--dealer_material={material / (role + '.npz')}",
                                      "--job=mlp", f"--seed={SEED}",
                                      f"--peer_timeout={PEER_TIMEOUT_S}", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


class _Lines:
    """A stream read to its end in a thread: its lines so far, and a wait for one of them."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, needle: str, timeout_s: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: any(needle in l for l in self.lines), timeout_s)

    def text(self) -> str:
        self._thread.join(timeout=10)
        return "".join(self.lines)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_killing_the_server_mid_run_ends_the_client_with_a_clear_error_in_bounded_time(
        mlp_material):
    coordinator = f"127.0.0.1:{party_cli.free_port()}"
    server = _start_party("server", coordinator, mlp_material)
    client = _start_party("client", coordinator, mlp_material)
    out, err = _Lines(client.stdout), _Lines(client.stderr)
    try:
        # the client has joined, agreed on keys and is compiling: the run is under way
        assert err.wait_for("[client] compile", RUN_BOUND_S), "the run never started"
        os.killpg(server.pid, signal.SIGKILL)           # the server and its party process
        t0 = time.monotonic()
        client.wait(timeout=FAULT_BOUND_S)
        took = time.monotonic() - t0
    finally:
        _stop(server)
        _stop(client)
    out, err = out.text(), err.text()
    assert client.returncode == party_cli.PEER_FAULT
    assert took < FAULT_BOUND_S
    assert "pcformer party: error: client:" in err and "peer" in err
    assert "result" not in out                           # nothing shown as a result


@pytest.mark.slow
def test_a_peer_that_never_comes_ends_the_client_within_the_connect_timeout(mlp_material):
    coordinator = f"127.0.0.1:{party_cli.free_port()}"
    client = _start_party("client", coordinator, mlp_material, ("--connect_timeout=5",))
    try:
        out, err = client.communicate(timeout=FAULT_BOUND_S + 60)
    finally:
        _stop(client)
    assert client.returncode == party_cli.PEER_FAULT
    assert "pcformer party: error: client:" in err and coordinator in err
    assert "result" not in out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A one-layer BERT folder with MiniLM's tokenizer (the client reads only config and
    tokenizer; the server the weights)."""
    import shutil
    from pcformer import models
    folder = tmp_path_factory.mktemp("tiny_bert")
    models.make_tiny_bert(folder, num_hidden_layers=1, hidden_size=16, num_attention_heads=2,
                          intermediate_size=32, vocab_size=30522)
    minilm = models.loaded.minilm_folder()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(minilm / name, folder / name)
    return folder


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt2"])
def test_the_dealer_builds_the_parties_program_from_public_facts_alone(fixture, request):
    folder = request.getfixturevalue(fixture)
    settings = party_jobs.PartySettings(model=str(folder), text="a b", prompt="a b", seq_len=6)
    server = party_jobs.build(settings, party_jobs.SERVER)
    dealer = party_jobs.build(settings, party_jobs.DEALER)
    # no weight values, no client input: zeros in their place, shapes from config and header
    assert all(not np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(dealer.args))
    assert (dealer_pass.fingerprint(party_jobs.lower(settings, dealer)[0])
            == dealer_pass.fingerprint(party_jobs.lower(settings, server)[0]))


def _pair_equals_reference(folder, text: str, seq_len: int, input_flag: str,
                           new_tokens: int = 1) -> np.ndarray:
    """`pcformer run --processes=2` on `folder`; its client's output == the in-process
    reference's (tests/e2e/party_reference.py), bit for bit, and so are the online bytes it
    prints (and, generating, its tokens). Returns the output."""
    more = [f"--max_new_tokens={new_tokens}"] if new_tokens > 1 else []
    done = subprocess.run(_pcformer("run", "--processes=2", f"--model={folder}",
                                    f"--{input_flag}={text}", f"--seq_len={seq_len}",
                                    f"--seed={SEED}", "--peer_timeout=300", *more),
                          capture_output=True, text=True, timeout=2 * RUN_BOUND_S)
    assert done.returncode == 0, done.stderr[-2000:]
    (got,) = _result_outputs(done.stdout)
    ref = subprocess.run([sys.executable, str(Path(__file__).with_name("party_reference.py")),
                          str(folder), text, str(seq_len), str(SEED), str(new_tokens)],
                         capture_output=True, text=True, timeout=2 * RUN_BOUND_S)
    assert ref.returncode == 0, ref.stderr[-2000:]
    lines = ref.stdout.splitlines()
    if new_tokens > 1:
        tokens = json.loads(lines.pop())["tokens"]
        assert len(tokens) == new_tokens
        assert f"greedy token ids {tokens}" in done.stdout
    *_, sent_line, out_line = lines
    want = party_worker.from_json(json.loads(out_line))
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert _prints_ledger_bytes(done.stdout, json.loads(sent_line)["online_bytes"])
    return got


@pytest.mark.slow
def test_tiny_bert_as_two_processes_equals_the_in_process_run(tiny_bert):
    got = _pair_equals_reference(tiny_bert, "A private sentence.", 8, "text")
    assert got.shape == (1, 16)


@pytest.mark.slow
def test_tiny_gpt2_generates_as_two_processes_as_the_in_process_runs_do(tiny_gpt2):
    # three tokens: three runs of the same compiled program, each with its own dealer material
    # and run key; the client writes each revealed token into its own padded ids (one token,
    # one run: the MLP and tiny BERT pairs)
    got = _pair_equals_reference(tiny_gpt2, "the cat sat", 12, "prompt", new_tokens=3)
    assert got.shape == (1, 300) and np.isfinite(got).all()


@pytest.mark.slow
@pytest.mark.parametrize("flag, says", [("--policy=exact,mpcformer", "one policy"),
                                        ("--mode=ideal", "protocol mode"),
                                        ("--report=r.json", "--report")])
def test_two_process_run_refuses_what_it_cannot_do_before_starting(flag, says, tmp_path):
    done = subprocess.run(_pcformer("run", "--processes=2", flag), capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr and not done.stdout
    assert not (tmp_path / "r.json").exists()
