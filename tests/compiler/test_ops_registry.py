"""The supported-primitive list in docs/compiler.md is generated from the registries, and every
primitive it lists as lowered, approximated or refused is what the compiler does."""
import jax.numpy as jnp
import numpy as np
import pytest

import pcformer
from pcformer.compiler import lower, rewrite, supported
from pcformer.compiler.lower import LoweringError


def test_doc_section_matches_the_registries():
    text = supported.doc_path().read_text()
    assert supported.current_section(text) == supported.markdown(), \
        "docs/compiler.md is stale: run python -m pcformer.compiler.supported"


def test_lists_are_disjoint_and_cover_the_registries():
    low, approx = set(supported.lowered()), set(supported.approximated())
    refused = set(supported.REFUSED)
    assert not low & refused and not approx & refused
    assert low | refused >= set(lower.LOWER_RULES) - lower.HEAVY
    assert approx >= {"log", "sin", "cos", "atan2", "pow", "exp", "tanh", "logistic"}
    assert set(rewrite.RULES) >= approx


@pytest.mark.parametrize("fn,match", [
    (lambda x: jnp.nextafter(x, 1.0), "'nextafter' on a secret is not supported: .+"),
    (lambda x: jax_bitcast(x), "'bitcast_convert_type' on a secret is not supported: .+"),
    (lambda x: jnp.fft.fft(x).real, "complex values of a secret are not supported.+"
                                    "primitive 'convert_element_type'"),
])
def test_refusals_name_the_primitive_and_the_reason(fn, match):
    x = np.linspace(-1, 1, 4).astype(np.float32)
    z = np.zeros((), np.float32)
    with pytest.raises(LoweringError, match=match):
        pcformer.compile(lambda a, b: fn(a + b), x, z, owners=(1, 0), policy="exact")


def jax_bitcast(x):
    import jax
    return jax.lax.bitcast_convert_type(x, jnp.int32)
