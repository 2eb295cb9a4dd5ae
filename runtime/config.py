"""MPC configuration: one frozen dataclass, validated at construction.

A configuration that cannot work (e.g. a fixed-point product that overflows the ring) is refused
here with the reason, rather than producing silently wrong numbers deep inside a jitted program.
"""
from __future__ import annotations

import dataclasses

RING_BITS = (32, 64)
TRUNC_MODES = ("dealer", "local")
MODES = ("protocol", "ideal")
MATMUL_KERNELS = ("auto", "limb", "native")


@dataclasses.dataclass(frozen=True)
class MPCConfig:
    """Static parameters of the simulated two-party computation.

    ring_bits: l, shares live in Z_2^l as uint64 (64) or uint32 (32).
    frac_bits: f, fixed-point fractional bits; need 0 < f and 2f < l - 2 so that a product of
        two encoded values (scale 2^2f) still has headroom for the dealer truncation's offset.
    trunc_mode: "dealer" (1 round, error <= 1 LSB) or "local" (SecureML, free, rare large errors).
    seed: dealer / PRG seed (per-weight masks of `dot_general_private` derive from it).
    check_overflow: reserved for the compiler's opt-in overflow check (the runtime ignores it).
    mode: "protocol" (every message computed) or "ideal" (functionality, same ledger).
    matmul_kernel: "auto" | "limb" | "native", see `ring.ring_matmul`.
    reveal_to: the party that learns the program outputs (1 = the client).
    """

    ring_bits: int = 64
    frac_bits: int = 16
    trunc_mode: str = "dealer"
    seed: int = 0
    check_overflow: bool = False
    mode: str = "protocol"
    matmul_kernel: str = "auto"
    reveal_to: int = 1

    def __post_init__(self):
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
