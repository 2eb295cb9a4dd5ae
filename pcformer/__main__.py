"""`python -m pcformer ...`: the same command line as the `pcformer` console script."""
from .cli import run_main

run_main()
