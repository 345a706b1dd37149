"""The training run a version is made from, checked up front so that a run that cannot be
promoted fails with one line and nothing registered."""

import math
from dataclasses import dataclass

from harness.errors import HarnessError
from harness.names import CHECKPOINT_PATH, SCORE_METRIC, Artifact, Param, Tag
from harness.registry.store import call
from harness.tracking import Tracker

MODEL_PARAMS = (Param.DEPTH, Param.BASE_CHANNELS, Param.IMAGE_SIZE)


@dataclass(frozen=True)
class SourceRun:
    """What the registry needs from a finished training run."""

    run_id: str
    experiment_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    fingerprint: str
    score: float
    depth: int
    base_channels: int
    image_size: int

    @property
    def origin(self) -> str:
        study, trial = self.tags.get(Tag.STUDY), self.tags.get(Tag.TRIAL_NUMBER)
        if study is not None and trial is not None:
            return f"trial {trial} of study {study!r} (run {self.run_id})"
        return f"run {self.run_id}"


def read_source(tracker: Tracker, run_id: str) -> SourceRun:
    """The run, refused (HarnessError) when it is unknown or has no checkpoint, model params,
    finite test score or dataset fingerprint."""
    run = tracker.get_run(run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    missing = [p for p in MODEL_PARAMS if p not in params]
    if missing:
        raise HarnessError(f"run {run_id} is not a training run: no param {missing[0]}")
    if SCORE_METRIC not in metrics:
        raise HarnessError(
            f"run {run_id} has no {SCORE_METRIC} metric: only a run evaluated on the test split "
            "can be promoted"
        )
    fingerprint = tags.get(Tag.DATASET_FINGERPRINT)
    if not fingerprint:
        raise HarnessError(f"run {run_id} has no {Tag.DATASET_FINGERPRINT} tag")
    try:
        depth, base_channels, image_size = (int(params[p]) for p in MODEL_PARAMS)
    except ValueError:
        raise HarnessError(f"run {run_id} has non-integer model params") from None
    names = {
        a.path for a in call(lambda: tracker.client.list_artifacts(run_id, Artifact.CHECKPOINT_DIR))
    }
    if CHECKPOINT_PATH not in names:
        raise HarnessError(f"run {run_id} has no checkpoint ({CHECKPOINT_PATH})")
    score = metrics[SCORE_METRIC]
    if not math.isfinite(score):
        raise HarnessError(f"run {run_id} has a non-finite {SCORE_METRIC}: {score}")
    return SourceRun(
        run_id=run_id,
        experiment_id=run.info.experiment_id,
        params=dict(params),
        metrics=dict(metrics),
        tags=dict(tags),
        fingerprint=fingerprint,
        score=score,
        depth=depth,
        base_channels=base_channels,
        image_size=image_size,
    )
