"""`python -m harness.promote`: register a run's model and promote it if it beats the champion.

    python -m harness.promote --study unet            # the study's best trial
    python -m harness.promote --run-id 0123abcd...    # any evaluated training run
    python -m harness.promote --run-id ... --force    # champion regardless of the scores

The search does this itself at its end (unless `--no-promote`); this command is for doing it
again, for a study searched with `--no-promote`, or for a plain `harness.train` run.
"""

import argparse
import sys

from harness.cli import add_promotion_flags, run_main
from harness.errors import HarnessError
from harness.registry.names import CHALLENGER, CHAMPION, DEFAULT_REGISTERED_MODEL
from harness.registry.promotion import Promotion, promote_run
from harness.registry.uris import alias_uri
from harness.search.studies import DEFAULT_STORAGE
from harness.tracking import DEFAULT_TRACKING_URI, Tracker


def best_run_id(study_name: str, storage: str) -> str:
    """The MLflow run of the study's best completed trial."""
    from harness.search.objective import RUN_ID_ATTR
    from harness.search.studies import load_study

    study = load_study(storage, study_name)
    try:
        best = study.best_trial
    except (ValueError, RuntimeError):
        raise HarnessError(f"study {study_name!r} has no completed trial") from None
    run_id = best.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        raise HarnessError(
            f"trial {best.number} of study {study_name!r} has no MLflow run ({RUN_ID_ATTR})"
        )
    return run_id


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.promote",
        description="Register a training run's model in the MLflow Model Registry as alias "
        "'challenger'; it also becomes 'champion' if there is none yet or it beats the "
        "champion trained on the same data beyond the noise: the 90% paired-bootstrap "
        "interval of its per-image test IoU minus the champion's lies above --min-improvement.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--study", help="promote this Optuna study's best trial")
    source.add_argument("--run-id", help="promote this MLflow run (it needs a test_iou metric)")
    parser.add_argument(
        "--storage", default=DEFAULT_STORAGE, help="Optuna storage URL (with --study)"
    )
    parser.add_argument("--tracking-uri", default=DEFAULT_TRACKING_URI, help="MLflow tracking URI")
    parser.add_argument(
        "--registered-model", default=DEFAULT_REGISTERED_MODEL, help="MLflow registered model name"
    )
    add_promotion_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
