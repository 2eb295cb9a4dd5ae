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

# Imported here, first: pytest treats the repository root as a package (it has an __init__.py,
# see there) and, for a checkout named `pcformer`, imports it as `pcformer` before the first test
# unless the real package is already in sys.modules (test modules that import pcformer only
# inside their tests would otherwise meet the root's ImportError).
import pcformer  # noqa: E402,F401
