"""The older name of pcformer/distill/evaluation.py (held-out fidelity of a distilled encoder),
kept so that `from pcformer import distill_eval` works unchanged: it IS that module."""
import sys

from pcformer.distill import evaluation

sys.modules[__name__] = evaluation
