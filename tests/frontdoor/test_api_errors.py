"""Mistakes at the API give clear errors: TypeErrors for wrong arguments, and an unsupported
operation reported at the user's source line with the primitive that is really missing."""
import jax.numpy as jnp
import pytest

import pcformer
from pcformer.compiler.lower import LoweringError

X = jnp.arange(4.0)


def test_config_as_a_dict_is_a_clear_type_error():
    with pytest.raises(TypeError, match=r"config must be a pcformer.MPCConfig, not dict .*MPCConfig\(\*\*"):
        pcformer.compile(lambda a: a * 2, X, owners=(1,), config={"ring_bits": 64})


def test_string_arguments_are_clear_type_errors():
    with pytest.raises(TypeError, match="fn must be a function, not str"):
        pcformer.compile("minilm", X, owners=(1,))
    with pytest.raises(TypeError, match="example argument 0 is a str"):
        pcformer.compile(lambda a: a * 2, "a sentence", owners=(1,))


def fft_model(a, b):
    return jnp.fft.fft(a + b).real                      # FFT_LINE


def inv_model(a, b):
    return jnp.linalg.inv((a + b).reshape(2, 2))        # INV_LINE


def _line(tag):
    src = open(__file__).read().splitlines()
    return next(i + 1 for i, l in enumerate(src) if l.rstrip().endswith(f"# {tag}"))


@pytest.mark.parametrize("fn, tag, reason", [
    (fft_model, "FFT_LINE", "complex values of a secret are not supported"),
    (inv_model, "INV_LINE", "'lu' on a secret is not supported"),
])
def test_unsupported_operation_names_the_primitive_and_the_users_line(fn, tag, reason):
    with pytest.raises(LoweringError) as e:
        pcformer.compile(fn, X, X, owners=(0, 1))       # a + b is secret: cross-party data
    msg = str(e.value)
    assert reason in msg
    assert f"test_api_errors.py:{_line(tag)}" in msg and "<unknown>" not in msg
    assert "integer" not in msg and "stop_gradient" not in msg   # the old, misleading reasons


def test_run_batch_without_the_sharded_executor_says_what_it_needs():
    prog = pcformer.compile(lambda a, b: a * b, X, X, owners=(0, 1))
    with pytest.raises(ValueError, match="run_batch needs executor='sharded'"):
        prog.run_batch(X, jnp.stack([X, X]))
