"""Ring Z_2^l arithmetic, fixed-point encoding and the exact ring matmul.

Shares are uint64 (l = 64) or uint32 (l = 32) arrays; unsigned integer arithmetic in XLA wraps
mod 2^l, which is exactly the ring. 64-bit types need JAX's x64 mode: the runtime enters it only
locally with `x64()` (the `jax.enable_x64(True)` context manager) and never flips the global flag.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F64_EXACT_BITS = 53  # float64 represents every integer of magnitude <= 2^53 exactly


def x64():
    """Context manager enabling 64-bit types for the runtime, leaving the global setting alone."""
    return jax.enable_x64(True)


def ring_dtype(bits: int):
    """The unsigned dtype holding Z_2^bits."""
    return {64: jnp.uint64, 32: jnp.uint32}[bits]


def signed_dtype(bits: int):
    return {64: jnp.int64, 32: jnp.int32}[bits]


def to_signed(u):
    """Two's-complement signed view of ring elements (a bitcast, no arithmetic)."""
    bits = jnp.iinfo(u.dtype).bits
    return lax.bitcast_convert_type(u, signed_dtype(bits))


def from_signed(s):
    bits = jnp.iinfo(s.dtype).bits
    return lax.bitcast_convert_type(s, ring_dtype(bits))


def safe_bound(frac_bits: int, ring_bits: int) -> float:
    """Largest |x| (exclusive) that `encode` accepts: 2^(l-2-f).

    An encoded value must stay below 2^(l-2) in magnitude, the range where the dealer truncation
    and the comparisons (which need |x - y| < 2^(l-1)) are exact.
    """
    return float(2 ** (ring_bits - 2 - frac_bits))


def encode(x, frac_bits: int = 16, ring_bits: int = 64) -> np.ndarray:
    """Host-side fixed-point encoding: round(x * 2^f) mod 2^l as a numpy uint array.

    Raises ValueError on NaN/inf or on |x| >= 2^(l-2-f), naming the bound.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot encode NaN or inf as a fixed-point ring element")
    bound = safe_bound(frac_bits, ring_bits)
    if x.size and np.max(np.abs(x)) >= bound:
        raise ValueError(
            f"value {float(np.max(np.abs(x)))!r} outside the safe fixed-point range: |x| must be "
            f"< 2^(l-2-f) = 2^{ring_bits - 2 - frac_bits} = {bound:g} for l={ring_bits}, "
            f"f={frac_bits}")
    s = np.round(x * float(2 ** frac_bits)).astype(np.int64)
    if ring_bits == 64:
        return s.view(np.uint64) if s.ndim else np.uint64(s.astype(np.uint64))
    return (s & 0xFFFFFFFF).astype(np.uint32)


def encode_traced(x, frac_bits: int = 16, ring_bits: int = 64):
    """In-jit fixed-point encoding (no range check): round(x * 2^f) mod 2^l. `frac_bits` may be
    traced (a cached program serving several scales): 2^f is then built from its exponent
    bits, exactly the constant a static f gives."""
    s = jnp.round(jnp.asarray(x, jnp.float64) * _pow2(frac_bits)).astype(jnp.int64)
    u = lax.bitcast_convert_type(s, jnp.uint64)
    return u.astype(ring_dtype(ring_bits))


def _pow2(f):
    """2.0^f as float64: a Python float for a static f, else from the IEEE exponent field
    (f + 1023) << 52, exact for -1022 <= f <= 1023 (exp2 need not be)."""
    if isinstance(f, (int, np.integer)):
        return float(2 ** int(f))
    bits = lax.shift_left(lax.convert_element_type(f, np.int64) + np.int64(1023), np.int64(52))
    return lax.bitcast_convert_type(bits, jnp.float64)


def _x64_enabled() -> bool:
    """Whether 64-bit types are live here (inside `x64()` or with the global flag set)."""
    return jax.dtypes.canonicalize_dtype(jnp.uint64) == np.dtype(np.uint64)


def decode(u, frac_bits: int = 16, ring_bits: int = 64):
    """Signed view of ring elements divided by 2^f, as float64.

    Right wherever it is called: numpy in, numpy out; a concrete jax array is decoded on the
    device inside the x64 context and on the host (numpy, no truncation) outside it, because
    outside x64 JAX silently narrows uint64 to uint32 and float64 to float32 (300 * 200 would
    decode as -5536). A traced value must be inside x64 for 64-bit rings (the runtime's jit is).
    """
    if isinstance(u, jax.core.Tracer) or (isinstance(u, jax.Array) and _x64_enabled()):
        if ring_bits == 64 and not _x64_enabled():
            raise ValueError("decode of a traced 64-bit ring value needs JAX's x64 mode: call it "
                             "inside `pcformer.runtime.x64()`")
        return to_signed(u.astype(ring_dtype(ring_bits))).astype(jnp.float64) / float(2 ** frac_bits)
    u = np.asarray(u).astype({64: np.uint64, 32: np.uint32}[ring_bits])
    s = u.view({64: np.int64, 32: np.int32}[ring_bits])
    return s.astype(np.float64) / float(2 ** frac_bits)


def uniform(key, shape, ring_bits: int):
    """Uniform ring elements (the dealer's and the PRGs' randomness)."""
    return jax.random.bits(key, shape, dtype=ring_dtype(ring_bits))


# ----------------------------------------------------------------------------- exact ring matmul

def _default_dn(a_ndim: int):
    return (((a_ndim - 1,), (0,)), ((), ()))


def _contract_size(shape, dims) -> int:
    return int(np.prod([shape[d] for d in dims], dtype=np.int64)) if dims else 1


@functools.lru_cache(maxsize=None)
def plan_limbs(ring_bits: int, k: int, a_bits: int | None, b_bits: int | None):
    """Choose limb widths and the contraction chunk for an exact float64 limb matmul.

    Full operands are split into balanced (signed) w-bit digits, |digit| <= 2^(w-1); a small
    operand (|v| < 2^bits) stays one signed limb. Only limb pairs whose offset is below l bits
    matter (the rest vanish mod 2^l), and every float64 partial sum must stay <= 2^53, so the
    contraction is split into chunks of at most floor(2^53 / (max|limb_a| * max|limb_b|)) terms.
    Balanced digits halve each limb's magnitude, which buys one bit of width per operand: 22-bit
    digits (3 per operand, 6 pairs below 2^64) hold contractions up to 2048 terms unchunked,
    where unsigned limbs needed 16-bit widths (10 pairs) or chunking. Returns (w, chunk, n_pairs), minimising an
    estimate of the work: pairs * chunks * (chunk + 256 + 4096). The +256 stands for the per-GEMM
    conversion and call overhead (fitted on CPU); the +4096 for what each unrolled GEMM costs XLA
    to compile: without it a long contraction (a one-hot embedding lookup over a 30522-word
    vocabulary) picks 22-bit limbs in 60 chunks, 360 GEMMs, and minutes of compile time, where
    16-bit limbs need 10 GEMMs and no chunking.
    """
    best = None
    for w in range(8, 27):
        n = -(-ring_bits // w)
        na = 1 if a_bits is not None else n
        nb = 1 if b_bits is not None else n
        offs_a = [0] if a_bits is not None else [w * i for i in range(n)]
        offs_b = [0] if b_bits is not None else [w * j for j in range(n)]
        pairs = sum(1 for oa in offs_a for ob in offs_b if oa + ob < ring_bits)
        ma = 2 ** a_bits if a_bits is not None else 2 ** (w - 1)
        mb = 2 ** b_bits if b_bits is not None else 2 ** (w - 1)
        chunk = (2 ** F64_EXACT_BITS) // (ma * mb)
        if chunk < 1:
            continue
        chunks = -(-k // chunk)
        cost = pairs * chunks * (min(chunk, k) + 256 + 4096)
        if best is None or cost < best[0]:
            best = (cost, w, min(chunk, max(k, 1)), pairs)
        if na == 1 and nb == 1:
            break
    if best is None:
        raise ValueError(f"no exact limb plan for a_bits={a_bits}, b_bits={b_bits}")
    return best[1:]


def _limbs(u, w: int, ring_bits: int, small_bits: int | None):
    """[(float64 limb, bit offset)] of a ring array: sum(limb * 2^offset) = u mod 2^l.

    Full operands: balanced digits d_i in [-2^(w-1), 2^(w-1)), taken from the low end: the low
    w bits v give d = (v xor 2^(w-1)) - 2^(w-1), then u <- (u - d) / 2^w (exact in uint64)."""
    if small_bits is not None:
        return [(to_signed(u).astype(jnp.float64), 0)]
    t = u.astype(jnp.uint64)
    n = -(-ring_bits // w)
    mask, half = jnp.uint64((1 << w) - 1), jnp.uint64(1 << (w - 1))
    out = []
    for i in range(n):
        d = to_signed((t & mask) ^ half) - to_signed(half)        # int64 in [-2^(w-1), 2^(w-1))
        out.append((d.astype(jnp.float64), w * i))
        if i + 1 < n:
            t = (t - from_signed(d)) >> jnp.uint64(w)
    return out


def _f64_to_ring(x):
    """An integer-valued float64 (|x| <= 2^53) as a uint64 ring element (two's complement)."""
    return lax.bitcast_convert_type(x.astype(jnp.int64), jnp.uint64)


def _chunk_slices(shape_a, shape_b, dn, chunk: int):
    """Split the first contracting dim so that each chunk's contraction has <= chunk terms."""
    (ca, cb), _ = dn
    k = _contract_size(shape_a, ca)
    if k <= chunk:
        return [None]
    d0a, d0b = ca[0], cb[0]
    rest = k // shape_a[d0a]
    step = chunk // rest
    if step < 1:
        raise ValueError("contraction too large for the limb kernel's exact chunking")
    return [(d0a, d0b, s, min(s + step, shape_a[d0a])) for s in range(0, shape_a[d0a], step)]


def _slice(x, dim, lo, hi):
    return lax.slice_in_dim(x, lo, hi, axis=dim)


def ring_matmul_limb(a, b, dimension_numbers=None, ring_bits: int = 64,
                     a_bits: int | None = None, b_bits: int | None = None):
    """Bit-exact `lax.dot_general(a, b) mod 2^l` from float64 GEMMs over limbs (see plan_limbs)."""
    dn = dimension_numbers or _default_dn(a.ndim)
    dn = (tuple(map(tuple, dn[0])), tuple(map(tuple, dn[1])))
    k = _contract_size(a.shape, dn[0][0])
    w, chunk, _ = plan_limbs(ring_bits, max(k, 1), a_bits, b_bits)
    acc = None
    for sl in _chunk_slices(a.shape, b.shape, dn, chunk):
        ac, bc = (a, b) if sl is None else (_slice(a, sl[0], sl[2], sl[3]),
                                              _slice(b, sl[1], sl[2], sl[3]))
        la = _limbs(ac, w, ring_bits, a_bits)
        lb = _limbs(bc, w, ring_bits, b_bits)
        for xa, oa in la:
            for xb, ob in lb:
                if oa + ob >= ring_bits:
                    continue
                p = lax.dot_general(xa, xb, dn, precision=lax.Precision.HIGHEST,
                                    preferred_element_type=jnp.float64)
                term = _f64_to_ring(p)
                if oa + ob:
                    term = term << jnp.uint64(oa + ob)
                acc = term if acc is None else acc + term
    return acc.astype(ring_dtype(ring_bits))


def ring_matmul_native(a, b, dimension_numbers=None, ring_bits: int = 64):
    """XLA's native integer dot_general (wraps mod 2^l): the reference, slow on CPU."""
    dn = dimension_numbers or _default_dn(a.ndim)
    dt = ring_dtype(ring_bits)
    return lax.dot_general(a.astype(dt), b.astype(dt), dn, preferred_element_type=dt)


def ring_matmul(a, b, dimension_numbers=None, ring_bits: int = 64, kernel: str = "auto",
                a_bits: int | None = None, b_bits: int | None = None):
    """Exact `lax.dot_general` of ring arrays mod 2^l.

    kernel: "native" (XLA integer dot), "limb" (float64 limb GEMMs), or "auto": limb on CPU and
    GPU (fast float64 GEMMs), native elsewhere (TPUs have no float64).
    a_bits / b_bits: promise that the operand, read as signed, has |v| < 2^bits (e.g. a plaintext
    fixed-point weight); the limb kernel then uses one signed limb for it (fewer GEMMs). A false
    promise gives wrong results.
    """
    if kernel == "auto":
        kernel = "limb" if jax.default_backend() in ("cpu", "gpu", "cuda", "rocm") else "native"
    if kernel == "native":
        return ring_matmul_native(a, b, dimension_numbers, ring_bits)
    if kernel == "limb":
        return ring_matmul_limb(a, b, dimension_numbers, ring_bits, a_bits, b_bits)
    raise ValueError(f"unknown matmul kernel {kernel!r}")


def limb_gemm_count(ring_bits: int, k: int, a_bits=None, b_bits=None) -> int:
    """Number of float64 GEMM calls the limb kernel issues (pairs x chunks); for reports."""
    w, chunk, pairs = plan_limbs(ring_bits, max(k, 1), a_bits, b_bits)
    return pairs * math.ceil(k / chunk)
