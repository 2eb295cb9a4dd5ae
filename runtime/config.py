"""MPC configuration: one frozen dataclass, validated at construction.

A configuration that cannot work (e.g. a fixed-point product that overflows the ring) is refused
here with the reason, rather than producing silently wrong numbers deep inside a jitted program.
"""
from __future__ import annotations

import dataclasses
import numbers

RING_BITS = (32, 64)
TRUNC_MODES = ("dealer", "local")
MODES = ("protocol", "ideal")
MATMUL_KERNELS = ("auto", "limb", "native")
DEFAULT_PROTOCOLS = "beaver"
FSS_PRGS = ("splitmix", "threefry")   # runtime/fss_keys.PRGS (not imported: it imports JAX)


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Static parameters of the simulated two-party computation.

    ring_bits: l, shares live in Z_2^l as uint64 (64) or uint32 (32).
    frac_bits: f, fixed-point fractional bits; need 0 < f and 2f < l - 2 so that a product of
        two encoded values (scale 2^2f) still has headroom for the dealer truncation's offset.
    trunc_mode: "dealer" (1 round, error <= 1 LSB) or "local" (SecureML, free, rare large errors).
    seed: None (default): every run draws fresh dealer / PRG keys from the operating system's
        entropy, and every deployment a fresh setup key. An int: the REPRODUCIBLE, INSECURE mode
        for tests and debugging: keys derive from the seed (and the run counter), so masks
        repeat across processes and Programs; reports carry `reproducible_seed` and a warning.
    check_overflow: the simulator's overflow oracle (compiler executors; the runtime ignores it).
    mode: "protocol" (every message computed) or "ideal" (functionality, same ledger).
    matmul_kernel: "auto" | "limb" | "native", see `ring.ring_matmul`.
    reveal_to: the party that learns the program outputs (1 = the client).
    protocols: the protocol family every op is looked up in (runtime/protocols/registry.py;
        "beaver": dealer-assisted Beaver triples; "fss": function secret sharing for the
        comparisons and truncation, docs/fss.md).
    fss_prg: the tree PRG of the FSS keys ("splitmix" fast, "threefry" JAX's block cipher);
        only the "fss" family reads it, and it changes no message size.
    compare_bits: None (default): comparisons work on the whole ring (l bits). An int n (fss
        family only): SIGMA's reduced-width comparisons, a DCF of n - 1 levels instead of l - 1
        and n-bit openings for DReLU: fewer key bytes, online bits and local work. It is the
        user's declaration that every compared value (max, relu, less, ...) satisfies
        |x| < 2^(n-2) in ring units (real value times 2^scale), so that differences fit n signed
        bits; a value beyond it makes that comparison wrong. `check_overflow` and
        `Program.ranges` check the declaration (compiler/ranges.py::comparison_bounds).
    """

    ring_bits: int = 64
    frac_bits: int = 16
    trunc_mode: str = "dealer"
    seed: int | None = None
    check_overflow: bool = False
    mode: str = "protocol"
    matmul_kernel: str = "auto"
    reveal_to: int = 1
    protocols: str = DEFAULT_PROTOCOLS
    fss_prg: str = "splitmix"
    compare_bits: int | None = None

    @property
    def reproducible(self) -> bool:
        """True when keys derive from `seed`: masks repeat across runs, the run is not secure."""
        return self.seed is not None

    def __post_init__(self):
        if self.seed is not None and (isinstance(self.seed, bool)
                                      or not isinstance(self.seed, numbers.Integral)):
            raise ValueError(f"seed must be None (fresh OS entropy) or an int, got {self.seed!r}")
        if self.ring_bits not in RING_BITS:
            raise ValueError(f"ring_bits must be one of {RING_BITS}, got {self.ring_bits}")
        if not (0 < self.frac_bits and 2 * self.frac_bits < self.ring_bits - 2):
            raise ValueError(
                f"frac_bits={self.frac_bits} does not fit ring_bits={self.ring_bits}: need "
                f"0 < frac_bits and 2*frac_bits < ring_bits - 2 (a product of two fixed-point "
                f"values carries 2*frac_bits fractional bits and truncation needs 2 guard bits)")
        if self.trunc_mode not in TRUNC_MODES:
            raise ValueError(f"trunc_mode must be one of {TRUNC_MODES}, got {self.trunc_mode!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.matmul_kernel not in MATMUL_KERNELS:
            raise ValueError(
                f"matmul_kernel must be one of {MATMUL_KERNELS}, got {self.matmul_kernel!r}")
        if self.reveal_to not in (0, 1):
            raise ValueError(f"reveal_to must be 0 or 1, got {self.reveal_to}")
        if self.fss_prg not in FSS_PRGS:
            raise ValueError(f"fss_prg must be one of {FSS_PRGS}, got {self.fss_prg!r}")
        if self.protocols != DEFAULT_PROTOCOLS:
            _check_family(self.protocols)
        if self.compare_bits is not None:
            self._check_compare_bits()

    def _check_compare_bits(self):
        n = self.compare_bits
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise ValueError(f"compare_bits must be None (the whole ring) or an int, got {n!r}")
        if self.protocols != "fss":
            raise ValueError(f"compare_bits is read by the 'fss' protocol family only (SIGMA's "
                             f"reduced-width comparisons); protocols={self.protocols!r} compares "
                             f"on the whole ring: leave compare_bits unset or use protocols='fss'")
        if not self.frac_bits + 2 <= n <= self.ring_bits:
            raise ValueError(f"compare_bits must be in [{self.frac_bits + 2}, {self.ring_bits}] "
                             f"(frac_bits + 2 bits hold a fixed-point value up to 1 in magnitude; "
                             f"at most the ring's {self.ring_bits} bits), got {n}")


def _check_family(family: str) -> None:
    """A family other than the built-in default must be registered. Imported here, not above:
    the protocol modules import this one (and make default configs while they load)."""
    from .protocols import registry
    if family not in registry.families():
        raise ValueError(f"protocols must be one of the registered protocol families "
                         f"{registry.families()}, got {family!r}")
