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
