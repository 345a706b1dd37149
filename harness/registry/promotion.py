"""`promote_run`: register a finished training run's model and decide whether it is champion.

The steps, in order: check the run (`source`), find its version and the champion (`store`),
decide (`policy`), then either rewrite the decision on the run's existing version or export
the model (`export`) and register a new version (`store`). The decision, both scores and the
interval are written on the version as tags and in its description.
"""

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

from harness.errors import user_error
from harness.metrics import PairedDifference
from harness.names import DEFAULT_REGISTERED_MODEL, SCORE_METRIC, Metric, VersionTag
from harness.registry import export, store
from harness.registry.policy import Challenger, Champion, Decision, decide
from harness.registry.source import SourceRun, read_source
from harness.registry.uris import check_model_name
from harness.tracking import Tracker


@dataclass(frozen=True)
class Promotion:
    version: str
    promoted: bool  # took (or already holds) the champion alias
    reason: str  # one human sentence
    score: float  # this version's test_iou
    champion_score: float | None  # the champion's test_iou before this decision
    difference: PairedDifference | None = None  # per-image test IoU, this minus the champion

    @classmethod
    def of(cls, version: str, decision: Decision) -> "Promotion":
        return cls(
            version,
            decision.promoted,
            decision.reason,
            decision.score,
            decision.champion_score,
            decision.difference,
        )


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
    existing = store.call(lambda: store.version_of_run(client, model_name, run_id))
    holder = store.call(lambda: store.champion(client, model_name))
    if existing is not None and holder is not None and holder.version == existing.version:
        promotion = Promotion(
            str(existing.version), True, "already the champion", source.score, source.score
        )
        _print(model_name, promotion)
        return promotion
    challenger = Challenger(
        source.score, source.fingerprint, store.call(lambda: tracker.per_image(run_id))
    )
    decision = decide(
        challenger,
        None if holder is None else champion_of(tracker, holder),
        score_name=SCORE_METRIC,
        min_improvement=min_improvement,
        force=force,
    )
    champion_version = None if holder is None else str(holder.version)
    tags = decision_tags(decision, champion_version)
    if existing is not None:
        version = str(existing.version)
        text = description(source, decision)
        store.call(lambda: store.record_decision(client, model_name, version, tags, text))
        store.call(lambda: store.set_aliases(client, model_name, version, decision.promoted))
    else:
        version = register(tracker, model_name, source, decision, version_tags(source) | tags)
    promotion = Promotion.of(version, decision)
    _print(model_name, promotion)
    return promotion


def champion_of(tracker: Tracker, version) -> Champion:
    """What the policy compares of the champion's version, as recorded on it and its run."""
    run_id = store.source_run_id(version)
    return Champion(
        version=str(version.version),
        score=store.recorded_score(version),
        fingerprint=version.tags.get(VersionTag.DATASET_FINGERPRINT),
        per_image=store.call(lambda: tracker.per_image(run_id)),
    )


def register(
    tracker: Tracker, model_name: str, source: SourceRun, decision: Decision, tags: dict[str, str]
) -> str:
    """Export the run's model and register it as a new version; all or nothing."""
    unet = export.load_source_model(tracker, source)
    try:
        with export.logged_model(tracker.client, source, unet) as logged:
            return store.register_version(
                tracker.client,
                model_name,
                logged,
                tags=tags,
                description=description(source, decision),
                promoted=decision.promoted,
            )
    except MlflowException as error:
        raise user_error("cannot register the model", error) from None


# --- what a version records ------------------------------------------------------------------


def version_tags(source: SourceRun) -> dict[str, str]:
    """A new version's record of its source run: run, data, params and final metrics."""
    tags = {
        VersionTag.SOURCE_RUN_ID: source.run_id,
        VersionTag.DATASET_FINGERPRINT: source.fingerprint,
        **{VersionTag.PARAM_PREFIX + k: v for k, v in sorted(source.params.items())},
        **{
            VersionTag.METRIC_PREFIX + k: repr(v)
            for k, v in sorted(source.metrics.items())
            if _is_final(k)
        },
    }
    for key in (VersionTag.STUDY, VersionTag.TRIAL_NUMBER):
        if key in source.tags:
            tags[key] = source.tags[key]
    return tags


def decision_tags(decision: Decision, champion_version: str | None) -> dict[str, str]:
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


def description(source: SourceRun, decision: Decision) -> str:
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


def _is_final(metric: str) -> bool:
    return (
        metric.startswith(("test_", "final_val_", "final_train_")) or metric == Metric.BEST_VAL_IOU
    )


def _print(model_name: str, promotion: Promotion) -> None:
    print(format_promotion(model_name, promotion), flush=True)
