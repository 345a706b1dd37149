"""The model registry: register a run's model, compare it with the champion, move the alias.

`promote_run` takes a finished training run (a search's refit model or best trial, or a
`harness.train` run), logs its weights once as an MLflow PyTorch model and registers it as a
new version of the registered model. The version gets the alias `challenger`; it takes
`champion` only when there is no champion yet, or when it was trained on the same data (same
dataset fingerprint: data, image size and split) and beats the champion beyond the noise of
the test split: a paired bootstrap over the test images of its per-image mean IoU minus the
champion's, whose 90% interval must lie above `min_improvement` (see `decide`). `force`
promotes it anyway. The decision, both scores and the interval are written on the version as
tags and in its description. Promoting a run that is already registered reuses its version.

Model format: `torch.export` ("pt2"), through `mlflow.pytorch.save_model(...,
serialization_format="pt2")`.

* The alternative, MLflow's default pickle format, stores the whole `nn.Module` with
  cloudpickle; loading it unpickles arbitrary objects (MLflow 3.17 itself refuses unless
  `MLFLOW_ALLOW_PICKLE_DESERIALIZATION` is set).
* "pt2" stores a traced graph plus raw tensors. Before `torch.export.load`, MLflow 3.17's
  loader (`mlflow.pytorch._validate_pt2_archive_is_pickle_free`) checks every record of the
  archive: raw tensor bytes, JSON/text metadata, or accepted by `torch.load(weights_only=True)`;
  anything else is refused. So `mlflow.pyfunc.load_model` / `mlflow.pytorch.load_model`
  never unpickle arbitrary objects, and the source checkpoint (a plain state dict) is read
  with `weights_only=True` too.
* A "models from code" pyfunc (a Python file that rebuilds the UNet from a state dict) would
  also avoid pickle, but it is not a PyTorch-flavour model, and serving it needs this package
  importable; the exported graph needs only torch, and `mlflow.pytorch.load_model` gives a
  module back.

What is exported is `Sequential(UNet, Sigmoid)` in eval mode, for the image size the run was
trained at (the signature fixes H = W = `image_size`; the batch dimension is dynamic). So

    mlflow.pyfunc.load_model("models:/harness-unet@champion").predict(images)

takes float32 images (N, 3, S, S) in [0, 1] and returns float32 per-pixel foreground probabilities
(N, 1, S, S) in [0, 1]; threshold at 0.5 for a mask. S is `image_size` in the model's
metadata (`harness.predict` resizes to it and back).

All registry and tracking calls go through the tracker's explicit `MlflowClient`: MLflow's
fluent `log_model` would use the process-global tracking URI and active-run stack.
"""

import json
import math
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from torch import nn

from harness.errors import HarnessError, first_line
from harness.metrics import PairedDifference, paired_bootstrap
from harness.models import UNet
from harness.names import Artifact, Metric, Param, Tag, final_metric
from harness.tracking import Tracker

DEFAULT_REGISTERED_MODEL = "harness-unet"
CHAMPION = "champion"
CHALLENGER = "challenger"
LOGGED_MODEL_NAME = "unet"
# torch.export keeps a dimension of size 1 static: the example needs two images for a
# dynamic batch dimension.
EXAMPLE_BATCH = 2
SCORE_METRIC = final_metric("test", "iou")  # test_iou
MLMODEL_FILE = "MLmodel"


class VersionTag:
    """Tags on a registered model version (the run-side names come from tracking.Tag)."""

    SOURCE_RUN_ID = "harness.source_run_id"
    STUDY = Tag.STUDY
    TRIAL_NUMBER = Tag.TRIAL_NUMBER
    DATASET_FINGERPRINT = Tag.DATASET_FINGERPRINT
    SCORE = "harness.score"  # this version's test_iou
    CHAMPION_SCORE = "harness.champion_score"  # the champion's, when this version was decided
    CHAMPION_VERSION = "harness.champion_version"
    PROMOTED = "harness.promoted"  # "true": took the champion alias
    DECISION = "harness.decision"  # Promotion.reason
    # the paired bootstrap of per-image test IoU, this version minus the champion
    DIFF_MEAN = "harness.diff_mean"
    DIFF_CI_LOW = "harness.diff_ci_low"
    DIFF_CI_HIGH = "harness.diff_ci_high"
    PARAM_PREFIX = "param."
    METRIC_PREFIX = "metric."


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool  # took (or already holds) the champion alias
    reason: str  # one human sentence
    score: float  # this version's test_iou
    champion_score: float | None  # the champion's test_iou before this decision
    difference: PairedDifference | None = None  # per-image test IoU, this minus the champion


@dataclass(frozen=True)
class SourceRun:
    """What the registry needs from a finished training run, checked up front."""

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


def promote_run(
    tracker: Tracker,
    run_id: str,
    model_name: str = DEFAULT_REGISTERED_MODEL,
    *,
    force: bool = False,
    min_improvement: float = 0.0,
) -> Promotion:
    """Register the run's model (once) and decide whether it becomes the champion.

    Raises HarnessError, with nothing registered, for an unknown run or one without a
    checkpoint, model params, `test_iou` or dataset fingerprint.
    """
    check_model_name(model_name)
    client = tracker.client
    source = read_source(tracker, run_id)
    existing = _call(lambda: _version_of_run(client, model_name, run_id))
    champion = _call(lambda: _champion(client, model_name))
    if existing is not None and champion is not None and champion.version == existing.version:
        decision = Promotion(
            str(existing.version), True, "already the champion", source.score, source.score
        )
        _print(model_name, decision)
        return decision
    champion_version = None if champion is None else str(champion.version)
    champion_images = None
    if champion is not None:
        champion_run = champion.tags.get(VersionTag.SOURCE_RUN_ID) or champion.run_id
        champion_images = _call(lambda: tracker.per_image(champion_run))
    decision = decide(
        source,
        champion,
        force,
        source_images=_call(lambda: tracker.per_image(run_id)),
        champion_images=champion_images,
        min_improvement=min_improvement,
    )

    if existing is not None:
        version = existing.version
        _call(
            lambda: _record_decision(
                client, model_name, version, source, decision, champion_version
            )
        )
        _call(lambda: _set_aliases(client, model_name, version, decision.promoted))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / "model"
            save_pyfunc_model(load_source_model(tracker, source), source, model_dir)
            version = _register(client, model_name, source, decision, champion_version, model_dir)
    decision = replace(decision, version=str(version))
    _print(model_name, decision)
    return decision


def check_model_name(model_name: str) -> None:
    # "/" and ":" MLflow refuses; "@" would make models:/NAME@ALIAS ambiguous
    if not model_name or any(c in model_name for c in "/:@"):
        raise HarnessError(
            f"invalid registered model name {model_name!r}: it cannot be empty or contain / : @"
        )


def read_source(tracker: Tracker, run_id: str) -> SourceRun:
    try:
        run = tracker.client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise HarnessError(f"no MLflow run {run_id!r} in {tracker.tracking_uri}") from None
        raise HarnessError(f"MLflow tracking: {first_line(error)}") from None
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    missing = [p for p in (Param.DEPTH, Param.BASE_CHANNELS, Param.IMAGE_SIZE) if p not in params]
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
        depth, base_channels, image_size = (
            int(params[p]) for p in (Param.DEPTH, Param.BASE_CHANNELS, Param.IMAGE_SIZE)
        )
    except ValueError:
        raise HarnessError(f"run {run_id} has non-integer model params") from None
    names = {
        a.path
        for a in _call(lambda: tracker.client.list_artifacts(run_id, Artifact.CHECKPOINT_DIR))
    }
    if f"{Artifact.CHECKPOINT_DIR}/{Artifact.CHECKPOINT_FILE}" not in names:
        raise HarnessError(
            f"run {run_id} has no checkpoint ({Artifact.CHECKPOINT_DIR}/{Artifact.CHECKPOINT_FILE})"
        )
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


def load_source_model(tracker: Tracker, source: SourceRun) -> UNet:
    """The run's checkpoint (a plain state dict, read with weights_only=True) in a CPU UNet."""
    try:
        model = UNet(source.depth, source.base_channels)
    except ValueError as error:
        raise HarnessError(f"run {source.run_id}: {error}") from None
    _call(lambda: tracker.load_checkpoint_into(source.run_id, model))
    return model.eval()


def signature(image_size: int) -> ModelSignature:
    float32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, 3, image_size, image_size))]),
        outputs=Schema([TensorSpec(float32, (-1, 1, image_size, image_size))]),
    )


def input_example(image_size: int) -> np.ndarray:
    # a flat mid-grey batch: short to store as JSON, still a valid input
    return np.full((EXAMPLE_BATCH, 3, image_size, image_size), 0.5, np.float32)


def save_pyfunc_model(unet: UNet, source: SourceRun, path: Path) -> None:
    """Export `Sequential(unet, Sigmoid)` as an MLflow PyTorch model ("pt2") at `path`."""
    probabilities = nn.Sequential(unet, nn.Sigmoid()).eval()
    try:
        mlflow.pytorch.save_model(
            probabilities,
            str(path),
            signature=signature(source.image_size),
            input_example=input_example(source.image_size),
            serialization_format="pt2",
            # explicit: inferring them would load the model in a subprocess (seconds)
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
            ],
            metadata={
                Param.IMAGE_SIZE: source.image_size,
                "output": "foreground probability per pixel, float32 (N, 1, S, S) in [0, 1]",
                Param.DEPTH: source.depth,
                Param.BASE_CHANNELS: source.base_channels,
                "source_run_id": source.run_id,
                "dataset_fingerprint": source.fingerprint,
            },
        )
    except Exception as error:  # torch.export failures are many types
        raise HarnessError(
            f"run {source.run_id}: cannot export the model: {first_line(error)}"
        ) from None
    # The graph was exported on the CPU and an exported graph cannot move; without this, pyfunc
    # would load it on "cuda" wherever CUDA is available, and fail.
    mlmodel = Model.load(str(path))
    mlmodel.flavors[mlflow.pyfunc.FLAVOR_NAME][mlflow.pyfunc.MODEL_CONFIG] = {"device": "cpu"}
    mlmodel.save(str(path / MLMODEL_FILE))


def decide(
    source: SourceRun,
    champion,
    force: bool,
    *,
    source_images: dict[str, float] | None = None,
    champion_images: dict[str, float] | None = None,
    min_improvement: float = 0.0,
) -> Promotion:
    """Whether a new version of `source` takes the champion alias (version filled in later).

    On the same data, the challenger must beat the champion image by image: the 90% paired
    bootstrap interval of its per-image test IoU minus the champion's must lie above
    `min_improvement`. A difference inside the noise of the test split leaves the champion.
    """
    if champion is None:
        return Promotion("", True, "first champion", source.score, None)
    name = f"champion v{champion.version}"
    champion_score = _float_or_none(champion.tags.get(VersionTag.SCORE))

    def verdict(better: bool, reason: str, difference=None) -> Promotion:
        if not better and force:
            reason = f"forced: {reason}"
        return Promotion("", better or force, reason, source.score, champion_score, difference)

    if champion.tags.get(VersionTag.DATASET_FINGERPRINT) != source.fingerprint:
        if force:
            return verdict(True, f"forced over {name}, which was trained on other data")
        return verdict(False, f"not compared: {name} was trained on other data")
    if champion_score is None:
        if force:
            return verdict(True, f"forced over {name}, which has no {SCORE_METRIC}")
        return verdict(False, f"not compared: {name} has no {SCORE_METRIC}")
    if champion_images is None or source_images is None:
        which = name if champion_images is None else "this model"
        return verdict(False, f"not compared: {which} has no per-image test scores")
    if champion_images.keys() != source_images.keys():
        return verdict(False, f"not compared: {name} was scored on other test images")
    names = sorted(source_images)
    difference = paired_bootstrap(
        np.array([source_images[n] for n in names]), np.array([champion_images[n] for n in names])
    )
    mine, theirs = _format_pair(source.score, champion_score)
    interval = (
        f"per-image difference {difference.mean:+.4f}, {difference.level:.0%} interval "
        f"[{difference.low:+.4f}, {difference.high:+.4f}]"
    )
    if difference.low > min_improvement:
        reason = f"better beyond the noise: {mine} vs {theirs} ({name}); {interval} > {min_improvement:g}"
        return verdict(True, reason, difference)
    reason = f"not better beyond the noise: {mine} vs {theirs} ({name}); {interval} not > {min_improvement:g}"
    return verdict(False, reason, difference)


def version_tags(
    source: SourceRun, decision: Promotion, champion_version: str | None
) -> dict[str, str]:
    tags = {
        VersionTag.SOURCE_RUN_ID: source.run_id,
        VersionTag.DATASET_FINGERPRINT: source.fingerprint,
        **{VersionTag.PARAM_PREFIX + k: v for k, v in sorted(source.params.items())},
        **{
            VersionTag.METRIC_PREFIX + k: repr(v)
            for k, v in sorted(source.metrics.items())
            if _is_final(k)
        },
        **decision_tags(decision, champion_version),
    }
    for key in (VersionTag.STUDY, VersionTag.TRIAL_NUMBER):
        if key in source.tags:
            tags[key] = source.tags[key]
    return tags


def decision_tags(decision: Promotion, champion_version: str | None) -> dict[str, str]:
    difference = decision.difference
    compared = {}
    if difference is not None:
        compared = {
            VersionTag.DIFF_MEAN: repr(difference.mean),
            VersionTag.DIFF_CI_LOW: repr(difference.low),
            VersionTag.DIFF_CI_HIGH: repr(difference.high),
        }
    return {
        **compared,
        VersionTag.SCORE: repr(decision.score),
        VersionTag.CHAMPION_SCORE: "none"
        if decision.champion_score is None
        else repr(decision.champion_score),
        VersionTag.CHAMPION_VERSION: champion_version or "none",
        VersionTag.PROMOTED: "true" if decision.promoted else "false",
        VersionTag.DECISION: decision.reason,
    }


def description(source: SourceRun, decision: Promotion) -> str:
    champion = "none" if decision.champion_score is None else f"{decision.champion_score:.4f}"
    verdict = "promoted to champion" if decision.promoted else "stays challenger"
    return (
        f"UNet depth {source.depth}, {source.base_channels} base channels, {source.image_size}px, "
        f"from {source.origin}; data fingerprint {source.fingerprint}. "
        f"Test mean IoU {decision.score:.4f}, champion's {champion}: {verdict} "
        f"({decision.reason}). pyfunc predict: float32 (N, 3, {source.image_size}, "
        f"{source.image_size}) in [0, 1] -> foreground probability (N, 1, {source.image_size}, "
        f"{source.image_size})."
    )


def format_promotion(model_name: str, promotion: Promotion) -> str:
    """One line for the user: the version, the decision, its reason and both scores."""
    verdict = "is the champion" if promotion.promoted else "stays challenger"
    champion = "none" if promotion.champion_score is None else f"{promotion.champion_score:.4f}"
    return (
        f"registered model {model_name!r} version {promotion.version} {verdict}: "
        f"{promotion.reason} [test IoU {promotion.score:.4f}, champion's {champion}]"
    )


# --- store operations -----------------------------------------------------------------------


def _register(
    client,
    model_name: str,
    source: SourceRun,
    decision: Promotion,
    champion_version: str | None,
    model_dir: Path,
) -> str:
    """Log the saved model, create the version with its tags and aliases; all or nothing."""
    created_model, logged_model_id, version = False, None, None
    try:
        logged = client.create_logged_model(
            source.experiment_id,
            name=LOGGED_MODEL_NAME,
            source_run_id=source.run_id,
            params=source.params,
        )
        logged_model_id = logged.model_id
        mlmodel = Model.load(str(model_dir))
        mlmodel.model_id = mlmodel.model_uuid = logged.model_id
        mlmodel.run_id = source.run_id
        mlmodel.artifact_path = logged.artifact_location
        mlmodel.save(str(model_dir / MLMODEL_FILE))
        client.log_model_artifacts(logged.model_id, str(model_dir))
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        client.log_outputs(source.run_id, [LoggedModelOutput(logged.model_id, step=0)])
        if not _model_exists(client, model_name):
            try:
                client.create_registered_model(
                    model_name,
                    description="UNet foreground-vs-background segmentation from harness. pyfunc "
                    "predict: float32 images (N, 3, S, S) in [0, 1] -> float32 foreground "
                    "probabilities (N, 1, S, S); S is image_size in the model metadata.",
                )
                created_model = True
            except MlflowException:
                if not _model_exists(client, model_name):  # not a lost race: a real error
                    raise
        version = client.create_model_version(
            model_name,
            # the artifact location, not models:/<model_id>: MLflow 3.17's SQL registry resolves
            # the latter through the process-global tracking URI, not this client's
            source=logged.artifact_location,
            run_id=source.run_id,
            tags=version_tags(source, decision, champion_version),
            description=description(source, decision),
            model_id=logged.model_id,
        ).version
        client.set_logged_model_tags(
            logged.model_id,
            {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": model_name, "version": version}])},
        )
        _set_aliases(client, model_name, version, decision.promoted)  # champion last
        return version
    except BaseException as error:
        _undo(client, model_name, created_model, logged_model_id, version)
        if isinstance(error, MlflowException):
            raise HarnessError(f"cannot register the model: {first_line(error)}") from None
        raise


def _undo(
    client, model_name: str, created_model: bool, logged_model_id: str | None, version
) -> None:
    steps = []
    if version is not None:
        steps.append(lambda: client.delete_model_version(model_name, version))
    if created_model:
        steps.append(lambda: client.delete_registered_model(model_name))
    if logged_model_id is not None:
        steps.append(lambda: client.delete_logged_model(logged_model_id))
    for step in steps:
        try:
            step()
        except Exception:  # best effort: report the original error, not the clean-up's
            pass


def _set_aliases(client, model_name: str, version: str, promoted: bool) -> None:
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)


def _record_decision(
    client,
    model_name: str,
    version: str,
    source: SourceRun,
    decision: Promotion,
    champion_version: str | None,
) -> None:
    for key, value in decision_tags(decision, champion_version).items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=description(source, decision))


def _version_of_run(client, model_name: str, run_id: str):
    if not _model_exists(client, model_name):
        return None
    versions = client.search_model_versions(
        f"name = '{_quote(model_name)}' and run_id = '{_quote(run_id)}'"
    )
    versions = [v for v in versions if v.tags.get(VersionTag.SOURCE_RUN_ID) == run_id]
    return max(versions, key=lambda v: int(v.version), default=None)


def _champion(client, model_name: str):
    if not _model_exists(client, model_name):
        return None
    aliases = client.get_registered_model(model_name).aliases
    if CHAMPION not in aliases:
        return None
    return client.get_model_version_by_alias(model_name, CHAMPION)


def _model_exists(client, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def _call(operation):
    """A store call; its MlflowException becomes one line for the user."""
    try:
        return operation()
    except MlflowException as error:
        raise HarnessError(f"model registry: {first_line(error)}") from None


# --- small helpers ---------------------------------------------------------------------------


def _is_final(metric: str) -> bool:
    return (
        metric.startswith(("test_", "final_val_", "final_train_")) or metric == Metric.BEST_VAL_IOU
    )


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _format_pair(a: float, b: float) -> tuple[str, str]:
    """Both scores with enough digits to tell them apart (4 usually do)."""
    for digits in range(4, 12):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right or digits == 11:
            return left, right
    return repr(a), repr(b)


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def _print(model_name: str, promotion: Promotion) -> None:
    print(format_promotion(model_name, promotion), flush=True)
