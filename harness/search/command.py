"""`python -m harness.search`: the command line over `run.run_search`."""

from harness.cli import options_from, parser_for
from harness.search.options import FINAL, SearchOptions
from harness.search.run import run_search
from harness.stopping import stops_deferred


def build_parser():
    return parser_for(
        "python -m harness.search",
        "Search UNet hyperparameters with Optuna; every trial is an MLflow run. "
        "Re-running the same command resumes the study.",
        SearchOptions,
        groups={
            FINAL: "after the trials, the best configurations are trained again with more "
            "seeds; the one with the best mean validation metric is refit on train + "
            "validation and registered"
        },
    )


def main(argv: list[str] | None = None) -> int:
    options = options_from(SearchOptions, build_parser().parse_args(argv))
    with stops_deferred():  # a stop waits for training or a safe point: see stopping.py
        run_search(options)
    return 0
