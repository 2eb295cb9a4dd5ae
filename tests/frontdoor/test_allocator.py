"""The malloc tuning that `import pcformer` applies (pcformer/_allocator.py)."""
import os
import subprocess
import sys

import pytest

CODE = "import pcformer._allocator as a; print(a.status())"


def _status(code: str, **env) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_import_pcformer_first_tunes_the_allocator():
    assert _status(CODE, PCFORMER_MALLOC="1").startswith("tuned")


def test_opt_out_leaves_the_allocator_alone():
    assert _status(CODE, PCFORMER_MALLOC="0") == "off (PCFORMER_MALLOC=0)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_too_late_after_a_jax_backend_started_is_reported():
    code = "import jax; jax.numpy.zeros(2).block_until_ready(); " + CODE
    assert _status(code, PCFORMER_MALLOC="1").startswith("not applied")
