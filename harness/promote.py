"""`python -m harness.promote`: register a run's model and promote it if it beats the champion.

    python -m harness.promote --study unet            # the study's best trial
    python -m harness.promote --run-id 0123abcd...    # any evaluated training run
    python -m harness.promote --run-id ... --force    # champion regardless of the scores

The search does this itself at its end (unless `--no-promote`); this command is for doing it
again, for a study searched with `--no-promote`, or for a plain `harness.train` run.
"""

import argparse
import sys
from dataclasses import dataclass

from harness.cli import (
    force_option,
    min_improvement_option,
    option,
    options_from,
    parser_for,
    registered_model_option,
    run_main,
    storage_option,
    tracking_uri_option,
)
from harness.errors import HarnessError
from harness.names import CHALLENGER, CHAMPION, TrialAttr
from harness.registry.promotion import Promotion, promote_run
from harness.registry.uris import alias_uri
from harness.tracking import Tracker


def best_run_id(study_name: str, storage: str) -> str:
    """The MLflow run of the study's best completed trial."""
    from harness.search.studies import load_study  # Optuna: only with --study

    study = load_study(storage, study_name)
    try:
        best = study.best_trial
    except (ValueError, RuntimeError):
        raise HarnessError(f"study {study_name!r} has no completed trial") from None
    run_id = best.user_attrs.get(TrialAttr.RUN_ID)
    if not run_id:
        raise HarnessError(
            f"trial {best.number} of study {study_name!r} has no MLflow run ({TrialAttr.RUN_ID})"
        )
    return run_id


SOURCE = "source"  # --study or --run-id


@dataclass(frozen=True)
class PromoteOptions:
    study: str | None = option(
        "--study", group=SOURCE, help="promote this Optuna study's best trial"
    )
    run_id: str | None = option(
        "--run-id", group=SOURCE, help="promote this MLflow run (it needs a test_iou metric)"
    )
    storage: str = storage_option("Optuna storage URL (with --study)")
    tracking_uri: str = tracking_uri_option()
    registered_model: str = registered_model_option("MLflow registered model name")
    min_improvement: float = min_improvement_option()
    force: bool = force_option()


def build_parser() -> argparse.ArgumentParser:
    return parser_for(
        "python -m harness.promote",
        "Register a training run's model in the MLflow Model Registry as alias 'challenger'; it "
        "also becomes 'champion' if there is none yet or it beats the champion trained on the "
        "same data beyond the noise: the 90% paired-bootstrap interval of its per-image test "
        "IoU minus the champion's lies above --min-improvement.",
        PromoteOptions,
        one_of=SOURCE,
    )


def main(argv: list[str] | None = None) -> int:
    args = options_from(PromoteOptions, build_parser().parse_args(argv))
    run_id = args.run_id or best_run_id(args.study, args.storage)
    tracker = Tracker(args.tracking_uri, create=False)
    promotion: Promotion = promote_run(
        tracker,
        run_id,
        args.registered_model,
        force=args.force,
        min_improvement=args.min_improvement,
    )
    uri = alias_uri(args.registered_model, CHAMPION if promotion.promoted else CHALLENGER)
    print(f"load it with mlflow.pyfunc.load_model('{uri}')")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
