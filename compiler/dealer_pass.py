"""The dealer as a party of its own: its pass over a program, and each party's part of it.

A separated deployment has three roles: the server, the client and the dealer. The dealer knows
no input; it knows the program (public) and draws the seeds: one it shares with each party, and
the deployment's setup key it shares with the server (the seed of the masks of the server's
weights). Before the run it traces the program with `record_deals` on zero inputs (dealer
material never depends on an input: a party's tape equals for any inputs, tested) and keeps
every correction it deals; XLA drops everything else of the program. Each party then receives
ONLY its own `Material`: its seed, (the server) the setup key, its tape and the public schedule.

Keys: fresh from the operating system's entropy, or, in the reproducible mode (`config.seed`),
derived from the seed as the in-process executors derive theirs (the dealer seeds from the run
key of run 0; the setup key from the seed and the program's fingerprint, since the dealer holds
no weights): reproducible and never secure.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np

from pcformer.runtime import dealer_tape, ring
from pcformer.runtime import shares as _shares
from pcformer.runtime.shares import AShare, Context

from . import execute, ir


def fingerprint(prog: ir.Program) -> str:
    """The program's identity: both parties and the dealer must hold the same."""
    return hashlib.blake2b(str(prog).encode(), digest_size=16).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Material:
    """One party's part of the dealer's material for one run of one program.

    tape: this party's corrections only (ring words, concatenated in schedule order);
    schedule: (to_party, shape, bits per element) of every dealt array (public: the program
    fixes it);
    setup_word: the deployment's setup key for the server, 0 for the client."""

    party: int
    program: str               # the fingerprint of the program it was made for
    dealer_word: np.uint64
    setup_word: np.uint64
    schedule: tuple
    tape: np.ndarray
    reproducible: bool = False

    def flat_tape(self) -> np.ndarray:
        """The flat tape this party's program reads (zeros at the other party's entries)."""
        return dealer_tape.expand(self.schedule, self.party, self.tape, self.tape.dtype)

    def key_row(self) -> np.ndarray:
        return np.array([self.dealer_word, self.setup_word], np.uint64)

    def save(self, path) -> None:
        meta = {"party": self.party, "program": self.program, "reproducible": self.reproducible,
                "schedule": [[p, list(s), b] for p, s, b in self.schedule]}
        arrays = dict(meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
                      keys=self.key_row(), tape=self.tape)
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @staticmethod
    def load(path) -> "Material":
        with np.load(path) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            keys, tape = z["keys"], z["tape"]
        return Material(meta["party"], meta["program"], np.uint64(keys[0]), np.uint64(keys[1]),
                        tuple((p, tuple(s), b) for p, s, b in meta["schedule"]), tape,
                        meta["reproducible"])


def check_for(material: Material, prog: ir.Program, party: int) -> None:
    """Refuse material made for another program or another party, before anything runs."""
    if material.party != party:
        raise dealer_tape.MaterialMismatch(
            f"this dealer material is party {material.party}'s; this process is party {party}")
    if material.program != fingerprint(prog):
        raise dealer_tape.MaterialMismatch(
            "the dealer's material was made for another program (give the dealer the same "
            "--job, --model, --seq_len, --policy and MPC flags as the parties)")


def keys(config, prog: ir.Program, run_index: int = 0, group: int | None = None) -> tuple:
    """((dealer seed with party 0, with party 1), setup key): fresh, or from config.seed (the
    seeds of run `run_index`, as the in-process runs draw them; with `group`, those of batch
    group `group` of that run, whose key is fold_in(run key, group) as on a mesh's `batch`
    axis; the setup key is the deployment's, the same for every run and group)."""
    if config.seed is None:
        return _shares.fresh_dealer_words(), _shares.fresh_setup_key()
    with ring.x64():
        key = _shares.run_key(config, run_index)
        if group is not None:
            key = jax.random.fold_in(key, group)
        words = [int(w) for w in _shares.dealer_words_of(_shares.key_words(key))]
    setup = int.from_bytes(hashlib.blake2b(
        f"{int(config.seed)}/{fingerprint(prog)}".encode(), digest_size=8).digest(), "little")
    return tuple(np.uint64(w) for w in words), np.uint64(setup)


def _zeros_like_input(x):
    x = execute.Executable._as_input(x)
    if isinstance(x, AShare):
        return AShare(jnp.zeros_like(x.data), 0)
    return jnp.zeros_like(x)


class Dealer:
    """The dealer's pass over one program, compiled once and run for as many runs (or batch
    groups) as it deals for: `deal(flat_inputs, dealer_words, setup_key)` -> (server's
    Material, client's Material)."""

    def __init__(self, prog: ir.Program, config):
        self.prog, self.config = prog, config
        self.fingerprint = fingerprint(prog)
        self._schedule = None
        self._jitted = jax.jit(self._tapes)

    def _tapes(self, words, setup, flat):
        ctx = Context(self.config, jax.random.PRNGKey(0), setup_key=setup, dealer_words=words,
                      record_deals=True)
        execute.interpret(self.prog, ctx, flat, False)
        schedule, tapes = dealer_tape.deal_schedule(ctx.deal_log)
        self._schedule = schedule
        return tapes

    def deal(self, flat_inputs, dealer_words, setup_key, zero_inputs: bool = True):
        """`flat_inputs` give shapes only (their values are replaced by zeros; `zero_inputs=False`
        keeps them, for the test that the tapes do not depend on them)."""
        zeros = [_zeros_like_input(x) if zero_inputs else execute.Executable._as_input(x)
                 for x in flat_inputs]
        with ring.x64():
            tapes = self._jitted(jnp.asarray(np.array(dealer_words, np.uint64)),
                                 np.uint64(setup_key), zeros)
            tapes = [np.asarray(t).astype(ring.ring_dtype(self.config.ring_bits)) for t in tapes]
        seeded = self.config.seed is not None
        return tuple(Material(p, self.fingerprint, np.uint64(dealer_words[p]),
                              np.uint64(setup_key if p == _shares.SETUP_PARTY else 0),
                              self._schedule, tapes[p], seeded) for p in (0, 1))


_RECENT: dict = {}            # (fingerprint, config) -> Dealer: the last few programs' passes
_RECENT_MAX = 4


def dealer_for(prog: ir.Program, config) -> Dealer:
    """The compiled dealer's pass of this program under this config (one of the last few kept,
    so a second deal for the same program does not compile again)."""
    key = (fingerprint(prog), config)
    if key not in _RECENT:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.pop(next(iter(_RECENT)))
        _RECENT[key] = Dealer(prog, config)
    return _RECENT[key]


def deal(prog: ir.Program, config, flat_inputs, dealer_words=None, setup_key=None,
         zero_inputs: bool = True):
    """The dealer's pass: (server's Material, client's Material). `flat_inputs` give shapes
    only (see `Dealer.deal`). Keys default to `keys(config, prog)`."""
    if dealer_words is None or setup_key is None:
        words, setup = keys(config, prog)
        dealer_words = words if dealer_words is None else dealer_words
        setup_key = setup if setup_key is None else setup_key
    return dealer_for(prog, config).deal(flat_inputs, dealer_words, setup_key, zero_inputs)
