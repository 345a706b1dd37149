"""The Optuna side of a search: storage, sampler, pruner, and opening a study to resume it."""

import optuna
from optuna.trial import TrialState

from harness.errors import HarnessError
from harness.spaces import StudySettings

DEFAULT_STORAGE = "sqlite:///optuna.db"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)

# Study user attributes that must not change when a study is resumed: trials trained on other
# data or for another epoch budget would not be comparable.
IDENTITY_ATTRS = ("space", "dataset", "dataset_fingerprint", "image_size", "max_epochs")
PARENT_RUN_ATTR = "mlflow_parent_run_id"


def make_sampler(settings: StudySettings, seed: int) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.sampler_startup_trials)


def make_pruner(name: str, settings: StudySettings, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials,
            n_warmup_steps=settings.pruner_warmup_epochs,
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise HarnessError(f"unknown pruner {name!r}: use median, hyperband, asha or none")


def open_study(
    name: str,
    storage: str,
    settings: StudySettings,
    identity: dict[str, object],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it to resume; refuse to resume it on other data or settings."""
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=settings.direction,
            load_if_exists=True,
        )
    except (ValueError, ImportError) as error:
        raise HarnessError(f"cannot use Optuna storage {storage!r}: {error}") from None
    except Exception as error:  # SQLAlchemy's OperationalError and friends
        reason = str(error).splitlines()[0]
        raise HarnessError(f"cannot open Optuna storage {storage!r}: {reason}") from None
    if study.direction.name.lower() != settings.direction:
        raise HarnessError(f"study {name!r} exists with direction {study.direction.name.lower()}")
    stored = study.user_attrs
    for key, value in identity.items():
        if key in stored and stored[key] != value:
            raise HarnessError(
                f"study {name!r} was run with {key}={stored[key]!r}, not {value!r}: "
                "use another --study name"
            )
        if key not in stored:
            study.set_user_attr(key, value)
    return study


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
