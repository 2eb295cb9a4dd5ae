"""What ONE party holds of the dealer's material in a separated deployment, and how it is made.

In one simulated program the dealer lives beside both parties: it draws each party's material
from the stream it shares with that party (`Context.dealer_rows`, `uniform(party=q)`) and
computes the corrections it deals (`channel.deal`). In a deployment each party process holds
only its own part (`PartyMaterial`):

- its dealer seed (the PRG seed it shares with the dealer: its uniform material costs nothing to
  transmit) and, for the server, the deployment's setup key (the seed of its weights' masks);
- its **tape**: the dealer's corrections addressed to it, in the order the program deals them.
  The tape is exactly the party's offline messages: its words, each counted at its message's
  bit width, are the ledger's offline bits to the party (`tape_bits`; tests/e2e/test_mesh.py).

The tape is made before the run by the dealer's pass (`deal_schedule`): the program traced with
`record_deals`, on zero inputs (dealer material never depends on an input), each dealt payload
kept. The schedule ((to_party, shape, bits) of every dealt array, public) lets each party lay its own
corrections into one flat buffer, zeros where the other party's are (it never sees them), so
both processes run the same program.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


class MaterialMismatch(ValueError):
    """The dealer's material was made for another program."""


@dataclasses.dataclass(eq=False)
class PartyMaterial:
    """One party's dealer material inside its program (traced values; see the module docstring).

    dealer_word: uint64 scalar, this party's seed with the dealer. setup_word: uint64 scalar, the
    deployment's setup key (the server's; 0 on the client, which holds none). tape: [n] ring words
    in `schedule` order, this party's corrections at its own entries, zeros at the other's."""

    dealer_word: jax.Array
    setup_word: jax.Array
    tape: jax.Array
    schedule: tuple
    _leaf: int = 0
    _pos: int = 0

    def receive(self, to_party: int, like, bits_per_element: int):
        """The next dealt payload (`like`: its pytree of shapes) as this party holds it: the
        dealer's correction on the device of `to_party`, zeros on the other's."""
        leaves, tree = jax.tree_util.tree_flatten(like)
        out = []
        for x in leaves:
            want = (to_party, tuple(x.shape), bits_per_element)
            got = self.schedule[self._leaf] if self._leaf < len(self.schedule) else None
            if got is None or (got[0], tuple(got[1]), got[2]) != want:
                raise MaterialMismatch(
                    f"the dealer's material does not match this program: dealt array "
                    f"#{self._leaf} is {want} here, {got} in the material (made for another "
                    f"program, model or flags)")
            n = int(np.prod(x.shape, dtype=np.int64))
            out.append(self.tape[self._pos:self._pos + n].reshape(x.shape).astype(x.dtype))
            self._leaf += 1
            self._pos += n
        return jax.tree_util.tree_unflatten(tree, out)

    def check_used_up(self) -> None:
        if self._leaf != len(self.schedule):
            raise MaterialMismatch(f"the dealer's material has {len(self.schedule)} dealt arrays, "
                                   f"this program uses {self._leaf} (made for another program)")


def deal_schedule(deal_log) -> tuple[tuple, list]:
    """(schedule, [party 0's tape, party 1's tape]) from a recording context's `deal_log`:
    schedule[i] = (to_party, shape, bits per element) of dealt array i; each tape the party's
    arrays, raveled and concatenated in order (traced values inside the dealer's pass)."""
    schedule, tapes = [], ([], [])
    for to_party, payload, bits in deal_log:
        for x in jax.tree_util.tree_leaves(payload):
            schedule.append((int(to_party), tuple(int(d) for d in x.shape), int(bits)))
            tapes[to_party].append(jnp.ravel(x))
    flat = [jnp.concatenate(t) if t else jnp.zeros((0,), jnp.uint64) for t in tapes]
    return tuple(schedule), flat


def expand(schedule, party: int, own: np.ndarray, dtype) -> np.ndarray:
    """The flat tape a party's program reads: its own corrections (`own`, concatenated in
    schedule order) at its entries, zeros at the other party's."""
    sizes = [int(np.prod(s, dtype=np.int64)) for _, s, _ in schedule]
    need = sum(n for (to_party, _, _), n in zip(schedule, sizes) if to_party == party)
    if need != len(own):
        raise MaterialMismatch(f"the party's tape holds {len(own)} words, its schedule {need}")
    out = np.zeros(sum(sizes), dtype)
    pos = src = 0
    for (to_party, _, _), n in zip(schedule, sizes):
        if to_party == party:
            out[pos:pos + n] = own[src:src + n]
            src += n
        pos += n
    return out


def tape_bits(schedule, party: int) -> int:
    """The bits of the dealer's messages to `party`: its tape's words at their message widths."""
    return sum(int(np.prod(s, dtype=np.int64)) * bits for to, s, bits in schedule if to == party)
