"""The search: an Optuna study over the shared trainer, every trial an MLflow run.

`run` opens the study and its parent run and sums it up once (the multi-worker protocol),
`objective` is one trial, `spaces` reads the space files, `studies` makes Optuna's storage,
sampler and pruner, `confirm` is the final stage (confirmation and refit), `summary` what the
parent run shows. `options` declares the command's options (each field is its flag), and
`python -m harness.search` is `command`.
"""

from harness.search.options import SearchOptions
from harness.search.run import SearchResult, run_search

__all__ = ["SearchOptions", "SearchResult", "run_search"]
