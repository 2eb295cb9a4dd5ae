"""Share types and the per-program Context (ledger, dealer key stream, scope and op stacks).

Shares carry a leading party axis: `data[i]` is party i's share. `depth` (static, pytree aux
data) is the round depth at which the value became available, so the critical path is tracked at
trace time and costs nothing at run time.
"""
from __future__ import annotations

import contextlib
import dataclasses
import secrets
import zlib

import jax
import jax.numpy as jnp
from jax import lax
import numpy as np

from . import ring
from .config import MPCConfig
from .ledger import Ledger


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AShare:
    """Additive shares over Z_2^l: x = data[0] + data[1] mod 2^l."""

    data: jax.Array
    depth: int = dataclasses.field(default=0, metadata=dict(static=True))

    @property
    def shape(self):
        return self.data.shape[1:]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BShare:
    """XOR shares, an element's `width` low bits packed in one uint word: x = data[0] ^ data[1].

    The ledger counts `width` bits per element for every boolean message.
    """

    data: jax.Array
    depth: int = dataclasses.field(default=0, metadata=dict(static=True))
    width: int = dataclasses.field(default=64, metadata=dict(static=True))

    @property
    def shape(self):
        return self.data.shape[1:]


_GAMMA = 0x9E3779B97F4A7C15
_M64 = (1 << 64) - 1


def _mix64(z):
    """SplitMix64's finaliser on uint64 arrays (wrapping arithmetic). In `lax`, not `jnp`
    operators: each jnp operator on a tracer passes a jit wrapper, twice the tracing time, and
    every op program of a run traces this a few times."""
    z = lax.mul(lax.bitwise_xor(z, lax.shift_right_logical(z, np.uint64(30))),
                np.uint64(0xBF58476D1CE4E5B9))
    z = lax.mul(lax.bitwise_xor(z, lax.shift_right_logical(z, np.uint64(27))),
                np.uint64(0x94D049BB133111EB))
    return lax.bitwise_xor(z, lax.shift_right_logical(z, np.uint64(31)))


def _mix64_int(z: int) -> int:
    """The same finaliser on a Python int (for static seeds)."""
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def fresh_key():
    """A dealer/PRG key (legacy uint32[2] key data) from the operating system's entropy."""
    return jnp.asarray(np.frombuffer(secrets.token_bytes(8), np.uint32))


_FOLD_SALT = 0x6A09E667F3BCC908   # sqrt(2)'s fraction: a word no dealer or setup salt uses


def fold_key(key, index):
    """The key of part `index` of a run keyed `key` (both may be traced): as
    `jax.random.fold_in`, distinct for distinct indices, as legacy uint32[2] key data.

    SplitMix64's finaliser of the key's words and the index instead of threefry: an op program
    of the op executor folds its index into the run key, and threefry's fold_in cost each of
    them ~30 ms of lowering and ~200 HLO instructions to compile. Like the dealer's streams
    (`Context.uniform`), a simulator's PRG, not a cryptographic one."""
    # the key mixed under a salt, then the index added, then mixed again: two run keys collide
    # only where their mixed words lie less than the indices apart (a chance of ~2^-64 per
    # pair and index); an xor of mix64(word) with mix64(index) instead would give a zero key
    # whenever the two were equal (seed s and index s)
    start = _mix64(lax.bitwise_xor(key_words(key), np.uint64(_FOLD_SALT)))
    word = _mix64(lax.add(start, lax.convert_element_type(index, np.uint64)))
    return lax.convert_element_type(
        jnp.stack([lax.shift_right_logical(word, np.uint64(32)), word]), np.uint32)


def run_key(config: MPCConfig, run_index: int = 0):
    """The dealer/PRG key of one run: fresh OS entropy, or (reproducible mode, `config.seed` set)
    fold_in(PRNGKey(seed), run_index), the same in every process."""
    if config.seed is None:
        return fresh_key()
    return jax.random.fold_in(jax.random.PRNGKey(config.seed), run_index)


SETUP_PARTY = 0          # whose plaintext operands are opened once per deployment (the server)
_DEALER_SALTS = (0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1)


def dealer_words_of(seed_word):
    """The dealer's seeds with party 0 and party 1, derived from a run's seed word (one simulated
    program: the dealer and both parties live in it). Works on traced and concrete words."""
    w = jnp.asarray(seed_word, jnp.uint64)
    return tuple(_mix64(w ^ jnp.uint64(s)) for s in _DEALER_SALTS)


def fresh_dealer_words() -> tuple:
    """Two independent dealer seeds (one per party) from the operating system's entropy."""
    return tuple(np.uint64(secrets.randbits(64)) for _ in range(2))


def fresh_setup_key() -> np.uint64:
    """A deployment key (the seed of every setup mask) from the operating system's entropy."""
    return np.uint64(secrets.randbits(64))


def key_words(key):
    """A key's data as uint64 (the PRG's seed material); works on traced keys."""
    kd = key
    if jax.dtypes.issubdtype(getattr(kd, "dtype", None), jax.dtypes.prng_key):
        kd = jax.random.key_data(kd)
    kd = jnp.ravel(kd)[:2].astype(jnp.uint64)
    return _mix64((kd[0] << jnp.uint64(32)) | kd[1])


def _materialize(z, seed):
    """`z`, computed once into its own buffer: XLA may not fuse the PRG into its consumers.

    Why: XLA's CPU fusion duplicates cheap elementwise producers into every consumer, and a
    consumer that reads the material at several slices (an AND layer's a, b, c) or through the
    parties' message swap recomputes the SplitMix64 stream per read, compounding over the
    layers of a comparison circuit (a ReLU on 128x1536 ran 3.5x slower than its DReLU alone).
    `lax.optimization_barrier` does not stop this (XLA CPU expands barriers before fusion); a
    conditional does: its operand and result are buffers. The predicate is always true but
    depends on the run's key (`seed | 1 != 0`), so XLA cannot fold the conditional away; with a
    constant seed (a weight mask without salt) it folds, which costs nothing there.
    """
    if isinstance(seed, (int, np.integer)) or not isinstance(seed, jax.core.Tracer):
        return z
    seed = jnp.ravel(seed)[0]          # several streams' seeds: the first decides (all traced)
    return jax.lax.cond((seed | jnp.uint64(1)) != jnp.uint64(0), lambda v: v, jnp.zeros_like, z)


class Context:
    """State of one simulated two-party program, used while tracing.

    config: the MPCConfig. key: the dealer/PRG key (may be a traced value inside jit).
    A Python counter advanced at trace time keys each PRG call, so the streams are deterministic
    at trace time; `uniform(shape)` is the fast PRG the dealer and the parties' shared seeds use.
    `scope(path, op_class)` pushes a module path and, optionally, the operator class of what
    runs inside (the ledger records the innermost class given), `op(...)` an op label (the
    ledger records the outermost as `op` and the whole path as `detail`), `phase("setup")` marks
    per-deployment messages. With `audit=True` the channel also keeps every payload in `audit_log`.
    """

    def __init__(self, config: MPCConfig | None = None, key=None, audit: bool = False,
                 setup_key=None, party_axis: str | None = None, dealer_words=None,
                 party_material=None, record_deals: bool = False, fence_messages: bool = False):
        """key: the run's dealer/PRG key (None: `run_key(config)`, fresh OS entropy unless
        config.seed is set). setup_key: the deployment key (uint64, may be traced) every setup
        mask B derives from, with the weight's id; the compiler draws one per deployment (per
        compiled program and set of private weights) and keeps it across runs, which is what lets
        a weight's opening F = W - B be paid once. None: derived from the run key, i.e. fresh
        every run (secure, no amortisation).

        The dealer's randomness: `dealer_words` (w0, w1) seed the dealer's stream shared with each
        party (None: derived from the run key, as one simulated program may). `party_material`
        (runtime/dealer_tape.PartyMaterial, with `party_axis`): this device is ONE party of a
        separated deployment; it holds only its own dealer seed, its setup key (the server) and
        its tape of the dealer's corrections, and draws zeros for whatever it does not hold.
        `record_deals`: keep every dealt payload in `deal_log` as (to_party, payload) (the
        dealer's pass that writes each party's tape). `fence_messages`: every value received in
        an exchange is computed into its own buffer (`fence`), for one large jitted program."""
        self.config = config or MPCConfig()
        self.key = run_key(self.config) if key is None else key
        self._seed_word = key_words(self.key)
        self.setup_key = (self._seed_word ^ jnp.uint64(0x5E7D9C1A0B3F2E47)
                          if setup_key is None else setup_key)
        self.material = party_material
        if party_material is not None:
            if party_axis is None:
                raise ValueError("a party's own material needs the party axis (one party per device)")
            self._dealer_words = (party_material.dealer_word,) * 2
            self.setup_key = party_material.setup_word
        else:
            self._dealer_words = (dealer_words_of(self._seed_word) if dealer_words is None
                                  else tuple(jnp.asarray(w, jnp.uint64) for w in dealer_words))
        self.deal_log: list | None = [] if record_deals else None
        self.fence_messages = fence_messages
        self.ledger = Ledger()
        self.party_axis = party_axis
        self.audit = audit
        self.audit_log: list = []
        self._counter = 0
        self._scopes: list[tuple[str, str]] = []   # (module path, operator class or "")
        self._ops: list[str] = []
        self._phase = "online"
        self._shadow_depth = 0

    # -- randomness
    def uniform(self, shape, weight_id: str | None = None, party: int | None = None):
        """Uniform ring elements of `shape`: the parties' shared PRG (party None), the dealer's
        stream shared with `party`, or (`weight_id`) the server's setup mask.

        Why not `jax.random.bits(fold_in(key, counter))`: threefry (and even XLA's
        RngBitGenerator) cost seconds of compile time per call, and a transformer makes
        thousands of dealer calls.
        Here each call is a counter-mode SplitMix64 stream: element i of call c is
        mix64(seed_c + (i + 1) * gamma), seed_c = mix64(key words, c) with c a Python counter
        (deterministic at trace time). Pure elementwise integer ops: compiles and runs fast.
        A simulator PRG, not a cryptographic one (a deployment would use AES-CTR from the seed).
        Setup masks (`weight_id`) derive from the deployment's `setup_key` (the dealer's and the
        server's) and the weight's id: the same across the runs of one deployment, never shared
        by two deployments or weights. With `party_material` a stream this party does not hold
        comes out as zeros (its seed is not in this process).
        """
        if weight_id is not None:
            owner = SETUP_PARTY
            c = zlib.crc32(weight_id.encode())
            seed = _mix64(jnp.asarray(self.setup_key, jnp.uint64)
                          ^ jnp.uint64(_mix64_int((c << 1) ^ 1)))
        else:
            owner = party
            base = self._seed_word if party is None else self._dealer_words[party]
            seed = base ^ jnp.uint64(_mix64_int(self._counter + 1))
            self._counter += 1
        z = self._stream(seed, shape)
        if self.material is not None and owner is not None:
            z = z * self._holds(owner, z.dtype)
        return z

    def dealer_block(self, owners, shape):
        """[len(owners), *shape]: row i uniform from the dealer's stream shared with party
        owners[i], all rows from ONE counter value and one elementwise stream (as cheap to
        compile and run as one `uniform` of the whole block; rows of one party differ by their
        position in the stream). With `party_material` the rows of the party this device is not
        are zeros."""
        c = self._counter
        self._counter += 1
        salt = jnp.uint64(_mix64_int(c + 1))
        seeds = jnp.stack([self._dealer_words[o] ^ salt for o in owners])
        z = self._stream(seeds, shape)
        if self.material is not None:
            held = jnp.stack([self._holds(o, z.dtype) for o in owners])
            z = z * held.reshape((len(owners),) + (1,) * len(tuple(shape)))
        return z

    def dealer_rows(self, shape):
        """[2, *shape]: row q from the dealer's stream with party q (`dealer_block((0, 1), ...)`)."""
        return self.dealer_block((0, 1), shape)

    def _holds(self, party: int, dtype):
        """1 on the device of `party`, 0 elsewhere (party-separated runs only: inside shard_map
        over `party_axis`)."""
        return (jax.lax.axis_index(self.party_axis) == party).astype(dtype)

    def _stream(self, seed, shape):
        """The SplitMix64 stream of `seed` over `shape`; a [k] vector of seeds gives [k, *shape],
        row i seeded by seed[i] at counters i*n+1 ... (i+1)*n (one stream over the block)."""
        n = int(np.prod(shape, dtype=np.int64))
        lead = tuple(jnp.shape(seed))
        k = int(np.prod(lead, dtype=np.int64)) if lead else 1
        ctr = jax.lax.iota(jnp.uint64, k * n) + jnp.uint64(1)
        # the stream's scalar start, materialized: fused into the loop, XLA recomputed it for
        # every element (3.7x the cost of the stream itself)
        start = _materialize(_mix64(seed), seed)
        if lead:
            start = start.reshape(lead + (1,))
            ctr = ctr.reshape(lead + (n,))
        z = _mix64(start + ctr * jnp.uint64(_GAMMA))
        z = z.reshape(lead + tuple(shape)).astype(ring.ring_dtype(self.ring_bits))
        return _materialize(z, seed)

    def fence(self, x):
        """`x` computed once into its own buffer (see `_materialize`). Why, for a received
        message in one whole-program jit: left to itself, XLA CPU fuses the parties' row swap of
        every exchange into its consumers and their producers, and its compile time grew
        superlinearly with the protocol's depth (a chain of 20 Beaver multiplications with
        truncation: 31 s; fenced: 2.6 s, linear). Small per-op programs compile faster without
        it (the op executor does not fence)."""
        return _materialize(x, self._seed_word)

    @property
    def dealer_computes(self) -> bool:
        """Whether the dealer's corrections are computed here (False in a party's own process:
        they come from its tape)."""
        return self.material is None

    # -- ideal mode
    @property
    def ideal(self) -> bool:
        """True where a protocol op should compute its functionality (mode "ideal", not shadowed)."""
        return self.config.mode == "ideal" and self._shadow_depth == 0

    def shadow(self, thunk):
        """Run `thunk()` (a real protocol) abstractly: `jax.eval_shape` traces it, so its channel
        calls write the ledger exactly as in protocol mode, but none of its computation enters the
        program. Returns the output's pytree of ShapeDtypeStructs (share depths and widths are
        static aux data, so they come back exact). Nested protocols run for real inside, and the
        audit log is paused (its payloads would be abstract tracers)."""
        audit, self.audit = self.audit, False
        self._shadow_depth += 1
        try:
            return jax.eval_shape(thunk)
        finally:
            self._shadow_depth -= 1
            self.audit = audit

    # -- labels
    @contextlib.contextmanager
    def scope(self, name: str, op_class: str = ""):
        self._scopes.append((name, op_class))
        try:
            yield
        finally:
            self._scopes.pop()

    @contextlib.contextmanager
    def op(self, name: str):
        self._ops.append(name)
        try:
            yield
        finally:
            self._ops.pop()

    @contextlib.contextmanager
    def phase(self, name: str):
        prev, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = prev

    @property
    def current_scope(self) -> str:
        return "/".join(s for s, _ in self._scopes if s)

    @property
    def current_op_class(self) -> str:
        return next((c for _, c in reversed(self._scopes) if c), "")

    @property
    def current_op(self) -> str:
        return self._ops[0] if self._ops else "?"

    @property
    def current_detail(self) -> str:
        return "/".join(self._ops)

    @property
    def current_phase(self) -> str:
        return self._phase

    @property
    def ring_bits(self) -> int:
        return self.config.ring_bits
