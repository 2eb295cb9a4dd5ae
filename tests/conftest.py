"""Test-wide settings applied before any test module imports pcformer."""
import atexit
import os
import shutil
import tempfile

# The persistent compile cache goes to a throw-away folder: tests never read or fill the user's
# own cache (pcformer/compile_cache.py reads this variable at import).
if "PCFORMER_COMPILE_CACHE" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="pcformer-test-jax-cache-")
    os.environ["PCFORMER_COMPILE_CACHE"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
