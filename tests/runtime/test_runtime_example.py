"""The README example: share two secrets, multiply them, read the ledger."""
import numpy as np


def test_readme_example():
    from pcformer.runtime import MPCConfig, decode, encode, run
    from pcformer.runtime import protocols as P

    def program(ctx, x, y):
        sx = P.share(ctx, x, owner=0)              # the server's secret
        sy = P.share(ctx, y, owner=1)              # the client's secret
        z = P.truncate(ctx, P.mul(ctx, sx, sy))    # Beaver mul, then fixed-point truncation
        return P.reveal(ctx, z, to=1)              # only the client learns x*y

    out, ledger = run(program, encode([1.5, -2.0]), encode([4.0, 0.25]), config=MPCConfig())
    np.testing.assert_allclose(decode(np.asarray(out)), [6.0, -0.5], atol=2 ** -16)
    t = ledger.totals()
    assert t["online"]["bits"] == (2 * 2 * 64 + 2 * 64 + 2 * 64, 2 * 2 * 64 + 2 * 64)
    assert t["online"]["rounds"] == 3 and t["online"]["steps"] == 3
    assert t["offline"]["bits"] == (0, 2 * 64 + 2 * 2 * 64)
    assert [e.op for e in ledger.entries if e.phase == "online"] == ["mul", "truncate", "reveal"]


def test_decode_outside_x64_keeps_64_bits():
    """The README snippet outside the x64 context: 300 * 200 = 60000 needs more than 32 bits at
    16 fraction bits, so a uint64 -> uint32 narrowing would print -5536."""
    import jax
    from pcformer.runtime import MPCConfig, decode, encode, run, x64
    from pcformer.runtime import protocols as P

    def program(ctx, x, y):
        return P.reveal(ctx, P.truncate(ctx, P.mul(ctx, P.share(ctx, x, owner=0),
                                                   P.share(ctx, y, owner=1))), to=1)

    out, _ = run(program, encode([300.0, -250.5]), encode([200.0, 1000.0]), config=MPCConfig())
    assert isinstance(out, jax.Array) and out.dtype == np.uint64
    got = decode(out)                                  # outside x64, as a user calls it
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [60000.0, -250500.0], atol=2 ** -10)
    with x64():                                        # inside x64: same numbers
        np.testing.assert_allclose(np.asarray(decode(out)), [60000.0, -250500.0], atol=2 ** -10)
    np.testing.assert_allclose(decode(encode([1e6]), 16, 64), [1e6])
