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

from harness.cli import (
    cache_dir_option,
    data_option,
    device_option,
    option,
    options_from,
    parser_for,
    positive_int,
    run_main,
    storage_option,
    tracking_uri_option,
)
from harness.devices import resolve_device
from harness.names import Artifact
from harness.report import reading
from harness.report.document import HTML_FILE, MARKDOWN_FILE, write_report
from harness.report.final import final_section
from harness.report.sections import (
    comparison_section,
    learning_curves_section,
    overview_section,
    parameters_section,
    predictions_section,
    pruning_section,
)
from harness.tracking import Tracker


@dataclass(frozen=True)
class ReportOptions:
    study: str = option("--study", required=True, help="the study's name")
    storage: str = storage_option()
    tracking_uri: str = tracking_uri_option()
    out: Path | None = option("--out", type=Path, help="output folder (default reports/STUDY)")
    data: str | None = data_option(
        None, "the study's data at another place (default: the study's own dataset spec)"
    )
    device: str = device_option()
    cache_dir: str | None = cache_dir_option()
    samples: int = option("--samples", type=positive_int, default=6, help="test images shown")
    worst: int = option(  # shown after the first ones: the worst by per-image IoU
        "--worst", type=positive_int, default=4, help="worst test images shown"
    )
    log: bool = option(
        "--no-log",
        default=True,
        action="store_false",
        help="do not log the report on the parent run",
    )


def make_report(options: ReportOptions) -> Path:
    """Write the report files and (unless options.log is False) log them; returns the HTML path."""
    tracker = Tracker(options.tracking_uri, create=False)
    record = reading.read_study(tracker, options.storage, options.study)
    splits = reading.study_splits(record.study, options.data, options.cache_dir)
    device = resolve_device(options.device)
    contenders = reading.read_contenders(tracker, record, splits, device)
    seconds = reading.measured_seconds(tracker, record)
    predictions = reading.best_predictions(tracker, record.best, splits.test, device)
    confirmation = reading.read_confirmation(tracker, record.parent_run_id)

    sections = [
        overview_section(record, splits),
        comparison_section(record, contenders),
        # only a study searched with confirmation or refit has this one
        *([] if confirmation is None else [final_section(confirmation, record.metric)]),
        learning_curves_section(contenders),
        parameters_section(record),
        pruning_section(record, seconds),
        predictions_section(predictions, options.samples, options.worst),
    ]

    out = options.out or Path("reports") / safe_name(options.study)
    files = write_report(f"Study {options.study!r}", sections, out)
    if options.log:
        reading.log_report(tracker, record.parent_run_id, files, out, Artifact.REPORT_DIR)
    return out / HTML_FILE


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "study"


# --- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    return parser_for(
        "python -m harness.report",
        "Write a study's report (HTML with embedded figures, Markdown, PNGs) and log it on the "
        "study's MLflow parent run under report/.",
        ReportOptions,
    )


def main(argv: list[str] | None = None) -> int:
    options = options_from(ReportOptions, build_parser().parse_args(argv))
    path = make_report(options)
    print(f"report written: {path} (and {path.with_name(MARKDOWN_FILE)})")
    if options.log:
        print(f"logged on the study's MLflow parent run under {Artifact.REPORT_DIR}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
