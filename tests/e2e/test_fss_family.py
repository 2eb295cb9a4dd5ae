"""The FSS protocol family in the registry (`MPCConfig(protocols="fss")`, docs/fss.md): whole
programs run with outputs close to plaintext and to the Beaver family's, the measured ledger equals
the static cost, both parties receive FSS key material offline, ideal mode writes the same ledger,
and the CLI and the benchmark take the family."""
import dataclasses
import importlib.util
import json
import pathlib
import subprocess
import sys
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler import policies
from pcformer.runtime import MPCConfig, fss_costs
from pcformer.runtime.protocols import arith, fss, fss_compare, registry
from pcformer.runtime.protocols._fss_base import FSS_IDEAL_RULES

O0 = {"xla_backend_optimization_level": 0}   # tiny programs: their compile is the test's time

FSS_OPS = ("drelu", "relu", "select", "truncate", "lut", "less", "less_public", "max", "argmax",
           "max_argmax")


def key(entries):
    """Entries as a multiset (the measured ledger's order within a depth may differ)."""
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


# ----------------------------------------------------------------------------- the registry
def test_the_fss_family_replaces_the_comparisons_and_truncation_and_keeps_beaver_products():
    assert "fss" in registry.families()
    for name in FSS_OPS:
        entry = registry.lookup(name, "fss")
        assert entry.family == "fss"
        assert entry.cost is fss_costs.COSTS[name], name
        assert entry.ideal is FSS_IDEAL_RULES[name], name
        assert entry.run.__module__ in (fss.__name__, fss_compare.__name__), name
    mul = registry.lookup("mul", "fss")
    assert mul.run is arith.mul and mul.cost is registry.lookup("mul").cost
    # every Beaver op has an FSS-family entry: a program lowered for one family runs in the other
    assert set(registry.names("beaver")) <= set(registry.names("fss"))


def test_every_op_the_lowering_emits_has_an_fss_adapter():
    for name in registry.names("beaver"):
        if registry.lookup(name).from_ir is not None:
            assert registry.lookup(name, "fss").from_ir is not None, name


def test_fss_prg_is_validated():
    assert MPCConfig().fss_prg == "splitmix"
    assert MPCConfig(fss_prg="threefry").fss_prg == "threefry"
    with pytest.raises(ValueError, match="fss_prg must be one of"):
        MPCConfig(fss_prg="aes")


# ----------------------------------------------------------------------------- a small program
def _mlp(x, w):
    """ReLU, a comparison, a max and an argmax of a private product."""
    h = x @ w
    r = jnp.maximum(h, 0.0)
    return r, h > 0.25, jnp.max(r * r, axis=-1), jnp.argmax(h, axis=-1)


@pytest.fixture(scope="module")
def mlp_inputs():
    rng = np.random.default_rng(3)
    return (rng.uniform(-1, 1, (2, 4)).astype(np.float32),
            rng.uniform(-1, 1, (4, 5)).astype(np.float32))


def _run(inputs, **config):
    prog = pcformer.compile(_mlp, *inputs, owners=(1, 0), policy=None,
                            config=MPCConfig(seed=0, **config), compiler_options=O0)
    outs, report = prog.run(*inputs)
    return prog, [np.asarray(o) for o in outs], report


def _check_close(outs, ref):
    np.testing.assert_allclose(outs[0], ref[0], atol=1e-3)
    np.testing.assert_array_equal(outs[1], ref[1])
    np.testing.assert_allclose(outs[2], ref[2], atol=1e-3)
    np.testing.assert_array_equal(outs[3], ref[3])


@pytest.fixture(scope="module")
def both_families(mlp_inputs):
    return {fam: _run(mlp_inputs, protocols=fam) for fam in ("beaver", "fss")}


def test_fss_program_matches_plaintext_and_beaver(mlp_inputs, both_families):
    ref = [np.asarray(o) for o in _mlp(*mlp_inputs)]
    _, fss_outs, _ = both_families["fss"]
    _, beaver_outs, _ = both_families["beaver"]
    _check_close(fss_outs, ref)
    _check_close(fss_outs, beaver_outs)


def test_fss_ledger_equals_static_cost(both_families):
    prog, _, report = both_families["fss"]
    assert key(report.entries) == key(prog.cost.entries)
    assert report.totals() == prog.cost.totals()


def test_fss_deals_keys_to_both_parties_and_needs_fewer_rounds(both_families):
    fss_t = both_families["fss"][2].totals()
    beaver_t = both_families["beaver"][2].totals()
    assert beaver_t["offline"]["bytes"][0] == 0                  # Beaver: party 1 only
    assert min(fss_t["offline"]["bytes"]) > 0                    # FSS keys: both parties
    # the DCF keys to party 0 are offline entries of the FSS ops themselves
    fss_ops = {e.op.split("/")[-1] for e in both_families["fss"][2].entries
               if e.phase == "offline" and e.bits[0] > 0}
    assert fss_ops & {"drelu", "relu", "truncate"}
    assert fss_t["online"]["rounds"] < beaver_t["online"]["rounds"]
    assert sum(fss_t["online"]["bytes"]) < sum(beaver_t["online"]["bytes"])


def test_local_truncation_is_honoured_by_the_fss_family(mlp_inputs, both_families):
    """trunc_mode="local" (SecureML's free shift, the user's choice) replaces the FSS family's
    one-round exact truncation too: no truncate messages, fewer rounds, the same outputs."""
    prog, outs, report = _run(mlp_inputs, protocols="fss", trunc_mode="local")
    _check_close(outs, both_families["fss"][1])
    assert key(report.entries) == key(prog.cost.entries)
    assert not [e for e in report.entries if e.op.split("/")[-1] == "truncate"]
    assert [e for e in both_families["fss"][2].entries if e.op.split("/")[-1] == "truncate"]
    dealer = both_families["fss"][2].totals()["online"]
    assert report.totals()["online"]["rounds"] < dealer["rounds"]


@pytest.mark.slow  # compiles the MLP a third time, in ideal mode
def test_ideal_mode_under_fss_writes_the_protocol_ledger(mlp_inputs, both_families):
    _, protocol_outs, protocol_report = both_families["fss"]
    prog, ideal_outs, ideal_report = _run(mlp_inputs, protocols="fss", mode="ideal")
    assert key(ideal_report.entries) == key(protocol_report.entries)
    assert key(ideal_report.entries) == key(prog.cost.entries)
    _check_close(ideal_outs, protocol_outs)


@pytest.mark.slow  # threefry keys compile and run several times slower than splitmix
def test_threefry_prg_gives_the_same_program_and_ledger(mlp_inputs, both_families):
    _, outs, report = _run(mlp_inputs, protocols="fss", fss_prg="threefry")
    _check_close(outs, both_families["fss"][1])
    assert key(report.entries) == key(both_families["fss"][2].entries)


# ----------------------------------------------------------------------------- lookup tables
def _gelu_softmax(x, w):
    """SIGMA's lookups: GeLU of the client's values themselves (edge values reach the table
    unchanged) and a softmax of a product."""
    return jax.nn.gelu(x, approximate=False), jax.nn.softmax(x @ w, axis=-1)


@pytest.fixture(scope="module")
def lookup_inputs():
    edges = [-20.0, -4.0, -1e-3, 0.0, 1e-3, 1.0, 3.99, 4.0, 4.02, 20.0, -0.5, 2.5]
    x = np.asarray(edges, np.float32).reshape(3, 4)
    w = np.random.default_rng(5).uniform(-2, 2, (4, 6)).astype(np.float32)
    return x, w


def _lookup_run(inputs, policy="sigma", **config):
    prog = pcformer.compile(_gelu_softmax, *inputs, owners=(1, 0), policy=policy,
                            config=MPCConfig(seed=0, protocols="fss", **config), compiler_options=O0)
    outs, report = prog.run(*inputs)
    return prog, [np.asarray(o) for o in outs], report


@pytest.fixture(scope="module")
def sigma_run(lookup_inputs):
    return _lookup_run(lookup_inputs)


def test_sigma_lookups_match_the_rewritten_program_and_the_exact_functions(lookup_inputs,
                                                                           sigma_run):
    prog, outs, report = sigma_run
    ops = {e.op.split("/")[-1] for e in report.entries}
    assert "lut" in ops
    for got, want in zip(outs, prog.plaintext(*lookup_inputs)):
        np.testing.assert_allclose(got, np.asarray(want), atol=2e-4)
    exact = _gelu_softmax(*lookup_inputs)
    np.testing.assert_allclose(outs[0], np.asarray(exact[0]), atol=4.5e-3)
    np.testing.assert_allclose(outs[1], np.asarray(exact[1]), atol=5e-4)


# exact's functions built the Beaver way (polynomials, Newton), under the FSS family too
EXACT_AS_BEAVER = dataclasses.replace(policies.EXACT, fss=())


def test_sigma_ledger_equals_static_cost_and_beats_exact(lookup_inputs, sigma_run):
    prog, _, report = sigma_run
    assert key(report.entries) == key(prog.cost.entries)
    exact = pcformer.compile(_gelu_softmax, *lookup_inputs, owners=(1, 0),
                             policy=EXACT_AS_BEAVER,
                             config=MPCConfig(protocols="fss")).cost.totals()["online"]
    sigma = report.totals()["online"]
    assert sigma["rounds"] < exact["rounds"]
    assert max(sigma["bytes"]) < max(exact["bytes"]) / 2


def _secret_gelu_softmax(x, w):
    """GeLU and softmax of secrets (the client's x times the server's w, scaled into GeLU's
    curved range)."""
    y = 0.2 * (x @ w)
    return jax.nn.gelu(y, approximate=False), jax.nn.softmax(y, axis=-1)


@pytest.mark.slow  # compiles `exact` under both families (test_tiny_bert_under_fss[exact] also runs it)
def test_exact_under_fss_reads_the_family_lookups_at_exact_accuracy(lookup_inputs):
    """`exact` under fss: GeLU from the two-column spline lookup, softmax's exp from the two
    tables; as close to the exact functions as the Beaver-way exact, for less than half its
    online bytes; the ledger equals the static cost."""
    prog = pcformer.compile(_secret_gelu_softmax, *lookup_inputs, owners=(1, 0),
                            policy="exact", config=MPCConfig(seed=0, protocols="fss"), compiler_options=O0)
    outs, report = prog.run(*lookup_inputs)
    outs = [np.asarray(o) for o in outs]
    assert (prog.policy.name, prog.policy.gelu, prog.policy.softmax) == ("exact", "spline",
                                                                         "sigma")
    scopes = {e.scope for e in report.entries if e.op.split("/")[-1] == "lut"}
    assert any("gelu[spline]" in sc for sc in scopes)
    assert key(report.entries) == key(prog.cost.entries)
    exact = [np.asarray(e) for e in _secret_gelu_softmax(*lookup_inputs)]
    beaver = pcformer.compile(_secret_gelu_softmax, *lookup_inputs, owners=(1, 0),
                              policy="exact", config=MPCConfig(seed=0), compiler_options=O0)
    beaver_outs = [np.asarray(o) for o in beaver.run(*lookup_inputs)[0]]
    for got, by_beaver, want in zip(outs, beaver_outs, exact):
        # within two 16-bit fixed-point steps of the Beaver family's own error
        assert np.abs(got - want).max() <= np.abs(by_beaver - want).max() + 2.0 ** -15
        assert np.abs(got - want).max() < 1.5e-4
    for got, want in zip(outs, prog.plaintext(*lookup_inputs)):
        np.testing.assert_allclose(got, np.asarray(want), atol=1e-4)
    beaver_way = pcformer.compile(_secret_gelu_softmax, *lookup_inputs, owners=(1, 0),
                                  policy=EXACT_AS_BEAVER, config=MPCConfig(protocols="fss"))
    old = beaver_way.cost.totals()["online"]
    assert max(report.totals()["online"]["bytes"]) < max(old["bytes"]) / 2
    with pytest.raises(pcformer.compiler.lower.LoweringError):   # and Beaver keeps polynomials:
        pcformer.compile(_secret_gelu_softmax, *lookup_inputs, owners=(1, 0),
                         policy=policies.EXACT.for_protocols("fss"))


def test_lookups_under_beaver_fail_before_running_and_name_the_family(lookup_inputs):
    with pytest.raises(pcformer.compiler.lower.LoweringError,
                       match=r"'lut' has no protocol in family 'beaver'.*'fss'"
                             r".*(gelu|softmax)\[sigma\]"):
        pcformer.compile(_gelu_softmax, *lookup_inputs, owners=(1, 0), policy="sigma")


@pytest.mark.slow  # compiles the lookups again; the MLP's local-truncation test stays fast
def test_sigma_lookups_with_local_truncation(lookup_inputs, sigma_run):
    prog, outs, report = _lookup_run(lookup_inputs, trunc_mode="local")
    assert key(report.entries) == key(prog.cost.entries)
    for got, want in zip(outs, sigma_run[1]):
        np.testing.assert_allclose(got, want, atol=2e-3)   # an index may be one step off


@pytest.mark.slow  # compiles the lookups a second time, in ideal mode
def test_sigma_ideal_mode_writes_the_protocol_ledger(lookup_inputs, sigma_run):
    _, protocol_outs, protocol_report = sigma_run
    prog, ideal_outs, ideal_report = _lookup_run(lookup_inputs, mode="ideal")
    assert key(ideal_report.entries) == key(protocol_report.entries)
    for a, b in zip(ideal_outs, protocol_outs):
        np.testing.assert_allclose(a, b, atol=2e-4)


# ----------------------------------------------------------------------------- tiny BERT
@pytest.mark.slow  # compiles the FSS ops of a whole BERT layer (about a minute per policy)
@pytest.mark.parametrize("policy", ["mpcformer", "exact", "sigma"])
def test_tiny_bert_under_fss(tiny_bert, policy):
    fn, params, ids, mask = tiny_bert
    prog = pcformer.compile(fn, params, ids, mask, owners=(0, 1, 1), policy=policy,
                            config=MPCConfig(seed=0, protocols="fss"))
    out, report = prog.run(params, ids, mask)
    ref = np.asarray(prog.plaintext(params, ids, mask))
    np.testing.assert_allclose(np.asarray(out), ref, atol=0.05)
    assert key(report.entries) == key(prog.cost.entries)
    assert min(report.totals()["offline"]["bytes"]) > 0


# ----------------------------------------------------------------------------- CLI, benchmark
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow  # a subprocess costing a tiny GPT-2 twice
def test_cost_command_takes_the_fss_family(tmp_path):
    from pcformer.models import tiny
    folder = tiny.make_tiny_gpt2(tmp_path / "gpt2", n_layer=1, n_embd=16, n_head=2,
                                 vocab_size=64, n_positions=16, tokenizer=False)
    reports = {}
    for fam in ("beaver", "fss"):
        out = _cli("cost", f"--model={folder}", "--seq_len=4", f"--protocols={fam}",
                   f"--report={tmp_path / fam}.json")
        assert out.returncode == 0, out.stderr
        assert f"protocols {fam}" in out.stdout
        reports[fam] = json.loads((tmp_path / f"{fam}.json").read_text())
        assert reports[fam]["protocols"] == fam
    fss_t, beaver_t = (reports[f]["total"]["totals"] for f in ("fss", "beaver"))
    assert fss_t["online"]["rounds"] < beaver_t["online"]["rounds"]
    assert fss_t["offline"]["bytes"][0] > 0 == beaver_t["offline"]["bytes"][0]
    bad = _cli("cost", f"--model={folder}", "--seq_len=4", "--protocols=nope")
    assert bad.returncode != 0 and "fss" in bad.stderr


@pytest.mark.slow  # a subprocess running MiniLM at a short sequence under FSS
def test_run_command_takes_the_fss_family(tmp_path):
    out = _cli("run", "--model=minilm", "--text=Keys for both parties.", "--policy=mpcformer",
               "--seq_len=8", "--protocols=fss", f"--report={tmp_path}/r.json")
    assert out.returncode == 0, out.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["static_equals_measured"] is True
    assert min(rep["totals"]["offline"]["bytes"]) > 0


def test_benchmark_takes_protocols(monkeypatch):
    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bert_layers.py"
    spec = importlib.util.spec_from_file_location("bert_layers", path)
    bert_layers = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bert_layers", bert_layers)   # its dataclasses look it up
    spec.loader.exec_module(bert_layers)
    assert bert_layers.parse(["--protocols", "fss"]).protocols == "fss"
    assert bert_layers.parse([]).protocols == "beaver"
    assert bert_layers.parse([]).compare_bits is None
    assert bert_layers.parse([]).dealer == "simulated"
    assert bert_layers.parse(["--mesh", "--dealer", "separated"]).dealer == "separated"
    assert bert_layers.parse(["--protocols", "fss", "--compare_bits", "36"]).compare_bits == 36
    with pytest.raises(SystemExit):
        bert_layers.parse(["--protocols", "nope"])
