"""Everything MLflow: the names of params, metrics and tags, and run bookkeeping.

All calls go through an explicit `MlflowClient` and run id, never MLflow's fluent
active-run stack: that stack is per thread, and Optuna runs `--n-jobs` trials in threads.
"""

import csv
import json
import math
import pickle
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param as MlflowParam
from mlflow.entities import RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from harness.errors import HarnessError, first_line
from harness.locks import creation_lock
from harness.metrics import Scores

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# MLflow's UI shows the classic training-runs table (nested runs, compare view) for this kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"

CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "model.pt"
FIGURES_DIR = "figures"
# each test image's mean IoU: what the registry's paired comparison of two models reads
PER_IMAGE_FILE = "evaluation/test_per_image.json"


class Param:
    DEPTH = "depth"
    BASE_CHANNELS = "base_channels"
    LR = "lr"
    BATCH_SIZE = "batch_size"
    PATIENCE = "patience"
    AUG_P = "aug_p"
    IMAGE_SIZE = "image_size"
    MAX_EPOCHS = "max_epochs"
    SEED = "seed"
    DATASET = "dataset"
    PRECISION = "precision"  # the autocast dtype actually used: float32, bfloat16, float16
    COMPILED = "compiled"  # whether the steps ran through torch.compile


class Metric:
    TRAIN_LOSS = "train_loss"
    VAL_LOSS = "val_loss"
    TRAIN_IOU = "train_iou"
    VAL_IOU = "val_iou"
    TRAIN_ACCURACY = "train_accuracy"
    VAL_ACCURACY = "val_accuracy"
    VAL_FG_IOU = "val_fg_iou"
    EPOCH_TIME_S = "epoch_time_s"
    # once per run
    BEST_VAL_IOU = "best_val_iou"
    BEST_EPOCH = "best_epoch"
    EPOCHS_RUN = "epochs_run"
    TRAIN_TIME_S = "train_time_s"
    # on a study's parent run, after confirmation and refit (harness.confirm)
    WINNER_TRIAL = "winner_trial"
    WINNER_TEST_IOU_MEAN = "winner_test_iou_mean"
    WINNER_TEST_IOU_SD = "winner_test_iou_sd"
    REFIT_TEST_IOU = "refit_test_iou"
    REFIT_EPOCHS = "refit_epochs"


EPOCH_METRICS = (
    Metric.TRAIN_LOSS,
    Metric.VAL_LOSS,
    Metric.TRAIN_IOU,
    Metric.VAL_IOU,
    Metric.TRAIN_ACCURACY,
    Metric.VAL_ACCURACY,
    Metric.VAL_FG_IOU,
    Metric.EPOCH_TIME_S,
)


def final_metric(split: str, score: str) -> str:
    """Name of a score of the restored best weights on a whole split: e.g. `test_iou`.

    The report's table uses `final_train_iou`, `final_val_iou`, `test_iou`: the per-epoch
    `train_iou` / `val_iou` series keep their plain names, so the final train and validation
    scores get a prefix; the test split is only ever scored once, so it needs none.
    """
    return f"{split}_{score}" if split == "test" else f"final_{split}_{score}"


SPLITS = ("train", "val", "test")
SCORES = ("accuracy", "iou", "fg_iou")  # the fields of metrics.Scores


class Role:
    """Values of `Tag.ROLE`: what a run is."""

    TRAIN = "train"  # a harness.train run
    STUDY = "study"  # a search's parent run
    TRIAL = "trial"  # one trial of the search
    CONFIRM = "confirm"  # a top trial's configuration retrained with another seed
    REFIT = "refit"  # the winning configuration retrained on train + validation


class Tag:
    ROLE = "harness.role"  # a Role
    STUDY = "harness.study"
    TRIAL_NUMBER = "harness.trial_number"
    TRIAL_STATE = "harness.trial_state"  # Optuna's state name: COMPLETE, PRUNED, FAIL
    STOP_REASON = "harness.stop_reason"
    FAIL_REASON = "harness.fail_reason"
    DATASET_FINGERPRINT = "harness.dataset_fingerprint"


def epoch_metrics(result) -> dict[str, float]:
    """The per-epoch series of one `trainer.EpochResult`, logged with step = epoch (a refit,
    which has no validation split, logs no validation series)."""
    metrics = {
        Metric.TRAIN_LOSS: result.train_loss,
        Metric.TRAIN_IOU: result.train.iou,
        Metric.TRAIN_ACCURACY: result.train.accuracy,
        Metric.EPOCH_TIME_S: result.epoch_time_s,
    }
    if result.val is not None:
        metrics |= {
            Metric.VAL_LOSS: result.val_loss,
            Metric.VAL_IOU: result.val.iou,
            Metric.VAL_ACCURACY: result.val.accuracy,
            Metric.VAL_FG_IOU: result.val.fg_iou,
        }
    return metrics


def fit_metrics(fit) -> dict[str, float]:
    """Once-per-run summary of a `trainer.FitResult` (a refit has no best validation IoU)."""
    metrics = {
        Metric.BEST_EPOCH: fit.best_epoch,
        Metric.EPOCHS_RUN: fit.epochs_run,
        Metric.TRAIN_TIME_S: fit.train_time_s,
    }
    if math.isfinite(fit.best_val_iou):
        metrics[Metric.BEST_VAL_IOU] = fit.best_val_iou
    return metrics


def split_metrics(scores: Mapping[str, Scores]) -> dict[str, float]:
    """Scores of the restored weights per split, e.g. {"test": Scores(...)} -> test_iou, ..."""
    return {
        final_metric(split, name): getattr(split_scores, name)
        for split, split_scores in scores.items()
        for name in SCORES
    }


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast with one line when an MLflow server URL does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s).close()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise HarnessError(
            f"MLflow tracking server {tracking_uri} is unreachable: {reason}"
        ) from None


class Tracker:
    """A tracking store and the few operations the harness needs from it."""

    def __init__(self, tracking_uri: str = DEFAULT_TRACKING_URI):
        check_reachable(tracking_uri)
        self.tracking_uri = tracking_uri
        with creation_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri)
            self.client.search_experiments(max_results=1)  # creates a fresh store's schema

    def experiment_id(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:
            # another worker created it between our look-up and create
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def start_run(
        self,
        experiment_id: str,
        name: str,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        tags = {MLFLOW_RUN_NAME: name, **(tags or {})}
        if parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        run = self.client.create_run(experiment_id, tags=tags, run_name=name)
        return run.info.run_id

    def log(
        self,
        run_id: str,
        metrics: Mapping[str, float] = (),
        params: Mapping[str, object] = (),
        tags: Mapping[str, object] = (),
        step: int = 0,
    ) -> None:
        """One batched request: params, tags and metrics (at `step`) together."""
        timestamp = _now_ms()
        self.client.log_batch(
            run_id,
            metrics=[MlflowMetric(k, float(v), timestamp, step) for k, v in dict(metrics).items()],
            params=[MlflowParam(k, str(v)) for k, v in dict(params).items()],
            tags=[RunTag(k, str(v)) for k, v in dict(tags).items()],
        )

    def log_table(self, run_id: str, rows: list[dict], name: str) -> None:
        """Rows of equal keys as a CSV artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            with open(path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
                writer.writeheader()
                writer.writerows(rows)
            self.client.log_artifact(run_id, str(path))

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, f"{FIGURES_DIR}/{name}")

    def log_checkpoint(self, run_id: str, model: torch.nn.Module) -> None:
        """The weights as a plain state dict, loadable with torch.load(weights_only=True)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / CHECKPOINT_FILE
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
            self.client.log_artifact(run_id, str(path), CHECKPOINT_DIR)

    def load_checkpoint_into(self, run_id: str, model: torch.nn.Module) -> torch.nn.Module:
        """The run's logged weights loaded into `model` (read with weights_only=True); a file
        that is not such a checkpoint, or one for another architecture, is a HarnessError."""
        unusable = f"run {run_id}: unusable checkpoint"
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(
                run_id, f"{CHECKPOINT_DIR}/{CHECKPOINT_FILE}", tmp
            )
            try:
                state = load_checkpoint(path)
            except pickle.UnpicklingError:
                # torch's own message advises weights_only=False: wrong for a downloaded file
                raise HarnessError(f"{unusable}: not a weights-only state dict") from None
            except (RuntimeError, OSError, EOFError) as error:
                raise HarnessError(f"{unusable}: {first_line(error)}") from None
        if not isinstance(state, Mapping) or not all(isinstance(key, str) for key in state):
            raise HarnessError(f"{unusable}: not a state dict")
        try:
            model.load_state_dict(state)
        except RuntimeError as error:
            # torch heads the message "Error(s) in loading state_dict"; the reasons follow
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = (lines[1] if len(lines) > 1 else first_line(error))[:300]
            raise HarnessError(
                f"run {run_id}: the checkpoint does not fit the model: {reason}"
            ) from None
        return model

    def log_per_image(self, run_id: str, names, ious) -> None:
        """Each test image's score (`metrics.per_image_iou`), by image name."""
        scores = {"names": list(names), "iou": [float(v) for v in ious]}
        self.client.log_dict(run_id, scores, PER_IMAGE_FILE)

    def per_image(self, run_id: str) -> dict[str, float] | None:
        """The run's per-image test scores by image name; None when it logged none."""
        folder, _, name = PER_IMAGE_FILE.rpartition("/")
        if f"{folder}/{name}" not in {a.path for a in self.client.list_artifacts(run_id, folder)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, PER_IMAGE_FILE, tmp)
            scores = json.loads(Path(path).read_text())
        return dict(zip(scores["names"], scores["iou"], strict=True))

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    @contextmanager
    def run_status(self, run_id: str) -> Iterator[None]:
        """Ends the run FINISHED, FAILED on an exception, KILLED on Ctrl-C."""
        try:
            yield
        except KeyboardInterrupt:
            self.end_run(run_id, RunStatus.to_string(RunStatus.KILLED))
            raise
        except BaseException:
            self.end_run(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        self.end_run(run_id, RunStatus.to_string(RunStatus.FINISHED))


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _now_ms() -> int:
    return int(time.time() * 1000)
