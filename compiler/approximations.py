"""MPC-friendly approximations of the transformer's heavy operators, as plain float JAX.

Every function here uses only primitives a secret-sharing backend evaluates cheaply: add, sub,
neg, mul, positive integer powers, dot products, comparisons, `where`/select, max/min,
reduce_sum/reduce_max, broadcast/reshape, and multiplication/division by Python constants. No
exp/log/erf/tanh/sqrt/rsqrt and no division by an array. Measured max errors are in
docs/approximations.md (and re-checked by tests/compiler/test_approximations.py).

Range normalisation without bit decomposition: a value x in [2^lo, 2^hi) lies in exactly one
octave [2^k, 2^(k+1)); the comparison bits c_k = [x >= 2^k] (all computed in parallel, one
comparison round) make every function of the octave index a *public linear combination* of the
bits, e.g. 2^-k = 2^-lo - sum_k c_k 2^-k. So the normalised value x * 2^-k lies in [1, 2) at the
price of the comparisons and one multiplication, for any x in the stated range.

Here: the scalar approximations (exp, reciprocal, rsqrt, logistic, tanh, erf). GeLU and softmax,
built from them, are compiler/approximations_gelu_softmax.py; the jax.numpy math family is
compiler/approximations_math.py.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from .approximation_table import approximation
from .lookup_table import table_lookup

# ---------------------------------------------------------------------------------------------
# Building blocks.


def _bit(cond):
    """A comparison as a 0/1 float (a select between public constants: cheap in MPC)."""
    return jnp.where(cond, 1.0, 0.0).astype(jnp.result_type(float))


def _octave_bits(x, lo: int, hi: int, base: float):
    """[x >= base^k] for k = lo+1 .. hi-1, as 0/1 floats on a new trailing axis.

    One comparison equation on a [..., K] array (not K equations): the same protocol work, a
    much smaller program to lower and compile.
    """
    thresholds = np.asarray([base ** k for k in range(lo + 1, hi)], np.float32)
    return _bit(x[..., None] >= thresholds)


def _octave_combination(bits, lo: int, hi: int, weight: Callable[[int], float]):
    """weight(k) for the octave k of x, a public linear combination of the comparison bits.

    Written with the octave's one-hot indicator (b_k - b_(k+1)) so exactly one term is
    non-zero: the float sum is exact (a telescoping form would cancel catastrophically).
    """
    n = hi - lo - 1
    if n <= 0:
        return jnp.full(bits.shape[:-1], weight(lo), bits.dtype)
    first, last = bits[..., 0], bits[..., n - 1]
    out = weight(lo) * (1.0 - first) + weight(hi - 1) * last
    if n >= 2:
        mid = np.asarray([weight(k) for k in range(lo + 1, hi - 1)], np.float32)
        out = out + jnp.sum((bits[..., :-1] - bits[..., 1:]) * mid, axis=-1)
    return out


def _octave_scale(x, lo: int, hi: int, base: float = 2.0):
    """s(x) = base^-k for x in [base^k, base^(k+1)), k in [lo, hi).

    Built as base^-lo + sum_{k=lo+1}^{hi-1} [x >= base^k] (base^-k - base^-(k-1)): parallel
    comparisons and a public linear combination. Below base^lo the scale is base^-lo; at or
    above base^hi it is base^-(hi-1).
    """
    bits = _octave_bits(x, lo, hi, base)
    return _octave_combination(bits, lo, hi, lambda k: base ** (-k))


def relu(x):
    """max(x, 0): one comparison and one multiplication in MPC."""
    return jnp.maximum(x, 0.0)


# ---------------------------------------------------------------------------------------------
# exp


def _powers(t, degree: int) -> dict:
    """t^1..t^degree by a product tree (depth ceil(log2 degree) multiplications)."""
    pw = {1: t}
    for k in range(2, degree + 1):
        half = 1 << (k.bit_length() - 1)
        pw[k] = pw[half] * pw[k - half] if half != k else pw[k // 2] * pw[k // 2]
    return pw


def exp_taylor(x, squarings: int = 4, degree: int = 8, cutoff: float | None = -14.0):
    """exp(x) = (exp(x / 2^s))^(2^s): degree-`degree` Taylor polynomial at t = x / 2^s, then s
    squarings; exp(x) = 0 for x < cutoff.

    Relative error ~ 2^s |t|^(d+1) / (d+1)!: with s = 4, d = 8 about 1e-5 at x = -14 and far
    less nearer 0. Range: [cutoff, ~2^s] (x <= 0 in softmax). Degree 1 is the limit method.
    Source: ours (the standard scaling-and-squaring scheme); same round count as the limit
    method with n = 8 (3 rounds of powers + 4 squarings + 1) but ~100x more accurate.
    """
    t = x * (1.0 / 2 ** squarings)
    pw = _powers(t, degree)
    y = 1.0 + t
    fact = 1.0
    for k in range(2, degree + 1):
        fact *= k
        y = y + pw[k] * (1.0 / fact)
    for _ in range(squarings):
        y = y * y
    if cutoff is not None:
        y = jnp.where(x < cutoff, 0.0, y)
    return y


def exp_limit(x, iters: int = 8, cutoff: float | None = None):
    """exp(x) ~ (1 + x / 2^n)^(2^n), n = `iters` squarings (CrypTen's and SPU's default method).

    Range: accurate for moderate |x| (abs. error <~ e^x x^2 / 2^(n+1)); for x < -2^n the base
    goes negative and the result is garbage, hence `cutoff`: exp(x) = 0 for x < cutoff (PUMA uses
    -14). Source: CrypTen `exp` (n = 8), SPU `fxp_exp_iters`.
    """
    y = 1.0 + x * (1.0 / 2 ** iters)
    for _ in range(iters):
        y = y * y
    if cutoff is not None:
        y = jnp.where(x < cutoff, 0.0, y)
    return y


@approximation("exp", "limit", params=("exp_iters", "exp_cutoff"), valid=(-20.0, 0.0),
               error=("abs", 1.2e-3), reference=np.exp, measured_with={"exp_iters": 8})
def _exp_limit(pol):
    """(1 + x/2^n)^(2^n), 0 below the cut-off (CrypTen's exp)."""
    return lambda x: exp_limit(x, pol.exp_iters, pol.exp_cutoff)


@approximation("exp", "taylor", params=("exp_iters", "exp_degree", "exp_cutoff"),
               valid=(-20.0, 0.0), error=("abs", 2e-6), reference=np.exp)
def _exp_taylor(pol):
    """Taylor polynomial at x/2^s, then s squarings; 0 below the cut-off."""
    return lambda x: exp_taylor(x, pol.exp_iters, pol.exp_degree, pol.exp_cutoff)


# ---------------------------------------------------------------------------------------------
# Reciprocal


def reciprocal_goldschmidt(x, iters: int = 3, lo: int = -12, hi: int = 20):
    """1/x for x > 0 in [2^lo, 2^hi): octave normalisation, linear guess, Goldschmidt steps.

    c = x 2^-k in [1, 2); r0 = 1.4571 - 0.5 c (SPU's 2.9142 - 2c rescaled to [1, 2); relative
    error <= 0.086); then r <- r (1 + e), e <- e^2 with e0 = 1 - c r0 (both products in one
    round); 3 iterations give ~1e-8 relative error. Result r 2^-k. Range-independent within
    [2^lo, 2^hi) (lo/hi cost one comparison each). Source: SPU `reciprocal` (Goldschmidt with
    highest-bit normalisation), here with comparisons instead of a bit decomposition.
    """
    s = _octave_scale(x, lo, hi)
    c = x * s
    r = 1.4571 - 0.5 * c
    e = 1.0 - c * r
    for _ in range(iters):
        r = r * (1.0 + e)
        e = e * e
    return r * s


def _recip_table(bits: int) -> np.ndarray:
    """A step's midpoints: 1/c for c in [1, 2) at 2^-bits steps, read with the index's low bits."""
    return 1.0 / (1.0 + (np.arange(1 << bits) + 0.5) / float(1 << bits))


def reciprocal_lut(x, iters: int = 1, lo: int = -12, hi: int = 20, table_bits: int = 8):
    """1/x for x > 0 in [2^lo, 2^hi): octave normalisation, a `table_bits`-bit table, Goldschmidt
    steps.

    c = x 2^-k in [1, 2); r0 = table[floor(c 2^b) mod 2^b] = 1/(1 + (i + 1/2) / 2^b) (relative
    error <= 2^-(b+1)); then Goldschmidt r <- r (1 + e), e <- e^2 from e0 = 1 - c r0: with 8
    bits one step gives ~4e-6 relative error (12 bits: ~1e-8), two ~1e-11. Result r 2^-k. The
    table replaces the linear guess and two of reciprocal_goldschmidt's three steps. Source:
    SIGMA (PoPETs 2024) seeds its inverses with lookup tables; Goldschmidt as SPU's
    `reciprocal`. Lookups need protocols="fss".
    """
    s = _octave_scale(x, lo, hi)
    c = x * s
    r = table_lookup(c, _recip_table(table_bits), table_bits, nonneg=True, wrap=True)
    e = 1.0 - c * r
    rs = r * s                 # scaled back now, in the round of c r: one round fewer
    for _ in range(iters):
        rs = rs * (1.0 + e)
        e = e * e
    return rs


def reciprocal_newton(x, iters: int = 10, exp_iters: int = 8):
    """1/x by Newton y <- y (2 - x y) from CrypTen's guess y0 = 3 exp(1 - 2x) + 0.003.

    Range: about [1, 100] (the guess decays too fast beyond; CrypTen issue #224 reports failures
    outside about [-500, 500]). Source: CrypTen `reciprocal` (10 iterations).
    """
    y = 3.0 * exp_limit(1.0 - 2.0 * x, exp_iters) + 0.003
    for _ in range(iters):
        y = y * (2.0 - x * y)
    return y


@approximation("reciprocal", "goldschmidt", params=("recip_iters", "recip_range"),
               valid=(2.0 ** -12, 2.0 ** 20 * 0.999), error=("rel", 1e-6),
               reference=np.reciprocal)
def _goldschmidt(pol):
    """Octave-normalised Goldschmidt iterations (SPU's reciprocal, comparisons for the octave)."""
    lo, hi = pol.recip_range
    return lambda x: reciprocal_goldschmidt(x, pol.recip_iters, lo, hi)


@approximation("reciprocal", "lut", params=("recip_iters", "recip_range", "seed_bits"),
               valid=(2.0 ** -12, 2.0 ** 17 * 0.999), error=("rel", 1e-5),
               reference=np.reciprocal,
               measured_with={"recip_iters": 1, "recip_range": (-12, 17)})
def _reciprocal_lut(pol):
    """Octave-normalised `seed_bits` table and Goldschmidt steps (SIGMA-style; needs fss)."""
    lo, hi = pol.recip_range
    return lambda x: reciprocal_lut(x, pol.recip_iters, lo, hi, pol.seed_bits)


@approximation("reciprocal", "newton", params=("recip_iters",), valid=(1.0, 200.0),
               error=("rel", 1e-6), reference=np.reciprocal, measured_with={"recip_iters": 10})
def _reciprocal_newton(pol):
    """Newton from CrypTen's exp-based guess (CrypTen's reciprocal; about [1, 200] only)."""
    return lambda x: reciprocal_newton(x, pol.recip_iters)


# ---------------------------------------------------------------------------------------------
# Inverse square root


def rsqrt_newton(x, iters: int = 3, lo: int = -8, hi: int = 10):
    """1/sqrt(x) for x > 0 in [4^lo, 4^hi): base-4 octave normalisation, linear guess, Newton.

    c = x 4^-k in [1, 4); y0 = 1.1412 - 0.1535 c... (least-squares line, relative error <= 0.12);
    Newton y <- y (3 - c y^2) / 2 (3 iterations: ~1e-7 relative); result y 2^-k. One set of
    parallel comparisons gives both 4^-k and 2^-k as public linear combinations. LayerNorm
    variances range widely, hence the normalisation. Source: Newton iteration as in CrypTen
    `inv_sqrt`; normalisation idea from SPU `rsqrt`.
    """
    bits = _octave_bits(x, lo, hi, 4.0)
    s4 = _octave_combination(bits, lo, hi, lambda k: 4.0 ** (-k))
    s2 = _octave_combination(bits, lo, hi, lambda k: 2.0 ** (-k))
    c = x * s4
    y = _RSQRT_A + _RSQRT_B * c
    for _ in range(iters):
        y = y * (3.0 - c * y * y) * 0.5
    return y * s2


def _rsqrt_table(bits: int) -> np.ndarray:
    """1/sqrt(c) at the midpoints of 2^-(bits-2) steps of c in [0, 4): the octave puts c in
    [1, 4)."""
    return 1.0 / np.sqrt((np.arange(1 << bits) + 0.5) / float(1 << (bits - 2)))


def rsqrt_lut(x, iters: int = 1, lo: int = -8, hi: int = 10, table_bits: int = 8):
    """1/sqrt(x) for x > 0 in [4^lo, 4^hi): base-4 octave normalisation, a `table_bits`-bit
    table, Newton.

    c = x 4^-k in [1, 4); y0 = table[floor(c 2^(b-2)) mod 2^b] = 1/sqrt((i + 1/2) / 2^(b-2))
    (8 bits: relative error <= 0.4%); Newton y <- y (3 - c y^2) / 2: one step ~2.3e-5 relative
    with 8 bits (12 bits: ~1e-7), two ~1e-9. Result y 2^-k. The table replaces rsqrt_newton's linear guess and two of its three steps (LayerNorm:
    11 rounds instead of 30 under protocols="fss", measured on BERT-base). Source: SIGMA (PoPETs 2024) seeds rsqrt with
    a lookup table. Lookups need protocols="fss".
    """
    bits = _octave_bits(x, lo, hi, 4.0)
    half_c = x * _octave_combination(bits, lo, hi, lambda k: 0.5 * 4.0 ** (-k))   # c / 2
    s2 = _octave_combination(bits, lo, hi, lambda k: 2.0 ** (-k))
    y = table_lookup(half_c, _rsqrt_table(table_bits), table_bits - 1, nonneg=True,
                     wrap=True)                                   # index floor(c 2^(b-2))
    ys = y * s2                # scaled back now, in the round of the step's first products
    for _ in range(iters):     # y (3 - c y^2) / 2 = y (1.5 - c/2 (y y))
        t = half_c * (y * y)
        ys = ys * (1.5 - t)
        y = y * (1.5 - t)      # unused after the last step (dead code to the lowering)
    return ys


def rsqrt_crypten(x, iters: int = 3, exp_iters: int = 8):
    """1/sqrt(x) by Newton from CrypTen's guess y0 = 2.2 exp(-(x/2 + 0.2)) + 0.2 - x/1024.

    Range: about [0.1, 200]; diverges for large x. Source: CrypTen `inv_sqrt` (3 iterations).
    """
    y = 2.2 * exp_limit(-(x * 0.5 + 0.2), exp_iters) + 0.2 - x * (1.0 / 1024)
    for _ in range(iters):
        y = y * (3.0 - x * y * y) * 0.5
    return y


def _fit_rsqrt_line() -> tuple[float, float]:
    """Least-squares line through 1/sqrt(c) on [1, 4] in relative error (fitted at import)."""
    c = np.linspace(1.0, 4.0, 1001)
    w = np.sqrt(c)  # relative error weighting: minimise (a + b c) sqrt(c) - 1
    A = np.stack([w, c * w], axis=1)
    a, b = np.linalg.lstsq(A, np.ones_like(c), rcond=None)[0]
    return float(a), float(b)


_RSQRT_A, _RSQRT_B = _fit_rsqrt_line()

def _rsqrt_ref(x):
    return 1.0 / np.sqrt(x)


@approximation("rsqrt", "newton", params=("rsqrt_iters", "rsqrt_range"),
               valid=(4.0 ** -8, 4.0 ** 10 * 0.999), error=("rel", 5e-6), reference=_rsqrt_ref)
def _rsqrt_newton(pol):
    """Base-4 octave normalisation, fitted linear guess, Newton steps."""
    lo, hi = pol.rsqrt_range
    return lambda x: rsqrt_newton(x, pol.rsqrt_iters, lo, hi)


@approximation("rsqrt", "lut", params=("rsqrt_iters", "rsqrt_range", "seed_bits"),
               valid=(4.0 ** -8, 4.0 ** 8 * 0.999), error=("rel", 4e-5), reference=_rsqrt_ref,
               measured_with={"rsqrt_iters": 1, "rsqrt_range": (-8, 8)})
def _rsqrt_lut(pol):
    """Base-4 octave normalisation, `seed_bits` table, Newton steps (SIGMA-style; needs fss)."""
    lo, hi = pol.rsqrt_range
    return lambda x: rsqrt_lut(x, pol.rsqrt_iters, lo, hi, pol.seed_bits)


@approximation("rsqrt", "crypten", params=("rsqrt_iters",), valid=(0.1, 100.0),
               error=("rel", 1e-2), reference=_rsqrt_ref)
def _rsqrt_crypten(pol):
    """Newton from CrypTen's exp-based guess (CrypTen's inv_sqrt; about [0.1, 100] only)."""
    return lambda x: rsqrt_crypten(x, pol.rsqrt_iters)


# ---------------------------------------------------------------------------------------------
# logistic, tanh, erf


def logistic_exp(x, exp: Callable | None = None, recip_iters: int = 3):
    """sigmoid(x) = 1 / (1 + exp(-|x|)) for x >= 0, 1 - that for x < 0.

    exp(-|x|) lies in (0, 1] (limit method, cut off at -14 where it is < 1e-6), so 1 + exp(-|x|)
    lies in [1, 2] and its reciprocal needs no normalisation: Goldschmidt from 1.4571 - 0.5 c.
    `exp` defaults to `exp_taylor` (cut-off -14). Range: all reals. Source: CrypTen `sigmoid`
    (through exp and reciprocal); the symmetry trick is ours.
    """
    exp = exp or exp_taylor
    pos = x >= 0
    a = jnp.where(pos, x, -x)
    d = 1.0 + exp(-a)
    r = 1.4571 - 0.5 * d
    e = 1.0 - d * r
    for _ in range(recip_iters):
        r = r * (1.0 + e)
        e = e * e
    return jnp.where(pos, r, 1.0 - r)


def tanh_logistic(x, exp: Callable | None = None, recip_iters: int = 3):
    """tanh(x) = 2 sigmoid(2x) - 1 with `logistic_exp`. Range: all reals."""
    return 2.0 * logistic_exp(2.0 * x, exp, recip_iters) - 1.0


@approximation("logistic", "exp", params=("recip_iters",), valid=(-30.0, 30.0),
               error=("abs", 2e-6), reference=lambda x: 1.0 / (1.0 + np.exp(-x)))
def _logistic_exp(pol):
    """1 / (1 + exp(-|x|)) with the policy's exp, mirrored for x < 0."""
    return lambda x: logistic_exp(x, pol.fn("exp"), pol.recip_iters)


@approximation("tanh", "logistic", params=("recip_iters",), valid=(-30.0, 30.0),
               error=("abs", 4e-6), reference=np.tanh)
def _tanh_logistic(pol):
    """2 sigmoid(2x) - 1 with the policy's exp."""
    return lambda x: tanh_logistic(x, pol.fn("exp"), pol.recip_iters)


def _chebyshev_odd_fit(f: Callable, bound: float, degree: int) -> np.ndarray:
    """Odd Chebyshev coefficients of f(bound u), u in [-1, 1], least squares at 4000 nodes."""
    from numpy.polynomial import chebyshev as C
    n = 4000
    u = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    coef = C.chebfit(u, f(bound * u), degree)
    coef[0::2] = 0.0
    return coef


def _chebyshev_eval(u, coef: np.ndarray):
    """sum_k coef_k T_k(u) with T_(m+n) = 2 T_m T_n - T_(|m-n|): depth ~log2(degree) products."""
    T: dict[int, object] = {0: None, 1: u}
    for k in range(2, len(coef)):
        m = 1 << (k.bit_length() - 1)
        if m == k:
            T[k] = 2.0 * T[k // 2] * T[k // 2] - 1.0
        else:
            n = k - m
            low = T[m - n] if m - n > 0 else 1.0
            T[k] = 2.0 * T[m] * T[n] - low
    out = 0.0
    for k, ck in enumerate(coef):
        if ck != 0.0 and k > 0:
            out = out + float(ck) * T[k]
    if coef[0] != 0.0:
        out = out + float(coef[0])
    return out


def _erf_np(x):
    return np.vectorize(math.erf)(x)


ERF_BOUND = 3.5


@functools.lru_cache(maxsize=None)
def _erf_coef(degree: int) -> tuple:
    return tuple(_chebyshev_odd_fit(_erf_np, ERF_BOUND, degree))


def erf_poly(x, degree: int = 17):
    """erf(x): odd Chebyshev least-squares polynomial of `degree` on [-3.5, 3.5], +-1 outside.

    The fit is computed at import/first use (numpy, deterministic); evaluated in the Chebyshev
    basis (values stay in [-1, 1], kind to fixed point). Range: all reals (clamped; erf(3.5) =
    1 - 7e-7). Source: ours (SPU uses an Abramowitz-Stegun form with a reciprocal instead).
    """
    u = jnp.clip(x * (1.0 / ERF_BOUND), -1.0, 1.0)
    return _chebyshev_eval(u, np.asarray(_erf_coef(degree)))


@approximation("erf", "poly", params=("erf_degree",), valid=(-10.0, 10.0), error=("abs", 2e-5),
               reference=_erf_np)
def _erf_poly(pol):
    """Odd Chebyshev polynomial on [-3.5, 3.5], +-1 outside."""
    return lambda x: erf_poly(x, pol.erf_degree)


def erfc_poly(x, degree: int = 17):
    """erfc(x) = 1 - erf(x) with `erf_poly`."""
    return 1.0 - erf_poly(x, degree)
