"""MPC-friendly replacements of the transformer's two composite nonlinearities, GeLU and softmax,
as plain float JAX over the scalar approximations of compiler/approximations.py (same rules:
cheap primitives only; measured errors in docs/approximations.md).

Each is an entry of the approximation table (compiler/approximation_table.py) under the operator
class `gelu` or `softmax`: the names a Policy's `gelu` and `softmax` fields choose from. A bound
GeLU takes (x, form): the matched GeLU's form, "erf" or "tanh" (only `exact` keeps it); a bound
softmax takes (x, where, axis).
"""
from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp
import numpy as np

from .approximation_table import approximation
from .approximations import (erf_poly, exp_limit, exp_taylor, logistic_exp, reciprocal_goldschmidt,
                             relu)
from .lookup_table import table_lookup

# ---------------------------------------------------------------------------------------------
# GeLU

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_SQRT2_PI = math.sqrt(2.0 / math.pi)


def gelu_quad(x):
    """MPCFormer's Quad: 0.125 x^2 + 0.25 x + 0.5. Not close to GeLU: needs distillation.

    Range: all reals (as a replacement, not an approximation). Source: MPCFormer (ICLR 2023).
    """
    return 0.125 * x * x + 0.25 * x + 0.5


def gelu_relu(x):
    """ReLU as GeLU's replacement (seed paper's reading; MPCFormer's ablation)."""
    return relu(x)


PUMA_F0 = (-0.5054031199708174, -0.42226581151983866, -0.11807612951181953,
           -0.011034134030615728)
PUMA_F1 = (0.008526321541038084, 0.5, 0.3603292692789629, 0.0, -0.037688200365904236, 0.0,
           0.0018067462606141187)


def gelu_puma(x):
    """PUMA's piecewise GeLU: 0 (x < -4), F0 cubic on [-4, -1.95), F1 degree 6 on [-1.95, 3],
    x (x > 3). Coefficients (low to high degree) as in SecretFlow SPU's PUMA example `hack_gelu`
    (PUMA, arXiv 2307.12533). Three comparisons, powers x^2, x^3, x^4 = (x^2)^2, x^6 = (x^3)^2.
    """
    b0 = x < -4.0
    b1 = x < -1.95
    b2 = x > 3.0
    x2 = x * x
    x3 = x * x2
    x4 = x2 * x2
    x6 = x3 * x3
    f0 = PUMA_F0[0] + PUMA_F0[1] * x + PUMA_F0[2] * x2 + PUMA_F0[3] * x3
    f1 = PUMA_F1[0] + PUMA_F1[1] * x + PUMA_F1[2] * x2 + PUMA_F1[4] * x4 + PUMA_F1[6] * x6
    return jnp.where(b2, x, jnp.where(b1, jnp.where(b0, 0.0, f0), f1))


def gelu_erf(x, erf_degree: int = 17):
    """0.5 x (1 + erf(x / sqrt 2)) with `erf_poly` (high-accuracy; the `exact` policy)."""
    return 0.5 * x * (1.0 + erf_poly(x * _SQRT1_2, erf_degree))


def gelu_tanh(x, exp: Callable | None = None, recip_iters: int = 3):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) with `tanh_logistic` (GPT-2's gelu_new).

    Since 1 + tanh(z) = 2 sigmoid(2z), this is x sigmoid(2z): one sigmoid, no extra steps.
    """
    z = _SQRT2_PI * (x + 0.044715 * x * x * x)
    return x * logistic_exp(2.0 * z, exp, recip_iters)


def _relu_minus_gelu(a, form: str = "erf"):
    """delta(a) = relu(a) - gelu(a) for a >= 0, in float64 (numpy): a * Phi(-a) for the erf form,
    a * (1 - sigmoid(2 sqrt(2/pi) (a + 0.044715 a^3))) for the tanh form."""
    a = np.asarray(a, dtype=np.float64)
    if form == "tanh":
        return a / (1.0 + np.exp(2.0 * _SQRT2_PI * (a + 0.044715 * a ** 3)))
    return a * 0.5 * np.vectorize(math.erfc)(a * _SQRT1_2)


def gelu_sigma(x, form: str = "erf", bits: int = 8, frac: int = 6):
    """SIGMA's GeLU: relu(x) - delta(|x|), delta = relu - gelu (even, at most 0.17, below 1.3e-4
    for |x| >= 4) read from a 2^bits-entry table on [0, 2^bits / 2^frac) at the midpoints of
    steps of 2^-frac; |x| = 2 relu(x) - x reuses the ReLU. Defaults: 8 bits, 6 fractional bits,
    |x| clipped to [0, 4): max abs error 4.0e-3 (the step), at no polynomial at all.

    Range: all reals. Cost under protocols="fss": one relu, one exact truncation, one relu
    (the clip), one 8-bit lookup: 4 rounds. Source: Gupta et al., SIGMA (PoPETs 2024), sec. 5.
    """
    r = relu(x)
    a = 2.0 * r - x
    mids = (np.arange(1 << bits, dtype=np.float64) + 0.5) / float(2 ** frac)
    return r - table_lookup(a, _relu_minus_gelu(mids, form), frac, nonneg=True)


SPLINE_BITS, SPLINE_FRAC = 9, 6        # |x| on [0, 8) in steps of 1/64


def _spline_columns(form: str, bits: int = SPLINE_BITS, frac: int = SPLINE_FRAC) -> np.ndarray:
    """[2^bits, 2] (value, slope): on step i, [i, i + 1) / 2^frac, the line A + B a of least
    maximum error to delta = relu - gelu (the chord, shifted by half its extreme residuals); the
    last row, which every |x| past the table also reads, is 0 (delta < 1e-13 beyond 8)."""
    h = 2.0 ** -frac
    left = np.arange(1 << bits, dtype=np.float64) * h
    t = left[:, None] + h * np.linspace(0.0, 1.0, 65)[None, :]           # [2^bits, 65] samples
    d = _relu_minus_gelu(t, form)
    slope = (d[:, -1] - d[:, 0]) / h
    resid = d - (d[:, :1] + slope[:, None] * (t - left[:, None]))
    value = d[:, 0] - slope * left + 0.5 * (resid.max(axis=1) + resid.min(axis=1))
    value[-1], slope[-1] = 0.0, 0.0
    return np.stack([value, slope], axis=1)


def gelu_spline(x, form: str = "erf"):
    """GeLU to the fixed-point resolution from ONE lookup: relu(x) - delta(|x|), with delta (even,
    at most 0.17) read as a line per step of 1/64 on [0, 8): delta(a) ~ A[i] + B[i] a,
    i = min(floor(a 64), 511); both columns come from the one 9-bit lookup (one DPF), then one
    product B[i] a. |x| = 2 relu(x) - x reuses the ReLU (and its truncated input). Max abs error
    1.2e-5 (both forms; below the 2^-16 of 16-bit fixed point), against 4e-3 for SIGMA's step
    table and 3.8e-5 for degree-21 erf.

    Range: all reals. Cost under protocols="fss": one relu, one exact truncation and one relu
    (the index and its clip), one 9-bit lookup of two columns, one product and its truncation:
    SIGMA's GeLU plus one product. Source: ours (SIGMA's relu - delta decomposition, sec. 5,
    read as a spline).
    """
    r = relu(x)
    a = 2.0 * r - x
    ab = table_lookup(a, _spline_columns(form), SPLINE_FRAC, nonneg=True)
    return r - (ab[..., 0] + ab[..., 1] * a)


# ---------------------------------------------------------------------------------------------
# Softmax (over `axis`, with an optional boolean mask `where`: masked entries are exactly 0 and
# do not enter the sum). `recip` is the reciprocal used for the one division per row.


def _masked(y, where):
    return y if where is None else jnp.where(where, y, 0.0)


def _normalise(num, axis: int, recip: Callable, eps: float):
    den = jnp.sum(num, axis=axis, keepdims=True) + eps
    return num * recip(den)


def softmax_2quad(x, where=None, axis: int = -1, c: float = 5.0, eps: float = 1e-3,
                  recip: Callable = reciprocal_goldschmidt):
    """MPCFormer's 2Quad: (x + c)^2 / sum (x + c)^2, c = 5; masked entries 0 before the sum.

    Range: all reals (a replacement; needs distillation). Source: MPCFormer (ICLR 2023).
    """
    q = x + c
    return _normalise(_masked(q * q, where), axis, recip, eps)


def softmax_relu(x, where=None, axis: int = -1, eps: float = 1e-3,
                 recip: Callable = reciprocal_goldschmidt):
    """ReLU softmax: relu(x) / (sum relu(x) + eps) ("ReLU attention" papers)."""
    return _normalise(_masked(relu(x), where), axis, recip, eps)


def _masked_max(x, where, axis: int):
    if where is not None:
        x = jnp.where(where, x, -1e4)  # a public large negative: below any real logit
    return jnp.max(x, axis=axis, keepdims=True)


def softmax_puma(x, where=None, axis: int = -1, exp_iters: int = 8, cutoff: float = -14.0,
                 eps: float = 0.0, recip: Callable = reciprocal_goldschmidt):
    """PUMA: z = x - max(x); exp(z) by the limit method, 0 for z < -14; divide by the row sum.

    Range: all reals (z <= 0). Source: PUMA (arXiv 2307.12533) Sec. 4; SPU's exp iterations.
    """
    z = x - _masked_max(x, where, axis)
    return _normalise(_masked(exp_limit(z, exp_iters, cutoff), where), axis, recip, eps)


def exp_nonpositive_lut(z):
    """exp(z) for z <= 0 from two 8-bit tables (SIGMA's nExp): with u = -z + 2^-13, the
    index k = floor(u 2^12) = round(-z 2^12) splits into digits hi = k >> 8 (clipped to 255) and
    lo = k mod 2^8, and exp(z) ~ exp(-hi/16) * exp(-lo/4096). Max relative error 1.3e-4 on
    [-15.9, 0]; below, at most exp(-15.9) = 1.2e-7 absolute (0 in 16-bit fixed point).

    Range: z <= 2^-13 (a max-subtracted score; the offset absorbs one fixed-point LSB above 0).
    Cost under protocols="fss": two exact truncations (one round), one relu (the clip), two
    8-bit lookups, one product: 5 rounds. Source: Gupta et al., SIGMA (PoPETs 2024), sec. 5.
    """
    u = 2.0 ** -13 - z
    hi = table_lookup(u, np.exp(-np.arange(256) / 16.0), 4, nonneg=True)
    lo = table_lookup(u, np.exp(-np.arange(256) / 4096.0), 12, nonneg=True, wrap=True)
    return hi * lo


def softmax_exact(x, where=None, axis: int = -1, exp: Callable | None = None,
                  eps: float = 0.0, recip: Callable = reciprocal_goldschmidt):
    """High-accuracy softmax: z = x - max(x), `exp` (default `exp_taylor`, 0 below -14), one
    normalised reciprocal per row. The row sum is >= 1 (the max entry contributes exp(0) = 1),
    so any reciprocal range starting at 1 suffices.
    """
    exp = exp or exp_taylor
    z = x - _masked_max(x, where, axis)
    return _normalise(_masked(exp(z), where), axis, recip, eps)


def _gelu_ref(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x * _SQRT1_2))


@approximation("gelu", "quad")
def _quad(pol):
    """MPCFormer's Quad 0.125 x^2 + 0.25 x + 0.5 (a replacement: needs distillation)."""
    return lambda x, form="erf": gelu_quad(x)


@approximation("gelu", "relu")
def _relu(pol):
    """max(x, 0) (a replacement: needs distillation)."""
    return lambda x, form="erf": gelu_relu(x)


@approximation("gelu", "puma", valid=(-20.0, 20.0), error=("abs", 2.5e-2), reference=_gelu_ref)
def _puma(pol):
    """PUMA's piecewise polynomial GeLU."""
    return lambda x, form="erf": gelu_puma(x)


@approximation("gelu", "sigma", valid=(-20.0, 20.0), error=("abs", 4.0e-3), reference=_gelu_ref)
def _gelu_sigma(pol):
    """SIGMA's relu(x) - lookup(|x|) on an 8-bit table (the matched form's table; lookups need
    protocols="fss")."""
    return lambda x, form="erf": gelu_sigma(x, form)


@approximation("gelu", "spline", valid=(-20.0, 20.0), error=("abs", 1.5e-5), reference=_gelu_ref)
def _gelu_spline(pol):
    """relu(x) minus a line per step of 1/64 of |x| on [0, 8) from one two-column 9-bit lookup
    (the matched form's table; lookups need protocols="fss"): `exact`'s GeLU under fss."""
    return lambda x, form="erf": gelu_spline(x, form)


@approximation("gelu", "exact", params=("erf_degree", "recip_iters"), valid=(-20.0, 20.0),
               error=("abs", 1e-4), reference=_gelu_ref)
def _gelu_exact(pol):
    """The matched form kept: 0.5x(1 + erf(x/sqrt2)) with polynomial erf, or the tanh form with
    the policy's exp (the claim: the erf form)."""
    def gelu(x, form="erf"):
        if form == "tanh":
            return gelu_tanh(x, pol.fn("exp"), pol.recip_iters)
        return gelu_erf(x, pol.erf_degree)
    return gelu


@approximation("softmax", "2quad", params=("quad_c", "softmax_eps"))
def _softmax_2quad(pol):
    """MPCFormer's 2Quad (x + c)^2 / row sum (a replacement: needs distillation)."""
    recip = pol.fn("reciprocal")
    return lambda x, where, axis: softmax_2quad(x, where, axis, pol.quad_c, pol.softmax_eps, recip)


@approximation("softmax", "relu", params=("softmax_eps",))
def _softmax_relu(pol):
    """relu(x) / row sum (a replacement: needs distillation)."""
    recip = pol.fn("reciprocal")
    return lambda x, where, axis: softmax_relu(x, where, axis, pol.softmax_eps, recip)


@approximation("softmax", "puma", params=("exp_iters", "exp_cutoff"), error=("abs", 4.9e-3))
def _softmax_puma(pol):
    """PUMA's max-subtracted limit-exp softmax with a cut-off (error: docs/approximations.md)."""
    recip = pol.fn("reciprocal")
    return lambda x, where, axis: softmax_puma(x, where, axis, pol.exp_iters, pol.exp_cutoff,
                                               0.0, recip)


@approximation("softmax", "sigma", params=("recip_iters", "recip_range"))
def _softmax_sigma(pol):
    """Max-subtracted softmax with SIGMA's two-table exp (lookups need protocols="fss") and the
    policy's reciprocal."""
    recip = pol.fn("reciprocal")
    return lambda x, where, axis: softmax_exact(x, where, axis, exp_nonpositive_lut, 0.0, recip)


@approximation("softmax", "exact", error=("abs", 4.6e-6))
def _softmax_exact(pol):
    """Max-subtracted softmax with the policy's exp and reciprocal (error: docs/approximations.md)."""
    exp, recip = pol.fn("exp"), pol.fn("reciprocal")
    return lambda x, where, axis: softmax_exact(x, where, axis, exp, 0.0, recip)
