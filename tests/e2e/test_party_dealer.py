"""The dealer as a third party (compiler/dealer_pass.py, runtime/dealer_tape.py): what each party
receives of its material, checked without starting processes (tests/e2e/test_mesh.py runs the
separated material on a two-device mesh, tests/e2e/test_party_processes.py in two processes).
"""
from __future__ import annotations

import numpy as np
import pytest

import pcformer
from pcformer import party_jobs
from pcformer.compiler import dealer_pass
from pcformer.config import MPCConfig
from pcformer.runtime import dealer_tape
from pcformer.runtime.ledger import totals_of


def _mlp(seed=None, protocols="beaver"):
    args = party_jobs.mlp_inputs()
    prog = pcformer.compile(party_jobs.mlp, *args, owners=(0, 0, 0, 1), policy="mpcformer",
                            config=MPCConfig(seed=seed, protocols=protocols))
    return prog, prog._flat(args)


def test_each_party_receives_only_its_own_seed_setup_key_and_corrections():
    prog, flat = _mlp()
    server, client = dealer_pass.deal(prog.ir, prog.config, flat)
    assert (server.party, client.party) == (0, 1)
    # the setup key (the seed of the masks of the server's weights) is the server's alone
    assert server.setup_word != 0 and client.setup_word == 0
    assert server.dealer_word != client.dealer_word
    # the Beaver family deals every correction to party 1: the server's tape is empty
    assert server.tape.size == 0 and client.tape.size > 0
    assert server.schedule == client.schedule        # the schedule is public (shapes only)


def test_a_tape_is_its_partys_offline_messages_by_the_static_cost_formulas():
    prog, flat = _mlp()
    _, client = dealer_pass.deal(prog.ir, prog.config, flat)
    # the compiler's static cost (compiler/cost.py: per-op formulas, nothing run)
    static = totals_of(prog.cost.entries)["offline"]["bits"]
    assert dealer_tape.tape_bits(client.schedule, 1) == static[1] > 0
    assert dealer_tape.tape_bits(client.schedule, 0) == static[0] == 0


def test_fresh_keys_every_time_unless_seeded():
    prog, flat = _mlp()
    a, b = dealer_pass.deal(prog.ir, prog.config, flat), dealer_pass.deal(prog.ir, prog.config, flat)
    assert a[1].dealer_word != b[1].dealer_word and a[0].setup_word != b[0].setup_word
    assert not np.array_equal(a[1].tape, b[1].tape) and not a[1].reproducible
    seeded, flat = _mlp(seed=5)
    c, d = (dealer_pass.deal(seeded.ir, seeded.config, flat) for _ in range(2))
    assert np.array_equal(c[1].tape, d[1].tape) and c[1].reproducible



def test_one_compiled_dealer_pass_deals_every_run_and_batch_group_its_own_material():
    prog, flat = _mlp(seed=5)
    dealer = dealer_pass.Dealer(prog.ir, prog.config)
    setup = dealer_pass.keys(prog.config, prog.ir)[1]
    seeds = [dealer_pass.keys(prog.config, prog.ir, run, group)[0]
             for run in (0, 1) for group in (None, 0, 1)]
    assert len(set(seeds)) == len(seeds)              # runs and groups never share a seed
    mats = [dealer.deal(flat, words, setup) for words in seeds]
    assert dealer_pass.dealer_for(prog.ir, prog.config) is dealer_pass.dealer_for(prog.ir,
                                                                               prog.config)
    tapes = [m[1].tape for m in mats]
    assert all(not np.array_equal(a, b) for i, a in enumerate(tapes) for b in tapes[:i])
    # a pass of its own gives the same material
    again = dealer_pass.Dealer(prog.ir, prog.config).deal(flat, seeds[4], setup)
    assert np.array_equal(again[1].tape, mats[4][1].tape)
    assert again[1].schedule == mats[4][1].schedule


def test_a_separated_dealer_needs_the_sharded_executor_and_a_known_name():
    args = party_jobs.mlp_inputs()
    with pytest.raises(ValueError, match="needs executor='sharded'"):
        pcformer.compile(party_jobs.mlp, *args, owners=(0, 0, 0, 1), dealer="separated")
    with pytest.raises(ValueError, match="unknown dealer 'third'"):
        pcformer.compile(party_jobs.mlp, *args, owners=(0, 0, 0, 1), executor="sharded",
                         dealer="third")


def test_material_round_trips_through_its_file_and_is_refused_elsewhere(tmp_path):
    prog, flat = _mlp()
    server, client = dealer_pass.deal(prog.ir, prog.config, flat)
    client.save(tmp_path / "client.npz")
    back = dealer_pass.Material.load(tmp_path / "client.npz")
    assert (back.party, back.program, back.dealer_word, back.setup_word, back.schedule) == (
        client.party, client.program, client.dealer_word, client.setup_word, client.schedule)
    assert np.array_equal(back.tape, client.tape)
    dealer_pass.check_for(back, prog.ir, 1)
    with pytest.raises(dealer_tape.MaterialMismatch, match="party 1's; this process is party 0"):
        dealer_pass.check_for(back, prog.ir, 0)
    other = pcformer.compile(lambda x: x * x, np.ones(3, np.float32), owners=(1,))
    with pytest.raises(dealer_tape.MaterialMismatch, match="another program"):
        dealer_pass.check_for(back, other.ir, 1)


def test_the_fss_dealers_keys_reach_both_parties_as_their_offline_messages():
    prog, flat = _mlp(protocols="fss")
    server, client = dealer_pass.deal(prog.ir, prog.config, flat)
    static = totals_of(prog.cost.entries)["offline"]["bits"]
    # a key's correction words go to both parties (ReLU's DCF, truncation's DCFs), the
    # corrections correlated with a mask to party 1 only: both tapes are nonempty, each exactly
    # the party's offline bits by the FSS family's formulas (runtime/fss_costs.py)
    assert [dealer_tape.tape_bits(server.schedule, p) for p in (0, 1)] == list(static)
    assert 0 < static[0] < static[1] and server.tape.size > 0
    # the server's tape is only words addressed to it: what the client alone receives is not there
    to_server = sum(int(np.prod(s)) for to, s, _ in server.schedule if to == 0)
    assert server.tape.size == to_server < client.tape.size


def test_a_party_expands_its_tape_with_zeros_where_the_other_partys_entries_are():
    schedule = ((1, (2,), 64), (0, (3,), 64), (1, (1,), 1))
    full = dealer_tape.expand(schedule, 1, np.array([7, 8, 9], np.uint64), np.uint64)
    assert full.tolist() == [7, 8, 0, 0, 0, 9]
    assert dealer_tape.tape_bits(schedule, 1) == 2 * 64 + 1 and dealer_tape.tape_bits(schedule, 0) == 192
    with pytest.raises(dealer_tape.MaterialMismatch):
        dealer_tape.expand(schedule, 1, np.array([7, 8], np.uint64), np.uint64)


@pytest.mark.parametrize("seed", [None, 5])
def test_each_generation_step_gets_fresh_material_under_the_deployments_one_setup_key(
        tmp_path, seed):
    # one run per new token: a step that reused another's triples would leak the difference of
    # the two runs' masked values; the setup key (the masks of the same weights) stays one
    settings = party_jobs.PartySettings(job="mlp", seed=seed, new_tokens=3)
    paths = party_jobs.prepare_material(settings, tmp_path)
    steps = {role: [dealer_pass.Material.load(party_jobs.material_path(path, k))
                    for k in range(3)] for role, path in paths.items()}
    client, server = steps["client"], steps["server"]
    assert len({m.dealer_word for m in client}) == 3 and len({m.dealer_word for m in server}) == 3
    assert not any(np.array_equal(a.tape, b.tape) for a, b in
                   [(client[0], client[1]), (client[1], client[2]), (client[0], client[2])])
    assert len({m.setup_word for m in server}) == 1 and server[0].setup_word != 0
    assert all(m.setup_word == 0 for m in client)
    if seed is not None:   # step k's seeds are the in-process run k's
        prog, flat = _mlp(seed=seed)
        for k in range(3):
            assert client[k].dealer_word == dealer_pass.keys(prog.config, prog.ir, k)[0][1]
