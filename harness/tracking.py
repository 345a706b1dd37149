"""Everything the harness does with MLflow runs: creating them, logging, checkpoints, status.

The names it writes are in `harness.names`.

All calls go through an explicit `MlflowClient` and run id, never MLflow's fluent
active-run stack: that stack is per thread, and Optuna runs `--n-jobs` trials in threads.
The client API leaves out what the fluent API adds to every run, so `Tracker.start_run` adds
it back (`context_tags`: source, user, git commit) and the datasets are logged as MLflow
dataset inputs (`Tracker.log_dataset_inputs`).
"""

import csv
import functools
import json
import math
import pickle
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mlflow.data
import torch
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import DatasetInput, InputTag, RunStatus, RunTag
from mlflow.entities import Metric as MlflowMetric
from mlflow.entities import Param as MlflowParam
from mlflow.environment_variables import MLFLOW_RUN_ID
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.git_context import GitRunContext
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_BRANCH,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_DIRTY,
    MLFLOW_GIT_REPO_URL,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_PROJECT_ENTRY_POINT,
    MLFLOW_RUN_NAME,
)

import harness
from harness.errors import HarnessError, first_line, user_error, user_errors
from harness.locks import creation_lock, sqlite_path
from harness.metrics import Scores
from harness.names import (
    CHECKPOINT_PATH,
    DATASET_CONTEXTS,
    DEFAULT_TRACKING_URI,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    PRUNED_NAME_SUFFIX,
    SCORES,
    SPLITS,
    Artifact,
    Metric,
    Param,
    Role,
    Tag,
    final_metric,
)


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


def reached_metrics(best, epochs_run: int) -> dict[str, float]:
    """A pruned trial's summary: its best epoch so far (a `trainer.EpochResult`), so that it
    has the same once-per-run metrics as a complete one and sorts by what it reached."""
    return {
        Metric.BEST_VAL_IOU: best.val.iou,
        Metric.BEST_EPOCH: best.epoch,
        Metric.EPOCHS_RUN: epochs_run,
    }


def logged_scores(metrics: Mapping[str, float]) -> dict[str, Scores] | None:
    """`split_metrics` read back: a run's final scores on every split, or None when any of
    them is missing."""
    names = [final_metric(split, score) for split in SPLITS for score in SCORES]
    if not all(name in metrics for name in names):
        return None
    return {
        split: Scores(*(metrics[final_metric(split, score)] for score in SCORES))
        for split in SPLITS
    }


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


def require_store(tracking_uri: str) -> None:
    """Refuse a local SQLite store that is not there, for commands that only read one: MLflow
    would create an empty store in the working directory and report everything missing."""
    path = sqlite_path(tracking_uri)
    if path is not None and not path.is_file():
        raise HarnessError(
            f"no MLflow tracking store at {path.resolve()} (--tracking-uri {tracking_uri}): "
            "run this where the search ran, or pass its --tracking-uri"
        )


@functools.cache
def context_tags() -> dict[str, str]:
    """What MLflow's fluent API tags every run with (user, source name and type, notebook or
    job context), with the git state of the harness package itself rather than of the script
    that started Python, plus the harness version. The same for the whole process."""
    tags = resolve_tags(ignore=[GitRunContext])
    tags.update(_git_tags(Path(harness.__file__).parent))
    tags[Tag.VERSION] = harness.__version__
    return tags


def _git_tags(folder: Path) -> dict[str, str]:
    """mlflow.source.git.* of the checkout `folder` is in; none outside a git checkout."""
    commit = get_git_commit(str(folder))
    if commit is None:
        return {}
    tags = {
        MLFLOW_GIT_COMMIT: commit,
        MLFLOW_GIT_BRANCH: get_git_branch(str(folder)),
        MLFLOW_GIT_REPO_URL: get_git_repo_url(str(folder)),  # credentials stripped
    }
    try:
        import git  # GitPython, which MLflow's git helpers use too

        dirty = git.Repo(folder, search_parent_directories=True).is_dirty()
        tags[MLFLOW_GIT_DIRTY] = str(dirty).lower()
    except Exception:  # no git executable, odd checkout: the commit alone will do
        pass
    return {k: v for k, v in tags.items() if v is not None}


def dataset_inputs(splits) -> list[DatasetInput]:
    """Each split of a `data.Splits` as an MLflow dataset: images as features, masks as targets,
    the dataset fingerprint as the digest, the split as the input's context."""
    kind, _, location = splits.spec.partition(":")
    if Path(location).is_absolute():
        with warnings.catch_warnings():
            # MLflow registers its local-file source twice and warns that both match
            warnings.simplefilter("ignore")
            source = resolve_dataset_source(location)
    else:  # generated data: the spec says how to make it again
        source = CodeDatasetSource({Param.DATASET: splits.spec})
    inputs = []
    for split, context in DATASET_CONTEXTS.items():
        data = getattr(splits, split)
        dataset = mlflow.data.from_numpy(
            data.images,
            source=source,
            targets=data.masks,
            # name and digest identify a dataset in an experiment: the splits need their own names
            name=f"{splits.spec} {split}",
            digest=splits.fingerprint,
        )
        inputs.append(
            DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
        )
    return inputs


class Tracker:
    """A tracking store and the few operations the harness needs from it.

    `create=False` is for commands that only read runs or models (report, promote, predict,
    transfer): a local SQLite store that is not there is then an error, not a new empty store.
    """

    def __init__(self, tracking_uri: str = DEFAULT_TRACKING_URI, create: bool = True):
        check_reachable(tracking_uri)
        self.tracking_uri = tracking_uri
        if not create:
            require_store(tracking_uri)
            self.client = MlflowClient(tracking_uri)
            return
        with creation_lock(tracking_uri):
            self.client = MlflowClient(tracking_uri)
            self.client.search_experiments(max_results=1)  # creates a fresh store's schema

    def get_run(self, run_id: str, missing: str | None = None):
        """The run; one that is not in the store is a HarnessError saying `missing` (by
        default that there is no such run), any other store error the user's line too."""
        try:
            return self.client.get_run(run_id)
        except MlflowException as error:
            if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                message = missing or f"no MLflow run {run_id!r} in {self.tracking_uri}"
                raise HarnessError(message) from None
            raise user_error("MLflow tracking", error) from None

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
        tags = {**context_tags(), MLFLOW_RUN_NAME: name, **(tags or {})}
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

    def log_dataset_inputs(self, run_id: str, splits) -> None:
        """The run's train, validation and test data as MLflow dataset inputs (the UI's
        Dataset column and filters); logging them again is a no-op."""
        self.client.log_inputs(run_id, datasets=dataset_inputs(splits))

    def mark_pruned(self, run_id: str, best, epochs_run: int) -> None:
        """A pruned trial's run: what it reached (`best` is its best `EpochResult` so far) and
        a name that tells it apart from complete trials in the runs list."""
        self.log(run_id, reached_metrics(best, epochs_run))
        name = self.client.get_run(run_id).info.run_name
        self.client.update_run(run_id, name=name + PRUNED_NAME_SUFFIX)

    def adopt_project_run(self, run_id: str) -> None:
        """Under `mlflow run`, hang the project's own run under `run_id`, so that one
        invocation leaves one run tree.

        `mlflow run` creates a run before it starts the command, logs the entry point's
        parameters on it and hands it over in MLFLOW_RUN_ID. The harness records into its own
        runs (a study's parent run lives across many invocations), so that run becomes a child,
        tagged with the `project` role. MLflow shows it nested when it is in the same
        experiment (`mlflow run --experiment-name`); a run in another store is left alone.
        """
        project_run_id = MLFLOW_RUN_ID.get()
        if not project_run_id or project_run_id == run_id:
            return
        try:
            project_run = self.client.get_run(project_run_id)
        except MlflowException:
            return  # recorded in another tracking store
        if MLFLOW_PROJECT_ENTRY_POINT not in project_run.data.tags:
            return  # not a project run: someone else's MLFLOW_RUN_ID
        self.log(project_run_id, tags={MLFLOW_PARENT_RUN_ID: run_id, Tag.ROLE: Role.PROJECT})

    def log_figure(self, run_id: str, figure, name: str) -> None:
        self.client.log_figure(run_id, figure, f"{Artifact.FIGURES_DIR}/{name}")

    def log_checkpoint(self, run_id: str, model: torch.nn.Module) -> None:
        """The weights as a plain state dict, loadable with torch.load(weights_only=True)."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Artifact.CHECKPOINT_FILE
            torch.save({k: v.cpu() for k, v in model.state_dict().items()}, path)
            self.client.log_artifact(run_id, str(path), Artifact.CHECKPOINT_DIR)

    def load_checkpoint_into(self, run_id: str, model: torch.nn.Module) -> torch.nn.Module:
        """The run's logged weights loaded into `model` (read with weights_only=True); a file
        that is not such a checkpoint, or one for another architecture, is a HarnessError."""
        unusable = f"run {run_id}: unusable checkpoint"
        with tempfile.TemporaryDirectory() as tmp:
            # gone when the artifacts were deleted or moved apart from the tracking database
            with user_errors(
                f"run {run_id}: cannot read its checkpoint {CHECKPOINT_PATH}", MlflowException
            ):
                path = self.client.download_artifacts(run_id, CHECKPOINT_PATH, tmp)
            try:
                state = load_checkpoint(path)
            except pickle.UnpicklingError:
                # torch's own message advises weights_only=False: wrong for a downloaded file
                raise HarnessError(f"{unusable}: not a weights-only state dict") from None
            except (RuntimeError, OSError, EOFError) as error:
                raise user_error(unusable, error) from None
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
        self.client.log_dict(run_id, scores, Artifact.PER_IMAGE_FILE)

    def per_image(self, run_id: str) -> dict[str, float] | None:
        """The run's per-image test scores by image name; None when it logged none."""
        folder, _, name = Artifact.PER_IMAGE_FILE.rpartition("/")
        if f"{folder}/{name}" not in {a.path for a in self.client.list_artifacts(run_id, folder)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = self.client.download_artifacts(run_id, Artifact.PER_IMAGE_FILE, tmp)
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
