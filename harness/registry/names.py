"""The registry's names, defined once: the registered model and its aliases, the logged
model, the score the promotion compares, and the tags on a model version."""

from harness.tracking import Tag, final_metric

DEFAULT_REGISTERED_MODEL = "harness-unet"
CHAMPION = "champion"
CHALLENGER = "challenger"
LOGGED_MODEL_NAME = "unet"
SCORE_METRIC = final_metric("test", "iou")  # test_iou


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
