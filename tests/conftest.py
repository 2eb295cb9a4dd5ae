"""Test-wide settings applied before any test module imports pcformer."""
import os

# The persistent compile cache is off in the test process and the subprocesses it starts: tests
# never read or fill the user's own cache (pcformer/compile_cache.py reads this variable at
# import), and a long pytest process that wrote hundreds of entries once crashed inside JAX's
# cache write (jax 0.10, CPU: a segfault in compilation_cache.put_executable_and_time). The
# tests of the cache itself give their subprocesses a throw-away folder of their own.
os.environ.setdefault("PCFORMER_COMPILE_CACHE", "0")

# Imported here, first: pytest treats the repository root as a package (it has an __init__.py,
# see there) and, for a checkout named `pcformer`, imports it as `pcformer` before the first test
# unless the real package is already in sys.modules (test modules that import pcformer only
# inside their tests would otherwise meet the root's ImportError).
import pcformer  # noqa: E402,F401


import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """After each test module, drop the compiled programs it left in the process. Why: each XLA
    CPU executable holds memory mappings, and one process may hold at most vm.max_map_count
    (65530) of them; the whole suite in one process went past it and XLA segfaulted in a
    compile (see compiler/opcache.py, _TemplateCache)."""
    yield
    import jax
    from pcformer.compiler import opcache
    opcache.clear_templates()
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="module")
def tiny_bert():
    """A one-layer BERT with random weights: (fn, params, ids, mask), fn(params, ids, mask) its
    mean-pooled sentence embedding. Shared by the cost-from-shapes and FSS-family tests."""
    import numpy as np
    from pcformer.models import bert, tiny
    cfg = bert.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=16, add_pooling_layer=False)
    module = bert.BertModel(cfg)
    params = tiny.random_params(module, seed=1)
    ids = np.array([[5, 9, 3, 7, 0, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1, 0, 0]], np.int32)

    def fn(p, i, m):
        return bert.sentence_embedding(module.apply({"params": p}, i, m), m)
    return fn, params, ids, mask
