"""Every name the harness writes into MLflow and Optuna, defined here and nowhere else.

Params, metrics, run tags, roles, Optuna user attributes, artifact paths and the library state
names the harness compares against. docs/mlflow.md lists them for users; tests/test_names.py
keeps this module, `trainer.TrainConfig`, the space files and that page in agreement. This
module imports nothing, so that any part of the harness can use it.
"""

# where the stores are when no flag says otherwise: files in the working directory
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_STORAGE = "sqlite:///optuna.db"


class Param:
    """MLflow params. The hyperparameters are spelled as `TrainConfig`'s fields and the space
    files' keys: one word for one thing from the TOML file to the runs table."""

    DEPTH = "depth"
    BASE_CHANNELS = "base_channels"
    LR = "lr"
    BATCH_SIZE = "batch_size"
    PATIENCE = "patience"
    AUG_P = "aug_p"
    MAX_EPOCHS = "max_epochs"
    SEED = "seed"
    LR_SCHEDULE = "lr_schedule"  # constant or cosine
    IMAGE_SIZE = "image_size"
    DATASET = "dataset"
    PRECISION = "precision"  # the autocast dtype actually used: float32, bfloat16, float16
    COMPILED = "compiled"  # whether the steps ran through torch.compile
    # a study's identity (study user attributes and parent run params): what a resumed study
    # may not change, since trials on other data or for another epoch budget are not comparable
    SPACE = "space"
    DATASET_FINGERPRINT = "dataset_fingerprint"
    # a transfer run's: the source model, the feature recipe, the classifier and its C
    MODEL = "model"
    FEATURES = "features"
    LEVELS = "levels"
    CLASSIFIER = "classifier"
    C = "C"


def split_images_param(split: str) -> str:
    """A transfer run's split size: `train_images`, ..."""
    return f"{split}_images"


def species_metric(split: str, score: str, species: str | None = None) -> str:
    """A transfer run's score on a split, overall or on one species: `test_accuracy`,
    `test_balanced_accuracy`, `test_accuracy_cat`."""
    return f"{split}_{score}" + (f"_{species}" if species else "")


class Metric:
    # per epoch, step = epoch
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
    # on a study's parent run
    BEST_TRIAL = "best_trial"
    # ... after confirmation and refit (harness.search.confirm)
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
SPLITS = ("train", "val", "test")
SCORES = ("accuracy", "iou", "fg_iou")  # the fields of metrics.Scores


def final_metric(split: str, score: str) -> str:
    """Name of a score of the restored best weights on a whole split: e.g. `test_iou`.

    The report's table uses `final_train_iou`, `final_val_iou`, `test_iou`: the per-epoch
    `train_iou` / `val_iou` series keep their plain names, so the final train and validation
    scores get a prefix; the test split is only ever scored once, so it needs none.
    """
    return f"{split}_{score}" if split == "test" else f"final_{split}_{score}"


TEST_IOU = final_metric("test", "iou")


def study_best_metric(metric: str) -> str:
    """The study's parent run's name for its best trial value: `study_best_val_iou`, not the
    trials' `best_val_iou`, so that sorting the runs table by that column lists trials only."""
    return f"study_best_{metric}"


def trials_metric(state: str) -> str:
    """The parent run's count of trials in an Optuna state: `trials_complete`, ..."""
    return f"trials_{state.lower()}"


def confirmed_metric(trial_number: int, metric: str, statistic: str) -> str:
    """A confirmed configuration's figure on the parent run: `confirm_t007_val_iou_mean`."""
    return f"confirm_t{trial_number:03d}_{metric}_{statistic}"


SEARCH_STAGE = "search"  # the trials; the final stage's are Role.CONFIRM and Role.REFIT


def stage_epochs_metric(stage: str) -> str:
    """Epochs trained by a stage of the search (search, confirm, refit): `epochs_search`."""
    return f"epochs_{stage}"


class Role:
    """Values of `Tag.ROLE`: what a run is."""

    TRAIN = "train"  # a harness.train run
    STUDY = "study"  # a search's parent run
    TRIAL = "trial"  # one trial of the search
    CONFIRM = "confirm"  # a top trial's configuration retrained with another seed
    REFIT = "refit"  # the winning configuration retrained on train + validation
    TRANSFER = "transfer"  # a harness.transfer run
    PROJECT = "project"  # `mlflow run`'s own run, hung under the harness's


class Tag:
    """MLflow run tags."""

    ROLE = "harness.role"  # a Role
    STUDY = "harness.study"
    TRIAL_NUMBER = "harness.trial_number"
    TRIAL_STATE = "harness.trial_state"  # Optuna's state name: COMPLETE, PRUNED, FAIL
    STOP_REASON = "harness.stop_reason"
    FAIL_REASON = "harness.fail_reason"
    DATASET_FINGERPRINT = "harness.dataset_fingerprint"
    VERSION = "harness.version"  # the package version that made the run
    # on a study's parent run
    SUMMED_UP = "harness.summed_up"  # the study state the parent run's summary is of
    # the best trial's params, as tags: params are immutable in MLflow, the best changes on resume
    BEST_PARAM_PREFIX = "best."
    BEST_TRIAL_NUMBER = "best.trial_number"
    BEST_RUN_ID = "best.run_id"
    # on a transfer run: the run whose encoder it reuses, and the model version it came from
    SOURCE_RUN_ID = "harness.source_run_id"
    MODEL_NAME = "harness.model_name"
    MODEL_VERSION = "harness.model_version"


class TrialAttr:
    """Optuna user attributes of a trial: how each side finds the other, why a trial ended."""

    RUN_ID = "mlflow_run_id"
    STOP_REASON = "stop_reason"
    FAIL_REASON = "fail_reason"
    BEST_EPOCH = "best_epoch"
    EPOCHS_RUN = "epochs_run"
    # a job of the final stage (a waiting trial of `<study>` + FINAL_STUDY_SUFFIX): what it trains
    JOB_ROLE = "role"  # Role.CONFIRM or Role.REFIT
    JOB_TRIAL = "trial_number"  # the study's trial whose configuration it trains
    JOB_SEED = "seed"
    JOB_EPOCHS = "epochs"  # the epoch budget; a refit trains exactly this many
    JOB_CHANGES = "changes"  # a refit's settings other than its trial's: the space's [refit]
    TEST_IOU = TEST_IOU


class StudyAttr:
    """Optuna user attributes of a study."""

    PARENT_RUN = "mlflow_parent_run_id"
    ENQUEUED = "enqueued"  # the space's [[enqueue]] configurations the study has been given


FINAL_STUDY_SUFFIX = ".final"  # the companion study that holds the final stage's jobs

# Optuna's trial state names and MLflow's run statuses, as the libraries spell them
COMPLETE, PRUNED, FAIL = "COMPLETE", "PRUNED", "FAIL"
FINISHED, FAILED, KILLED, RUNNING = "FINISHED", "FAILED", "KILLED", "RUNNING"


class Artifact:
    """Artifact paths in a run."""

    CHECKPOINT_DIR = "checkpoint"
    CHECKPOINT_FILE = "model.pt"
    FIGURES_DIR = "figures"
    # each test image's mean IoU: what the registry's paired comparison of two models reads
    PER_IMAGE_FILE = "evaluation/test_per_image.json"
    TRIALS_CSV = "trials.csv"  # on a study's parent run
    CONFIRMATION_CSV = "confirmation.csv"  # ... one row per run of the final stage
    CONFUSION_FIGURE = "confusion_matrix.png"  # on a transfer run (under FIGURES_DIR)
    CONFUSION_JSON = "confusion_matrix.json"
    REPORT_DIR = "report"  # harness.report's files, on the study's parent run


# the checkpoint's path among a run's artifacts, as MLflow lists and downloads it
CHECKPOINT_PATH = f"{Artifact.CHECKPOINT_DIR}/{Artifact.CHECKPOINT_FILE}"


class Column:
    """Columns of the parent run's `Artifact.CONFIRMATION_CSV`: one row per final-stage run."""

    TRIAL = "trial"  # the trial whose configuration the run trains
    ROLE = "role"  # Role.CONFIRM, Role.REFIT, or Role.TRIAL for the trial's own run
    SEED = "seed"
    VALUE = "value"  # the validation metric (none for a refit)
    TEST_IOU = TEST_IOU
    BEST_EPOCH = Metric.BEST_EPOCH
    EPOCHS_RUN = Metric.EPOCHS_RUN
    WINNER = "winner"  # whether the configuration won the confirmation
    CHANGES = "changes"  # a refit's settings other than its trial's, as `name=value; ...`
    RUN_ID = "run_id"


class FigureName:
    """Figures under `Artifact.FIGURES_DIR`: of every training run, and of a study's parent
    run (Optuna's plots)."""

    LEARNING_CURVES = "learning_curves.png"
    OPTIMIZATION_HISTORY = "optimization_history.png"
    INTERMEDIATE_VALUES = "intermediate_values.png"
    PARAM_IMPORTANCES = "param_importances.png"
    PARALLEL_COORDINATE = "parallel_coordinate.png"


def predictions_figure(split: str) -> str:
    """A training run's predictions on a few images of a split: `val_predictions.png`."""
    return f"{split}_predictions.png"


# --- the Model Registry ---------------------------------------------------------------------

DEFAULT_REGISTERED_MODEL = "harness-unet"
CHAMPION = "champion"  # the alias of the model in use
CHALLENGER = "challenger"  # the alias of the latest version registered
LOGGED_MODEL_NAME = "unet"
SCORE_METRIC = TEST_IOU  # what the promotion compares


class VersionTag:
    """Tags on a registered model version."""

    SOURCE_RUN_ID = Tag.SOURCE_RUN_ID  # the run it was made from
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
    TRANSFER_RUN = "harness.transfer_run_id"  # the latest transfer run on this version
    # the source run's params and metrics, copied
    PARAM_PREFIX = "param."
    METRIC_PREFIX = "metric."


# --- experiments of the single-run commands -------------------------------------------------

TRAIN_EXPERIMENT = "harness-train"
TRANSFER_EXPERIMENT = "harness-transfer"


# MLflow's UI shows the classic training-runs table (nested runs, compare view) for this kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow has no run status for "stopped early on purpose": a pruned trial's run ends FINISHED
# (it did what was asked) and its name says it was pruned, which the runs list shows.
PRUNED_NAME_SUFFIX = " (pruned)"
# the dataset inputs' context tags, per split
DATASET_CONTEXTS = {"train": "train", "val": "validation", "test": "test"}
