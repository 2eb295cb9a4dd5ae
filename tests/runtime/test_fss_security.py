"""Privacy-shaped properties of the FSS family.

- What a party receives online, the opened x + r_in, is uniform whatever the secret (across
  runs, and across elements of one run), for the comparison (full and reduced width), ReLU,
  truncation and LUT openings.
- One party's key alone (root seed and correction words) looks uniform and does not depend on
  alpha: bit frequencies of its words for alpha = 0 and alpha = 2^63 agree with 1/2 (DCF), for
  alpha = 0 and 255 (the early-terminated 8-bit DPF).
- The dealer's material comes from the run's key, never from the inputs: the same key gives
  the same keys for different secrets, a different key gives different keys.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fss_util import run, shares_of
from pcformer.runtime import AShare, Context, MPCConfig, x64
from pcformer.runtime import fss_keys as K
from pcformer.runtime.protocols import fss

CHI2_15_DOF_P1E5 = 45.0   # chi-square critical value, 15 degrees of freedom, p ~ 1e-5


def _chi2_nibble(u, shift: int) -> float:
    """Chi-square statistic of the 4 bits of u starting at `shift` against uniform."""
    counts = np.bincount(((u >> np.uint64(shift)) & np.uint64(15)).astype(np.int64),
                         minlength=16)
    expected = u.size / 16
    return float(((counts - expected) ** 2 / expected).sum())


def _openings_across_runs(op, x, runs: int):
    """The opened masked value of `op` on secret x in `runs` runs (one fresh key each)."""
    cfg = MPCConfig()
    sx = AShare(np.stack([x, np.zeros_like(x)]))

    def one_run(key):
        ctx = Context(cfg, key, audit=True)
        op(ctx, sx)
        payload = next(p for kind, _, p in ctx.audit_log if kind == "exchange")
        return payload[0] + payload[1]

    with x64():
        keys = jax.random.split(jax.random.PRNGKey(11), runs)
        return np.asarray(jax.jit(jax.vmap(one_run))(keys))


OPS = {
    "drelu": lambda c, s: fss.drelu(c, s),
    "relu": lambda c, s: fss.relu(c, s),
    "truncate": lambda c, s: fss.truncate(c, s),
    "lut": lambda c, s: fss.lut(c, s, jnp.arange(16, dtype=jnp.uint64), 4),
    "drelu36": lambda c, s: fss.drelu(c, s, bits=36),      # SIGMA's reduced width
}
WIDTH = {"lut": 4, "drelu36": 36}


@pytest.mark.parametrize("name", sorted(OPS))
def test_opened_masked_input_is_uniform_whatever_the_secret(name):
    secrets = np.array([0, 2 ** 64 - 1, 2 ** 62 - 1, 5], np.uint64)    # 0, -1, a limit, small
    opened = _openings_across_runs(OPS[name], secrets, runs=1024)      # [runs, 4]
    width = WIDTH.get(name, 64)
    for j in range(len(secrets)):
        u = opened[:, j]
        if width < 64:              # two n-bit payloads, no more; the opening is their sum mod 2^n
            assert u.max() < 2 ** (width + 1)
            u = u % np.uint64(2 ** width)
        assert len(np.unique(u)) > (12 if width == 4 else 1000)
        for shift in sorted({0, width - 4}):
            assert _chi2_nibble(u, shift) < CHI2_15_DOF_P1E5, (name, j, shift)


def _party0_key_words(alpha, n=64, size=512, seed=0):
    rng = np.random.default_rng(seed)
    with x64():
        seeds = jnp.asarray(rng.integers(0, 2 ** 64, size=(2, K.SEED_WORDS, size),
                                         dtype=np.uint64))
        keys = K.dcf_gen(seeds, jnp.full((size,), alpha, jnp.uint64),
                         jnp.ones((1, size), jnp.uint64), n)
    return {"seed": np.asarray(keys.seeds[0]), "s_cw": np.asarray(keys.s_cw),
            "t_cw": np.asarray(keys.t_cw), "v_cw": np.asarray(keys.v_cw),
            "final": np.asarray(keys.final)}


def _bit_frequencies(words, bits=64):
    w = words.ravel()
    return np.array([((w >> np.uint64(i)) & np.uint64(1)).mean() for i in range(bits)])


def test_one_partys_dcf_key_is_uniform_and_independent_of_alpha():
    low, high = _party0_key_words(0), _party0_key_words(2 ** 63, seed=1)
    for part in ("seed", "s_cw", "v_cw", "final"):
        f_low, f_high = _bit_frequencies(low[part]), _bit_frequencies(high[part])
        tol = 6 * 0.5 / np.sqrt(low[part].size)                      # six standard deviations
        assert np.all(np.abs(f_low - 0.5) < tol), part
        assert np.all(np.abs(f_high - 0.5) < tol), part
        assert np.all(np.abs(f_low - f_high) < 1.5 * tol), part
    for keys in (low, high):                                       # control bits: fair coins
        assert abs(keys["t_cw"].mean() - 0.5) < 6 * 0.5 / np.sqrt(keys["t_cw"].size)


def test_one_partys_dpf_key_is_uniform_and_independent_of_alpha():
    """The early-terminated DPF (7 levels for 8 bits, a two-word final correction): party 0's
    root seed, seed corrections and final words look uniform for alpha = 0 and alpha = 255."""
    from pcformer.runtime import fss_dpf as D
    size, n = 512, 8
    parts = []
    for alpha, seed in ((0, 0), (255, 1)):
        rng = np.random.default_rng(seed)
        with x64():
            seeds = jnp.asarray(rng.integers(0, 2 ** 64, size=(2, K.SEED_WORDS, size),
                                             dtype=np.uint64))
            keys = D.dpf_gen(seeds, jnp.full((size,), alpha, jnp.uint64),
                             jnp.ones((size,), jnp.uint64), n)
        parts.append({"seed": np.asarray(keys.seeds[0]), "s_cw": np.asarray(keys.s_cw),
                      "final": np.asarray(keys.final)})
    for part in ("seed", "s_cw", "final"):
        f_a, f_b = (_bit_frequencies(p[part]) for p in parts)
        tol = 6 * 0.5 / np.sqrt(parts[0][part].size)
        assert np.all(np.abs(f_a - 0.5) < tol) and np.all(np.abs(f_b - 0.5) < tol), part
        assert np.all(np.abs(f_a - f_b) < 1.5 * tol), part


def _dealt(key, x):
    """Every dealer payload of a ReLU and a truncation on secret x, with dealer key `key`."""
    rng = np.random.default_rng(0)
    sx = shares_of(x, 64, rng)

    def fn(ctx):
        fss.relu(ctx, sx)
        fss.truncate(ctx, sx)
        return [p for kind, _, p in ctx.audit_log if kind == "deal"]

    out, _ = run(MPCConfig(), fn, key=key, audit=True, jit=True)
    return jax.tree_util.tree_leaves(out)


def test_dealer_material_comes_from_the_run_key_not_the_inputs():
    x1 = np.array([0, 1, 2 ** 64 - 1, 77], np.uint64)
    x2 = np.array([5, 2 ** 63, 3, 2 ** 40], np.uint64)
    a, b, c = _dealt(0, x1), _dealt(0, x2), _dealt(1, x1)
    assert len(a) == len(b) == len(c) > 0
    assert all(np.array_equal(u, v) for u, v in zip(a, b))           # same key: same material
    differs = [not np.array_equal(u, v) for u, v in zip(a, c) if u.size > 4]
    assert differs and all(differs)                                  # new key: new material
