"""The report's side of the stores: what it reads from Optuna and MLflow, returned as the plain
records of `inputs`, and the two things it writes back: the final scores of a trial it had to
score from its checkpoint (why: see `command`), and the report's files."""

import csv
import tempfile
from pathlib import Path

import optuna
import torch
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from optuna.trial import FrozenTrial, TrialState

from harness.data import SegmentationSet, Splits, load_splits
from harness.errors import HarnessError, user_errors
from harness.metrics import Scores, per_image_iou
from harness.names import (
    EPOCH_METRICS,
    Artifact,
    Metric,
    Param,
    StudyAttr,
    TrialAttr,
)
from harness.report.inputs import Confirmation, Contender, Predictions, StudyRecord, TrialRun
from harness.runs import evaluate_splits, load_run_model, run_dtype
from harness.search.studies import load_study
from harness.tracking import Tracker, logged_scores, split_metrics
from harness.trainer import EpochResult, predict_masks

MAX_RUNS = 50_000  # MLflow's own cap on one search


def read_study(tracker: Tracker, storage_url: str, name: str) -> StudyRecord:
    """The study, its trials and its parent run's children; refused without a completed trial
    or a parent run in this store."""
    study = load_study(storage_url, name)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise HarnessError(f"study {name!r} has no completed trial: nothing to report")
    parent_run_id = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if parent_run_id is None:
        raise HarnessError(
            f"study {name!r} has no MLflow parent run: was it run by harness.search?"
        )
    parent = tracker.get_run(
        parent_run_id,
        missing=f"study {name!r}'s parent run {parent_run_id} is not in {tracker.tracking_uri}: "
        "pass the --tracking-uri the search used",
    )
    children = mlflow_call(
        tracker.client.search_runs,
        [parent.info.experiment_id],
        filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
        max_results=MAX_RUNS,
    )
    max_epochs = int(study.user_attrs.get(Param.MAX_EPOCHS) or parent.data.params[Param.MAX_EPOCHS])
    return StudyRecord(
        study=study,
        trials=tuple(study.get_trials(deepcopy=False)),
        best=study.best_trial,
        maximize=study.direction == optuna.study.StudyDirection.MAXIMIZE,
        metric=(study.metric_names or ["value"])[0],
        parent_run_id=parent_run_id,
        runs={run.info.run_id: trial_run(run) for run in children},
        max_epochs=max_epochs,
    )


def trial_run(run: Run) -> TrialRun:
    return TrialRun(run.info.run_id, dict(run.data.params), dict(run.data.metrics))


def study_splits(study: optuna.Study, data: str | None, cache_dir: str | None) -> Splits:
    """The study's own splits; `data` may point at the same data moved elsewhere."""
    attrs = study.user_attrs
    spec = data or attrs.get(Param.DATASET)
    image_size = attrs.get(Param.IMAGE_SIZE)
    if spec is None or image_size is None:
        raise HarnessError(f"study {study.study_name!r} does not record its dataset and image size")
    splits = load_splits(spec, int(image_size), cache_dir=cache_dir)
    expected = attrs.get(Param.DATASET_FINGERPRINT)
    if expected is not None and splits.fingerprint != expected:
        raise HarnessError(
            f"data {splits.spec} at {image_size}px is not the data study {study.study_name!r} "
            f"was run on (fingerprint {splits.fingerprint}, study's {expected})"
        )
    return splits


# --- the trials shown ------------------------------------------------------------------------


def read_contenders(
    tracker: Tracker, record: StudyRecord, splits: Splits, device: torch.device
) -> list[Contender]:
    """The best completed trial of each depth, with its history and its scores on every split."""
    contenders = []
    for depth, trial in record.best_per_depth().items():
        run = record.run_of(trial)
        history = run_history(tracker, run.run_id)
        contenders.append(
            Contender(depth, trial, run, history, split_scores(tracker, run, splits, device))
        )
    return contenders


def run_history(tracker: Tracker, run_id: str) -> list[EpochResult]:
    """A run's per-epoch metrics rebuilt as `EpochResult`s, so that the figures can draw them."""
    series = {
        name: {
            m.step: m.value for m in mlflow_call(tracker.client.get_metric_history, run_id, name)
        }
        for name in EPOCH_METRICS
    }
    nan = float("nan")
    epochs = sorted(set(series[Metric.TRAIN_LOSS]) & set(series[Metric.VAL_LOSS]))
    return [
        EpochResult(
            epoch=epoch,
            train_loss=series[Metric.TRAIN_LOSS][epoch],
            val_loss=series[Metric.VAL_LOSS][epoch],
            # the training foreground IoU is not logged per epoch
            train=Scores(
                series[Metric.TRAIN_ACCURACY].get(epoch, nan),
                series[Metric.TRAIN_IOU].get(epoch, nan),
                nan,
            ),
            val=Scores(
                series[Metric.VAL_ACCURACY].get(epoch, nan),
                series[Metric.VAL_IOU].get(epoch, nan),
                series[Metric.VAL_FG_IOU].get(epoch, nan),
            ),
            epoch_time_s=series[Metric.EPOCH_TIME_S].get(epoch, nan),
        )
        for epoch in epochs
    ]


def split_scores(
    tracker: Tracker, run: TrialRun, splits: Splits, device: torch.device
) -> dict[str, Scores]:
    """The run's logged final scores; without them, its checkpoint scored now and logged."""
    scores = logged_scores(run.metrics)
    if scores is None:
        model = mlflow_call(load_run_model, tracker, run.run_id, device)
        # under the autocast it trained with, so that the validation IoU is the trial value
        dtype = run_dtype(mlflow_call(tracker.client.get_run, run.run_id))
        scores = evaluate_splits(model, splits, device, dtype)
        tracker.log(run.run_id, split_metrics(scores))
    return scores


def measured_seconds(tracker: Tracker, record: StudyRecord) -> dict[int, float]:
    """Each finished trial's logged epoch times summed, by trial number (0 without a run)."""
    seconds = {}
    for trial in record.trials_in(TrialState.COMPLETE, TrialState.PRUNED):
        run = record.run_of(trial)
        history = []
        if run is not None:
            history = mlflow_call(
                tracker.client.get_metric_history, run.run_id, Metric.EPOCH_TIME_S
            )
        seconds[trial.number] = float(sum(m.value for m in history))
    return seconds


def best_predictions(
    tracker: Tracker, best: FrozenTrial, test: SegmentationSet, device: torch.device
) -> Predictions:
    """The best trial's model (its restored best weights) on every test image."""
    model = mlflow_call(load_run_model, tracker, best.user_attrs[TrialAttr.RUN_ID], device)
    masks = predict_masks(model, test.images, device)
    return Predictions(best.number, test, masks, per_image_iou(masks, test.masks))


# --- the parent run --------------------------------------------------------------------------


def read_confirmation(tracker: Tracker, parent_run_id: str) -> Confirmation | None:
    """The parent run's confirmation.csv and metrics; None when the study had no final stage."""
    names = {a.path for a in tracker.client.list_artifacts(parent_run_id)}
    if Artifact.CONFIRMATION_CSV not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(parent_run_id, Artifact.CONFIRMATION_CSV, tmp)
        with open(Path(path), newline="") as file:
            rows = list(csv.DictReader(file))
    return Confirmation(rows, tracker.client.get_run(parent_run_id).data.metrics)


def log_report(
    tracker: Tracker, parent_run_id: str, files: list[Path], out: Path, artifact_dir: str
) -> None:
    """The report's files on the parent run, under `artifact_dir` as they lie under `out`."""
    for path in files:
        folder = (Path(artifact_dir) / path.parent.relative_to(out)).as_posix()
        mlflow_call(tracker.client.log_artifact, parent_run_id, str(path), folder)


def mlflow_call(function, *args, **kwargs):
    """A tracking-store call; its MlflowException becomes one line for the user."""
    with user_errors("MLflow tracking", MlflowException):
        return function(*args, **kwargs)
