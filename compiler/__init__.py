"""pcformer.compiler: JAX/Flax functions to two-party protocol programs, with a static cost.

The pipeline, one module a stage: trace.py (jaxpr, sub-jaxprs inlined, Flax module paths kept) ->
rewrite.py (heavy operators replaced by the friendly approximations a policy names; still plain
float JAX) -> lower.py (the protocol IR of ir.py: visibility, fixed point, truncation) ->
cost.py (static cost from the runtime registry's formulas) | execute.py / opcache.py /
sharded.py (the run, whose ledger must equal the static cost). Imports only pcformer.runtime.
See docs/architecture.md and docs/compiler.md.
"""
