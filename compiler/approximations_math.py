"""MPC-friendly approximations of the jax.numpy math functions beyond the transformer core
(issue 16): log family, exp family, pow, trigonometric, inverse trigonometric, hyperbolic,
cbrt. Plain float JAX over the cheap primitives only (see approximations.py); `floor`/`round`
are cheap too (one truncation and one comparison, compiler/lower_cmp.py).

Each function states its formula, valid range and measured max error (re-measured by
tests/compiler/test_ops_math.py; the table is docs/approximations.md). Polynomials are Chebyshev
least-squares fits computed at first use (numpy, deterministic), evaluated in the Chebyshev
basis so intermediate values stay in [-1, 1]. Reciprocal, rsqrt and exp are the policy's
(passed in), so a policy's choice applies here too.
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from . import approximations as A
from .approximation_table import approximation

LN2 = math.log(2.0)
# log is valid on [2^-16, 2^24): the fixed-point range at l = 64, f = 16. Its octave thresholds
# must be encodable: on the 32-bit ring (f = 12, |x| < 2^18) log is NOT usable as is.
LOG_RANGE = (-16, 24)


@functools.lru_cache(maxsize=None)
def _cheb(name: str, degree: int, odd: bool) -> tuple:
    """Chebyshev coefficients of one of the fitted functions on u in [-1, 1]."""
    from numpy.polynomial import chebyshev as C
    f = _FITTED[name]
    n = 4000
    u = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    coef = C.chebfit(u, f(u), degree)
    if odd:
        coef[0::2] = 0.0
    return tuple(float(c) for c in coef)


_FITTED = {
    "log_1_2": lambda u: np.log((u + 3.0) / 2.0),            # log(c), c = (u + 3) / 2 in [1, 2]
    "sin_pi": lambda u: np.sin(np.pi * u),                    # sin(pi u), u in [-1, 1]
    "atan_01": np.arctan,                                     # atan(u), u in [-1, 1]
}


def _poly(name: str, u, degree: int, odd: bool = False):
    return A._chebyshev_eval(u, np.asarray(_cheb(name, degree, odd)))


# ---------------------------------------------------------------------------------------------
# log family


def log_poly(x, degree: int = 10, lo: int = LOG_RANGE[0], hi: int = LOG_RANGE[1]):
    """log(x) = log(c) + k ln 2 with x = c 2^k, c in [1, 2): the octave k from parallel
    comparisons [x >= 2^j] (k and 2^-k are public linear combinations of the bits), log(c) by
    a degree-10 Chebyshev polynomial. Range: x in [2^lo, 2^hi) (below: log(2^lo); x <= 0 has no
    log). Max abs error: float 8e-10; in MPC at f = 16 <= 2e-3. Source: SPU's log by normalisation
    (here with comparisons instead of a bit decomposition)."""
    bits = A._octave_bits(x, lo, hi, 2.0)
    s = A._octave_combination(bits, lo, hi, lambda k: 2.0 ** (-k))
    k = A._octave_combination(bits, lo, hi, float)
    c = x * s
    return _poly("log_1_2", 2.0 * c - 3.0, degree) + k * LN2


def log1p_poly(x, degree: int = 10):
    """log(1 + x) = log_poly(1 + x). Range: x > -1 + 2^-16; abs error as log_poly."""
    return log_poly(1.0 + x, degree)


# ---------------------------------------------------------------------------------------------
# exp family and pow


def exp2_via(x, exp: Callable):
    """2^x = exp(x ln 2) with the policy's exp. Range: the exp's (x ln 2 <= ~16)."""
    return exp(x * LN2)


def expm1_via(x, exp: Callable):
    """exp(x) - 1 with the policy's exp (absolute error as exp's; no relative accuracy
    near 0)."""
    return exp(x) - 1.0


def pow_via(x, y, exp: Callable, log: Callable = log_poly):
    """x ** y = exp(y log x) for x > 0 (the only domain of a non-integer power). Range: x in
    [2^-16, 2^24), y log x <= ~16; relative error: float 1.1e-7 (y = 1.7); in MPC about |y| * 2e-3 + exp's."""
    return exp(y * log(x))


def cbrt_via(x, exp: Callable, log: Callable = log_poly):
    """sign(x) exp(log(|x|) / 3); 0 for |x| < 1.5 2^-16 (below the
    fixed-point resolution).
    Range: |x| < 2^24; max abs error: float 2.2e-9; in MPC <= 2e-3."""
    neg = x < 0
    a = jnp.where(neg, -x, x)
    r = exp(log(a) * (1.0 / 3.0))
    r = jnp.where(a < 1.5 * 2.0 ** -16, 0.0, r)
    return jnp.where(neg, -r, r)


# ---------------------------------------------------------------------------------------------
# trigonometric


def sin_poly(x, degree: int = 13, shift: float = 0.0):
    """sin(x + shift * 2 pi): range reduction r = t - round(t), t = x / (2 pi) + shift (one
    truncation and comparison), then sin(2 pi r) = p(2 r) with an odd degree-13 Chebyshev
    polynomial of sin(pi u) on [-1, 1]. Range: |x| < 2^20 (the reduction is exact; the
    product x / (2 pi) carries the constant's 2^-20 relative error). Max abs error: float
    1.2e-9 on [-100, 100]; in MPC <= 1e-3."""
    t = x * (1.0 / (2.0 * math.pi)) + shift
    r = t - jnp.floor(t + 0.5)
    return _poly("sin_pi", 2.0 * r, degree, odd=True)


def cos_poly(x, degree: int = 13):
    """cos(x) = sin(x + pi / 2) by `sin_poly` (the quarter period added after scaling)."""
    return sin_poly(x, degree, shift=0.25)


def tan_via(x, recip: Callable, degree: int = 13):
    """sin(x) / cos(x) with the policy's reciprocal of |cos| (sign restored). Range: away
    from the poles, |cos x| >= 2^-12; error grows as 1 / cos^2."""
    c = cos_poly(x, degree)
    neg = c < 0
    r = recip(jnp.where(neg, -c, c))
    return sin_poly(x, degree) * jnp.where(neg, -r, r)


# ---------------------------------------------------------------------------------------------
# inverse trigonometric


def atan2_via(y, x, recip: Callable, degree: int = 15):
    """atan2(y, x): q = min(|x|, |y|) / max(|x|, |y|) in [0, 1] (the policy's reciprocal of
    the max), atan(q) by an odd degree-15 Chebyshev polynomial, then the octant corrections
    pi/2 - a (|y| > |x|), pi - a (x < 0), -a (y < 0): four comparisons. Range: max(|x|, |y|)
    within the reciprocal's range ([2^-12, 2^20) by default); (0, 0) gives 0. Max abs error:
    float 4.3e-8; in MPC <= 1e-3."""
    ax, ay = jnp.where(x < 0, -x, x), jnp.where(y < 0, -y, y)
    steep = ay > ax
    mn, mx = jnp.where(steep, ax, ay), jnp.where(steep, ay, ax)
    a = _poly("atan_01", mn * recip(mx), degree, odd=True)
    a = jnp.where(steep, math.pi / 2 - a, a)
    a = jnp.where(x < 0, math.pi - a, a)
    return jnp.where(y < 0, -a, a)


def atan_via(x, recip: Callable, degree: int = 15):
    """atan(x) = atan2(x, 1). Range: |x| < 2^20; max abs error as atan2_via."""
    return atan2_via(x, jnp.ones_like(x), recip, degree)


def asin_via(x, rsqrt: Callable, recip: Callable):
    """asin(x) = atan2(x, sqrt(1 - x^2)), sqrt(v) = v rsqrt(v) with the policy's rsqrt.
    Range: |x| <= 1; max abs error: float 6.4e-7; in MPC <= 5e-3 (near |x| = 1, where
    sqrt(1 - x^2) is steep)."""
    v = jnp.maximum(1.0 - x * x, 0.0)
    return atan2_via(x, v * rsqrt(v), recip)


def acos_via(x, rsqrt: Callable, recip: Callable):
    """acos(x) = pi/2 - asin(x). Range: |x| <= 1."""
    return math.pi / 2 - asin_via(x, rsqrt, recip)


# ---------------------------------------------------------------------------------------------
# hyperbolic


def sinh_via(x, exp: Callable):
    """(exp(x) - exp(-x)) / 2 with the policy's exp (both in parallel). Range: |x| <= ~16;
    absolute error as exp's (no relative accuracy near 0)."""
    return 0.5 * (exp(x) - exp(-x))


def cosh_via(x, exp: Callable):
    """(exp(x) + exp(-x)) / 2. Range: |x| <= ~16."""
    return 0.5 * (exp(x) + exp(-x))


def asinh_via(x, rsqrt: Callable):
    """sign(x) log(|x| + sqrt(x^2 + 1)). Range: |x| < 2^12; max abs error: float 1.6e-6; in MPC <= 2e-3."""
    neg = x < 0
    a = jnp.where(neg, -x, x)
    v = a * a + 1.0
    r = log_poly(a + v * rsqrt(v))
    return jnp.where(neg, -r, r)


def acosh_via(x, rsqrt: Callable):
    """log(x + sqrt(x^2 - 1)). Range: 1 <= x < 2^12; max abs error: float 7.8e-7; in MPC <= 1e-2 (near x = 1)."""
    v = jnp.maximum(x * x - 1.0, 0.0)
    return log_poly(x + v * rsqrt(v))


def atanh_via(x):
    """(log(1 + x) - log(1 - x)) / 2. Range: |x| <= 1 - 2^-16; max abs error: float 7.1e-10; in MPC <= 2e-3."""
    return 0.5 * (log_poly(1.0 + x) - log_poly(1.0 - x))


@approximation("math", "poly", params=("exp_iters", "exp_degree", "exp_cutoff", "recip_iters",
                                        "recip_range", "rsqrt_iters", "rsqrt_range"))
def _math_poly(pol):
    """This module's family, one function per primitive, over the policy's exp, reciprocal and
    rsqrt (errors: docs/approximations.md, held by tests/compiler/test_ops_math.py)."""
    exp, recip, rsqrt = pol.fn("exp"), pol.fn("reciprocal"), pol.fn("rsqrt")
    return {
        "log": log_poly, "log1p": log1p_poly, "sin": sin_poly, "cos": cos_poly, "atanh": atanh_via,
        "exp2": lambda x: exp2_via(x, exp), "expm1": lambda x: expm1_via(x, exp),
        "pow": lambda x, y: pow_via(x, y, exp), "cbrt": lambda x: cbrt_via(x, exp),
        "sinh": lambda x: sinh_via(x, exp), "cosh": lambda x: cosh_via(x, exp),
        "tan": lambda x: tan_via(x, recip), "atan": lambda x: atan_via(x, recip),
        "atan2": lambda y, x: atan2_via(y, x, recip),
        "asin": lambda x: asin_via(x, rsqrt, recip), "acos": lambda x: acos_via(x, rsqrt, recip),
        "asinh": lambda x: asinh_via(x, rsqrt), "acosh": lambda x: acosh_via(x, rsqrt),
    }
