"""`python -m harness.report --study NAME`: a study's report, with numbers instead of screenshots.

The hand-made report this harness replaces compared UNet with UNet small (depth 4 against 3)
on pixel accuracy, mean IoU and time per epoch, looked at the learning rate, early-stopping
patience and augmentation probability, and showed learning curves and sample predictions.
This command makes that report from a study's Optuna storage and its MLflow runs:

    <out>/report.html      self-contained: figures embedded as base64 PNG, no scripts
    <out>/report.md        the same text, figures linked from figures/
    <out>/figures/*.png

and logs those files on the study's parent run under the artifact folder `report/`.

The data is the study's own (study user attributes `dataset` and `image_size`); `--data`
points at the same data moved elsewhere, and is refused when its fingerprint differs. The
best trial of each depth is scored on the three splits from its checkpoint when its run has
no final scores yet (only the study's best gets them during the search); those scores are
then logged on that trial's run, so a second report does not evaluate again.
"""

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from harness.cli import positive_int, run_main
from harness.data import Splits, load_splits
from harness.devices import resolve_device
from harness.errors import HarnessError
from harness.names import DEFAULT_STORAGE, Param, StudyAttr
from harness.report.document import HTML_FILE, MARKDOWN_FILE, write_report
from harness.report.final import final_section
from harness.report.sections import (
    StudyRecord,
    best_per_depth,
    comparison_section,
    learning_curves_section,
    mlflow_call,
    overview_section,
    parameters_section,
    predictions_section,
    pruning_section,
)
from harness.search.studies import load_study
from harness.tracking import DEFAULT_TRACKING_URI, Tracker

REPORT_ARTIFACT_DIR = "report"
MAX_RUNS = 50_000  # MLflow's own cap on one search


@dataclass(frozen=True)
class ReportOptions:
    study: str
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    out: Path | None = None  # None: reports/<study>
    data: str | None = None  # None: the study's dataset
    device: str = "auto"
    cache_dir: str | None = None
    samples: int = 6  # test images shown in order
    worst: int = 4  # and the worst ones by per-image IoU
    log: bool = True  # log the files on the study's parent run


def make_report(options: ReportOptions) -> Path:
    """Write the report files and (unless options.log is False) log them; returns the HTML path."""
    tracker = Tracker(options.tracking_uri, create=False)
    record = read_study(tracker, options.storage, options.study)
    splits = study_splits(record.study, options.data, options.cache_dir)
    device = resolve_device(options.device)
    contenders = best_per_depth(record)
    sections = [
        overview_section(record, splits),
        comparison_section(record, contenders, splits, device),
        learning_curves_section(contenders),
        parameters_section(record),
        pruning_section(record),
        predictions_section(record, splits, device, options.samples, options.worst),
    ]
    metric = (record.study.metric_names or ["value"])[0]
    final = final_section(tracker, record.parent_run_id, metric)
    if final is not None:  # a study searched with confirmation or refit
        sections.insert(2, final)
    out = options.out or Path("reports") / safe_name(options.study)
    files = write_report(f"Study {options.study!r}", sections, out)
    if options.log:
        for path in files:
            folder = path.parent.relative_to(out)
            artifact_dir = (Path(REPORT_ARTIFACT_DIR) / folder).as_posix()
            mlflow_call(tracker.client.log_artifact, record.parent_run_id, str(path), artifact_dir)
    return out / HTML_FILE


def read_study(tracker: Tracker, storage_url: str, name: str) -> StudyRecord:
    study = load_study(storage_url, name)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise HarnessError(f"study {name!r} has no completed trial: nothing to report")
    parent_run_id = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if parent_run_id is None:
        raise HarnessError(
            f"study {name!r} has no MLflow parent run: was it run by harness.search?"
        )
    try:
        parent = tracker.client.get_run(parent_run_id)
    except MlflowException:
        raise HarnessError(
            f"study {name!r}'s parent run {parent_run_id} is not in {tracker.tracking_uri}: "
            "pass the --tracking-uri the search used"
        ) from None
    children = mlflow_call(
        tracker.client.search_runs,
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=MAX_RUNS,
    )
    max_epochs = int(study.user_attrs.get(Param.MAX_EPOCHS) or parent.data.params[Param.MAX_EPOCHS])
    return StudyRecord(
        study, tracker, parent_run_id, {r.info.run_id: r for r in children}, max_epochs
    )


def study_splits(study: optuna.Study, data: str | None, cache_dir: str | None) -> Splits:
    """The study's own splits; `data` may point at the same data moved elsewhere."""
    attrs = study.user_attrs
    spec = data or attrs.get(Param.DATASET)
    image_size = attrs.get(Param.IMAGE_SIZE)
    if spec is None or image_size is None:
        raise HarnessError(f"study {study.study_name!r} does not record its dataset and image size")
    splits = load_splits(spec, int(image_size), cache_dir=cache_dir)
    expected = attrs.get("dataset_fingerprint")
    if expected is not None and splits.fingerprint != expected:
        raise HarnessError(
            f"data {splits.spec} at {image_size}px is not the data study {study.study_name!r} "
            f"was run on (fingerprint {splits.fingerprint}, study's {expected})"
        )
    return splits


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "study"


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    defaults = ReportOptions(study="")
    parser = argparse.ArgumentParser(
        prog="python -m harness.report",
        description="Write a study's report (HTML with embedded figures, Markdown, PNGs) and "
        "log it on the study's MLflow parent run under report/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--storage", default=defaults.storage, help="Optuna storage URL")
    parser.add_argument("--tracking-uri", default=defaults.tracking_uri, help="MLflow tracking URI")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default reports/STUDY)"
    )
    parser.add_argument(
        "--data",
        default=None,
        help="the study's data at another place (default: the study's own dataset spec)",
    )
    parser.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="decoded-data cache (default $HARNESS_CACHE_DIR or ~/.cache/harness)",
    )
    parser.add_argument(
        "--samples", type=positive_int, default=defaults.samples, help="test images shown"
    )
    parser.add_argument(
        "--worst", type=positive_int, default=defaults.worst, help="worst test images shown"
    )
    parser.add_argument(
        "--no-log", action="store_true", help="do not log the report on the parent run"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    path = make_report(
        ReportOptions(
            study=args.study,
            storage=args.storage,
            tracking_uri=args.tracking_uri,
            out=args.out,
            data=args.data,
            device=args.device,
            cache_dir=args.cache_dir,
            samples=args.samples,
            worst=args.worst,
            log=not args.no_log,
        )
    )
    print(f"report written: {path} (and {path.with_name(MARKDOWN_FILE)})")
    if not args.no_log:
        print(f"logged on the study's MLflow parent run under {REPORT_ARTIFACT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
