"""The protocol-op registry (runtime/protocols/registry.py): one entry per op, and the compiler's
executor and static cost are lookups in it (a new op needs no compiler change)."""
import ast
import pathlib
from collections import Counter

import numpy as np
import pytest

import pcformer
from pcformer.compiler import cost, execute, ir
from pcformer.runtime import MPCConfig, channel
from pcformer.runtime.costs import Msg, both
from pcformer.runtime.protocols import arith, registry
from pcformer.runtime.protocols.adapt import unary
from pcformer.runtime.shares import AShare

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _emitted_protocol_names() -> set[str]:
    """Every op name the lowering emits as a protocol op: `emit("name", ...)` calls without a
    `kind=` (protocol is emit's default) and `Op("name", ..., "protocol")` in compiler/lower*.py."""
    names = set()
    for path in sorted((ROOT / "compiler").glob("lower*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            fname = getattr(node.func, "attr", getattr(node.func, "id", ""))
            kinds = [k.value for k in node.keywords if k.arg == "kind"]
            if fname == "emit" and not kinds:
                names.add(first.value)
            if fname == "Op" and any(isinstance(a, ast.Constant) and a.value == "protocol"
                                     for a in node.args[1:]):
                names.add(first.value)
    return names


def test_every_emitted_protocol_op_has_an_entry_with_run_cost_and_adapter():
    emitted = _emitted_protocol_names()
    # the scan must see the core products and comparisons, or it is not reading the lowering
    assert {"share", "reveal", "truncate", "mul", "square", "mul_private", "dot_general",
            "dot_general_private", "relu", "drelu"} <= emitted
    assert "lut" in emitted    # table lookups (compiler/lookup_table.py): the FSS family only
    for name in emitted:
        family = FAMILY_ONLY.get(name, "beaver")
        entry = registry.lookup(name, family)
        assert callable(entry.run) and callable(entry.cost), name
        assert entry.from_ir is not None, f"{name}: the lowering emits it, it needs from_ir"
        assert entry.family == family
    for name, family in FAMILY_ONLY.items():      # elsewhere the lowering names the family
        assert registry.find(name, "beaver") is None, name


# ops the lowering emits that only one family implements (lower.py's scheduler then refuses the
# program in the other family with a LoweringError naming the family that has them)
FAMILY_ONLY = {"lut": "fss"}


def test_every_op_of_a_lowered_program_is_registered():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 4)).astype(np.float32)
    w = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
    prog = pcformer.compile(lambda x, w: np.float32(2) * (x @ w) * (x @ w) + (x @ w > 0),
                            x, w, owners=(1, 0))
    names = {op.name for op in prog.ir.protocol_ops()}
    assert {"share", "dot_general_private", "mul", "truncate", "drelu", "reveal"} <= names
    for name in names:
        assert registry.lookup(name).from_ir is not None


def test_names_and_families():
    assert registry.families() == ("beaver", "fss")
    assert {"mul", "and", "a2b", "msb", "b2a", "max_argmax"} <= set(registry.names("beaver"))
    assert registry.names("nope") == ()
    # the ideal functionality is the registry's (no second table): mul has one, reveal none
    assert registry.lookup("mul").ideal is not None and registry.lookup("reveal").ideal is None


def test_lookup_errors_name_the_op_the_family_and_what_exists():
    with pytest.raises(KeyError, match=r"'frobnicate'.*'beaver'.*dot_general"):
        registry.lookup("frobnicate")
    with pytest.raises(KeyError, match=r"no protocol family 'nope'.*'beaver', 'fss'"):
        registry.lookup("mul", "nope")


def test_an_op_without_adapter_says_the_lowering_does_not_emit_it():
    with pytest.raises(NotImplementedError, match="'and'.*from_ir"):
        registry.lookup("and").messages(None, MPCConfig())


def test_a_name_cannot_be_registered_twice_in_a_family():
    entry = registry.lookup("mul")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(registry.ProtocolOp("mul", entry.run, entry.cost))


def test_config_refuses_an_unknown_family():
    with pytest.raises(ValueError, match=r"protocols must be one of.*beaver.*'nope'"):
        MPCConfig(protocols="nope")
    assert MPCConfig().protocols == "beaver"


# ----------------------------------------------------------------------------- a toy op
def _cube(ctx, x: AShare) -> AShare:
    """x^3 of an integer share by two Beaver products, then an (extra) opening of nothing: a
    protocol written the way a new one would be, out of existing pieces plus one message."""
    sq = arith.mul(ctx, x, x)
    cube = arith.mul(ctx, sq, x)
    channel.send(ctx, 0, cube.data[0] * 0, cube.depth, 8)   # 8 bits from party 0
    return AShare(cube.data, cube.depth + 1)


def _cube_cost(x_shape, config=MPCConfig()):
    """Two muls, one after the other, then 8 bits per element from party 0."""
    n = int(np.prod(x_shape))
    nl = n * config.ring_bits
    return [Msg("offline", (0, nl), 1, "mul"), both(2 * nl, 1, "mul"),
            Msg("offline", (0, nl), 1, "mul"), both(2 * nl, 2, "mul"),
            Msg("online", (8 * n, 0), 3, "ping")]


@pytest.fixture
def toy_cube():
    registry.register(registry.ProtocolOp("toy_cube", _cube, _cube_cost, None, unary()))
    yield
    registry.unregister("toy_cube")
    assert "toy_cube" not in registry.names()


def _toy_program():
    """client input x (int32 [2, 3]) -> share -> toy_cube -> reveal to the client."""
    x = ir.Value(0, (2, 3), "int32", ir.PRIVATE(1), 0)
    s = ir.Value(1, (2, 3), "int32", ir.SECRET, 0)
    c = ir.Value(2, (2, 3), "int32", ir.SECRET, 0)
    out = ir.Value(3, (2, 3), "int32", ir.PRIVATE(1), 0)
    ops = (ir.Op("share", (x,), (s,), {"party": 1, "enc": 0}),
           ir.Op("toy_cube", (s,), (c,), {}, scope="toy"),
           ir.Op("reveal", (c,), (out,), {"to": 1}))
    return ir.Program((x,), ops, (out,), ("int32",))


def _key(entries):
    return Counter((e.op, e.scope, e.phase, tuple(e.bits), e.depth) for e in entries)


def test_a_registered_toy_op_runs_and_costs_without_compiler_changes(toy_cube):
    config = MPCConfig(seed=0)
    prog = _toy_program()
    x = np.array([[1, -2, 3], [0, 5, -7]], np.int32)
    outs, entries, _, _ = execute.build(prog, config)([x])
    np.testing.assert_array_equal(np.asarray(outs[0]), x ** 3)
    static = cost.static_cost(prog, config)
    assert _key(static) == _key(entries)
    toy = [e for e in static if e.op == "toy_cube"]
    assert sum(e.bits[0] for e in toy if e.phase == "online") == 2 * 2 * 6 * 64 + 8 * 6
    assert max(e.depth for e in static if e.phase == "online") == 4   # 3 rounds + reveal


def test_after_unregistering_the_toy_op_is_refused_clearly(toy_cube):
    registry.unregister("toy_cube")
    with pytest.raises(KeyError, match="'toy_cube'"):
        cost.static_cost(_toy_program(), MPCConfig())


@pytest.fixture
def toy_family():
    """A second family "toy": beaver's share and reveal plus the toy cube."""
    import dataclasses
    ops = [dataclasses.replace(registry.lookup(n), family="toy") for n in ("share", "reveal")]
    ops.append(registry.ProtocolOp("toy_cube", _cube, _cube_cost, None, unary(), family="toy"))
    registry.register(*ops)
    yield
    for op in ops:
        registry.unregister(op.name, "toy")
    assert registry.families() == ("beaver", "fss")


def test_execution_and_cost_look_ops_up_in_the_configs_family(toy_family):
    assert registry.families() == ("beaver", "fss", "toy")
    prog = _toy_program()
    x = np.array([[2, 1, 0], [-1, 3, 4]], np.int32)
    config = MPCConfig(seed=0, protocols="toy")
    outs, entries, _, _ = execute.build(prog, config)([x])
    np.testing.assert_array_equal(np.asarray(outs[0]), x ** 3)
    assert _key(cost.static_cost(prog, config)) == _key(entries)
    with pytest.raises(KeyError, match="'toy_cube' is not registered in family 'beaver'"):
        cost.static_cost(prog, MPCConfig())
