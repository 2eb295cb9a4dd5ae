"""Party-sharded execution (runtime/mesh.py, compiler/sharded.py) against the in-process one.

The checks need several host devices, which XLA fixes when JAX is first imported, so each runs
tests/e2e/mesh_checks.py in a fresh subprocess with XLA_FLAGS set there.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("mesh_checks.py")


def _check(which: str, devices: int = 2, timeout: int = 600) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), which, str(devices)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from {which}: {proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert proc.returncode == 0 and result["ok"], result.get("error", proc.stderr[-3000:])
    return result[which]


@pytest.mark.slow
def test_sharded_protocols_equal_in_process_bit_for_bit_with_the_same_ledger():
    # mul, square, truncate, dot_general, dot_general_private, drelu, relu, reveal (to both, to
    # one): shares, outputs and every ledger entry equal
    r = _check("protocols")
    assert r["entries"] > 20


@pytest.mark.slow
def test_a_party_device_holds_only_its_own_row_of_every_share():
    # Beaver and FSS ops: every share on a device is [1, ...]; "row 1" read on party 0's device
    # is party 0's own share (the other party's does not exist there), in one process party 1's
    r = _check("separation")
    assert set(r["rows_on_a_device"].values()) == {1}


@pytest.mark.slow
def test_sharded_fss_protocols_equal_in_process_and_hlo_bytes_equal_the_ledger():
    # the FSS family's drelu, relu, select, truncate, lut, max and argmax beside Beaver's mul:
    # shares, outputs and ledgers equal in-process bit for bit; the revealed ReLU is the
    # plaintext's; XLA's collective-permute bytes equal the ledger's online words
    r = _check("fss_protocols")
    assert {"drelu", "relu", "select", "truncate", "lut", "max", "argmax"} <= set(r["ops"])
    assert r["hlo_bytes"] > 0 and min(r["offline_bytes"]) > 0   # the keys reach both parties


@pytest.mark.slow
def test_hlo_collective_permute_bytes_equal_the_ledger():
    r = _check("hlo")
    ring = r["ring_only"]
    assert ring["hlo_bytes"] == ring["ledger_bytes"] > 0
    # the dealer's material is not a collective (each device derives it from the run key)
    assert max(ring["offline_bytes"]) > 0
    cmp = r["with_comparisons"]
    assert cmp["hlo_bytes"] == cmp["ledger_word_bytes"] > cmp["ledger_bytes"]


@pytest.mark.slow
def test_sharded_executor_equals_the_whole_program_executor_and_takes_secret_inputs():
    r = _check("compiled")
    assert r["entries"] > 0 and r["max_abs_err"] < 1e-2 and r["secret_input_err"] < 1e-2


@pytest.mark.slow
def test_batch_axis_groups_equal_in_process_runs_of_their_slices():
    # a 2 x 4 mesh of 8 host devices: party x batch
    r = _check("batch", 8)
    assert r["mesh"] == {"party": 2, "batch": 4} and r["groups"] == 4


@pytest.mark.slow
def test_compiled_batch_runs_one_prompt_per_group_equal_to_in_process():
    # Program.run_batch on a 2 x 2 party x batch mesh: each group's output and ledger equal the
    # in-process executor's run of its prompt; XLA's bytes are one prompt's words x the groups
    r = _check("batch_compiled", 4)
    assert r["groups"] == 2 and r["entries"] > 0
    assert r["hlo_bytes"] == r["ledger_word_bytes"] > 0


@pytest.mark.slow
def test_tensor_parallel_weights_give_the_same_run_and_only_the_ledgers_bytes_between_parties():
    # a 2 x 2 party x model mesh, the server's weight matrices split over `model`: output and
    # ledger bit for bit (checked inside), the bytes XLA permutes between the parties are the
    # ledger's words, and each device's arguments are smaller than on the party-only mesh
    r = _check("model", 4)
    assert r["model"]["between_parties"] == r["ledger_word_bytes"] + r["replicated_copies"]
    assert r["party"]["between_parties"] == r["ledger_word_bytes"] > 0
    assert r["model"]["argument_bytes"] < r["party"]["argument_bytes"]


@pytest.mark.slow
def test_sharded_bert_layer_equals_in_process_on_2_devices():
    # outputs and ledgers bit for bit; XLA's collective-permute bytes == the ledger's messages
    # in words (checked inside: mesh_checks.check_bert)
    r = _check("bert", 2)
    assert r["entries"] > 0 and r["hlo_bytes"] == r["ledger_word_bytes"] > r["ledger_bytes"] > 0


@pytest.mark.slow
def test_sharded_bert_layer_equals_in_process_on_8_devices():
    r = _check("bert", 8)
    assert r["mesh"] == {"party": 2, "batch": 4} and r["hlo_bytes"] == r["ledger_word_bytes"]


@pytest.mark.slow
def test_separated_dealer_equals_the_simulated_one_and_each_tape_is_its_offline_messages():
    r = _check("dealer")
    # all the Beaver family's corrections go to party 1; the server holds the setup key only
    assert r["offline_bits"][0] == 0 < r["offline_bits"][1] and r["tape_words"][0] == 0
    assert r["setup_words"] == [True, False]
    assert "used by a run already" in r["reuse"] and "another program" in r["mismatch"]


@pytest.mark.slow
def test_separated_fss_dealer_equals_the_simulated_one_with_keys_from_the_tapes():
    r = _check("dealer_fss")
    # the keys' correction words reach both parties; the masks' corrections party 1 only
    assert 0 < r["offline_bits"][0] < r["offline_bits"][1] and r["tape_words"][0] > 0
    assert r["setup_words"] == [True, False]



@pytest.mark.slow
@pytest.mark.parametrize("protocols", ["beaver", "fss"])
def test_separated_dealer_deals_each_run_and_batch_group_before_it_runs(protocols):
    # compile(..., dealer="separated"): seeded, two runs and a 2 x 2 party x batch run equal the
    # simulated dealer's bit for bit (checked inside); fresh, four dealings (two batches of two
    # groups) with four different dealer seeds, outputs within fixed-point error of plaintext
    r = _check("dealer_runs" if protocols == "beaver" else "dealer_runs_fss", 4)
    assert r["entries"] > 0 and r["deal_s"] > 0 and r["fresh_dealings"] == 4


@pytest.mark.slow
def test_sharded_gpt2_layer_equals_in_process_and_hlo_bytes_equal_the_ledger():
    r = _check("gpt2", 2)
    assert r["entries"] > 0 and r["hlo_bytes"] == r["ledger_word_bytes"] > r["ledger_bytes"] > 0


@pytest.mark.slow
def test_sharded_minilm_equals_in_process_on_2_and_8_devices_and_hlo_bytes_equal_the_ledger():
    # the real all-MiniLM-L6-v2 checkpoint, six layers, 4 tokens: one in-process reference
    # against the 2-device party mesh and the 2 x 4 party x batch mesh of 8 devices
    r = _check("minilm", 8, timeout=1500)
    assert [m["mesh"] for m in r["meshes"]] == [{"party": 2}, {"party": 2, "batch": 4}]
    assert r["entries"] > 0 and r["ledger_bytes"] > 0
    for m, groups in zip(r["meshes"], (1, 4)):
        assert m["hlo_bytes"] == m["ledger_word_bytes"] > r["ledger_bytes"] * groups
