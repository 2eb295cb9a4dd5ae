"""Function secret sharing, part 2: Boyle-Gilboa-Ishai DPF keys (point functions), vectorised.

A DPF key pair for f(x) = beta if x == alpha else 0 (x, alpha n-bit; beta in Z_2^l) lets each
party evaluate an additive share of f anywhere, or on the whole domain at once (lookup tables).
Construction: Boyle, Gilboa, Ishai, "Function Secret Sharing: Improvements and Extensions"
(CCS 2016), Fig. 1: the GGM tree with one seed and two control bits corrected per level.

Same layout as `fss_keys` (whose PRG and level helpers it uses): one tree per tensor element, a
`lax.scan` over the levels, with early termination (n - 3 levels, below). The full-domain
evaluation doubles a node axis per level, so its cost grows as 2^n PRG words per element: meant
for small n (SIGMA's lookup tables use 6-13 bits).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from .fss_keys import (LAMBDA_BITS, SEED_WORDS, bit_at, both_parties, expansion_words,
                       party_signs, pick, prg, prg_from_state, prg_state, scan_levels, sign,
                       split, times_bit, xor_if)
from .parties import party_ids


# Early termination (BGI 2016, sec. 3.2.1): the tree stops ET_BITS levels early and a leaf
# seed is converted into the group elements of its 2^ET_BITS domain points (`_convert`: the
# seed's own two words for two points, its PRG expansion for more). A key then has n - ET_BITS
# levels and a 2^ET_BITS-word final correction. Why three: a full-domain evaluation (the lookup
# tables) expands 2^(n-3) leaves of 8 words instead of 2^(n-1) nodes of 5 words and their
# children, about 40 % fewer PRG words at 9 bits; the key grows by 4l - 2(lambda + 2) bits
# (124 at l = 64: a tenth of a 9-bit key). Beyond three, the final correction outgrows the
# levels it saves.
ET_BITS = 3


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DPFKeys:
    """Both parties' DPF keys (uint64): seeds [2, W, *shape] (private), s_cw [m, W, *shape],
    t_cw [m, 2, *shape] (0/1) and final [words, *shape] (common correction words; early
    termination: m = `levels(n)` levels, `leaf_words(n)` outputs a leaf)."""
    seeds: jax.Array
    s_cw: jax.Array
    t_cw: jax.Array
    final: jax.Array


def levels(n: int) -> int:
    """Tree levels of an n-bit DPF (early termination cuts ET_BITS)."""
    return max(n - ET_BITS, 0)


def leaf_words(n: int) -> int:
    """Domain points (group elements) a leaf of an n-bit DPF covers: 2^min(n, ET_BITS)."""
    return 1 << (n - levels(n))


def _high(v, n: int):
    """The tree's part of an n-bit point: its bits above the ones a leaf covers."""
    return v >> jnp.uint64(n - levels(n))


def _low(v, n: int):
    """The word of its leaf an n-bit point is (its low min(n, ET_BITS) bits; n >= 1)."""
    return v & jnp.uint64(leaf_words(n) - 1)


def _convert(s, words: int, kind: str):
    """Convert_G of leaf seeds s [P, W, ...]: `words` uniform group elements each, [P, words,
    ...]. A leaf seed's own words when they suffice, else its PRG expansion."""
    if words <= SEED_WORDS:
        return s[:, :words]
    return both_parties(prg(both_parties(s), words, kind))


def dpf_gen(root_seeds, alpha, beta, n: int, kind: str = "splitmix") -> DPFKeys:
    """DPF keys for x == alpha -> beta per element: root_seeds [2, W, *shape] uniform uint64,
    alpha [*shape] n-bit unsigned, beta [*shape] group element (uint64). n >= 1."""
    shape = alpha.shape
    alpha = alpha.astype(jnp.uint64)
    m, a_high = levels(n), _high(alpha, n)
    t0 = jnp.stack([jnp.zeros(shape, jnp.uint64), jnp.ones(shape, jnp.uint64)])

    def level(e, s, t, i):                            # s [P, W, ...], t [P, ...]
        a = bit_at(a_high, m, i)
        s_lose = pick(a, e.s_left, e.s_right)
        s_keep = pick(a, e.s_right, e.s_left)
        s_cw = s_lose[:, 0] ^ s_lose[:, 1]
        tl_cw = e.t_left[0] ^ e.t_left[1] ^ a ^ jnp.uint64(1)
        tr_cw = e.t_right[0] ^ e.t_right[1] ^ a
        t_keep_cw = pick(a, tr_cw, tl_cw)
        s_next = xor_if(t[:, None], both_parties(s_keep), s_cw[None])
        t_next = pick(a, e.t_right, e.t_left) ^ (t & t_keep_cw)
        return s_next, t_next, (s_cw, jnp.stack([tl_cw, tr_cw]))

    s, t, (s_cw, t_cw) = scan_levels(level, root_seeds, t0, jnp.arange(m, dtype=jnp.int32), 0, kind)
    words = jnp.arange(leaf_words(n), dtype=jnp.uint64).reshape((-1,) + (1,) * len(shape))
    unit = jnp.where(words == _low(alpha, n)[None], beta.astype(jnp.uint64)[None], jnp.uint64(0))
    leaf = _convert(s, leaf_words(n), kind)
    final = sign(t[1]) * (unit - leaf[0] + leaf[1])
    return DPFKeys(root_seeds, s_cw, t_cw, final)


def _leaf_values(s, t, final, sg, kind: str):
    """(-1)^b (Convert(s) + t * final): a party's shares of its leaf's points, [P, words, ...]
    from s [P, W, ...], t [P, ...], final [1, words, ...]."""
    return sg[:, None] * (_convert(s, final.shape[1], kind) + times_bit(t[:, None], final))


def dpf_eval(keys: DPFKeys, x, n: int, kind: str = "splitmix"):
    """Both parties' shares [2, *shape] of beta * [x == alpha] at public n-bit x."""
    shape = x.shape
    x = x.astype(jnp.uint64)
    m, x_high = levels(n), _high(x, n)
    t0 = party_ids(shape, jnp.uint64)

    def level(e, s, t, cw):
        i, s_cw, t_cw = cw
        b = bit_at(x_high, m, i)
        s_next = xor_if(t[:, None], both_parties(pick(b, e.s_right, e.s_left)), s_cw[None])
        t_next = pick(b, e.t_right, e.t_left) ^ (t & pick(b, t_cw[1], t_cw[0]))
        return s_next, t_next, None

    s, t, _ = scan_levels(level, keys.seeds, t0,
                          (jnp.arange(m, dtype=jnp.int32), keys.s_cw, keys.t_cw), 0, kind)
    leaves = _leaf_values(s, t, keys.final[None], party_signs(shape), kind)   # [2, words, ...]
    return jnp.take_along_axis(leaves, _low(x, n).astype(jnp.int32)[None, None], axis=1)[:, 0]


def _expand_once(seeds, kind: str):
    """`expand` of [P, W, ...] seeds with its PRG state written once to memory: the words feed
    four consumers (two child seeds, two control bits), and XLA's CPU fusion otherwise
    recomputes the whole PRG inside each consumer's loop. Written once, the SplitMix hash
    leaves each consumer one finaliser to recompute (`scan_levels` says why). The full-domain
    evaluation of a 9-bit DPF on [128, 1536]: 1.70 s -> 0.89 s with the whole expansion
    written once, then 2.8-3.1 s -> 2.2-2.6 s (another day's load) with the hash, the same
    shares."""
    words = expansion_words(0)
    state = jax.lax.optimization_barrier(prg_state(both_parties(seeds), words, kind))
    return split(prg_from_state(state, words, kind), 0)


def dpf_eval_all(keys: DPFKeys, n: int, kind: str = "splitmix"):
    """Both parties' shares [2, 2^n, *shape] of beta * [j == alpha] for every point j (full
    domain, in increasing j). Level by level: the node axis doubles (children interleaved); each
    leaf then gives its `leaf_words(n)` consecutive points."""
    shape = keys.final.shape[1:]
    s = keys.seeds[:, :, None]                           # [P, W, 1, ...]: one node per element
    t = party_ids(shape, jnp.uint64)[:, None]
    for i in range(levels(n)):                           # unrolled: node counts differ per level
        e = _expand_once(s, kind)                               # [W, P, nodes, ...]
        tm = t[:, None]
        s_cw = keys.s_cw[i][:, None, None]               # [W, 1, 1, ...]
        s_l = xor_if(tm, both_parties(e.s_left), both_parties(s_cw))
        s_r = xor_if(tm, both_parties(e.s_right), both_parties(s_cw))
        t_l = e.t_left ^ (t & keys.t_cw[i, 0][None, None])
        t_r = e.t_right ^ (t & keys.t_cw[i, 1][None, None])
        s = jnp.stack([s_l, s_r], axis=3).reshape(s_l.shape[:2] + (-1,) + s_l.shape[3:])
        t = jnp.stack([t_l, t_r], axis=2).reshape(t_l.shape[:1] + (-1,) + t_l.shape[2:])
    sg = party_signs(shape)[:, None]                     # [P, 1, ...]
    leaves = _leaf_values(s, t, keys.final[None, :, None], sg, kind)   # [P, words, nodes, ...]
    leaves = jnp.swapaxes(leaves, 1, 2)                  # point j = node * words + word
    return leaves.reshape(leaves.shape[:1] + (-1,) + shape)


def dpf_key_bits(n: int, ring_bits: int) -> int:
    """Bits of one party's whole DPF key per element: lambda + m (lambda + 2) + w l, with
    m = max(n - 3, 0) levels and w = 2^min(n, 3) words a leaf (early termination)."""
    return LAMBDA_BITS + levels(n) * (LAMBDA_BITS + 2) + leaf_words(n) * ring_bits
