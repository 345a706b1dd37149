"""The Optuna side of a search: storage, sampler, pruner, and opening a study to resume it."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.errors import HarnessError, user_error
from harness.locks import creation_lock, redacted, sqlite_path, with_installed_driver
from harness.names import StudyAttr
from harness.search.spaces import StudySettings

DEFAULT_HEARTBEAT_S = 30
# A trial whose worker has been silent this many heartbeats is dead: fail it and retry it.
GRACE_HEARTBEATS = 4
MAX_RETRIES = 2
# SQLite serialises writers; waiting for the lock beats failing a trial on "database is locked".
SQLITE_BUSY_TIMEOUT_S = 60
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def make_sampler(settings: StudySettings, seed: int) -> optuna.samplers.BaseSampler:
    if settings.sampler == "random":
        return PerTrialSeedRandomSampler(seed=seed)
    return PerTrialSeedTPESampler(seed=seed, n_startup_trials=settings.sampler_startup_trials)


def trial_seed(seed: int, trial_number: int) -> int:
    return int(np.random.SeedSequence([seed, trial_number]).generate_state(1)[0])


class _PerTrialSeed:
    """A sampler whose random state is re-seeded from (seed, trial number) before each trial.

    A sampler seeded once per process draws the same sequence in every process: workers
    started together, or a study resumed later, would repeat the first trials' parameters
    (all of them during the random start-up trials). Trial numbers are unique in the storage,
    so seeding from them keeps one worker reproducible and makes workers differ.
    """

    def __init__(self, *, seed: int, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        state = trial_seed(self._base_seed, trial.number)
        # the pinned Optuna's samplers keep their numpy RandomState in `_rng`; TPE draws its
        # start-up trials from an inner RandomSampler
        for sampler in (self, getattr(self, "_random_sampler", None)):
            if sampler is not None:
                sampler._rng.rng.seed(state)
        super().before_trial(study, trial)


class PerTrialSeedTPESampler(_PerTrialSeed, optuna.samplers.TPESampler):
    pass


class PerTrialSeedRandomSampler(_PerTrialSeed, optuna.samplers.RandomSampler):
    pass


def make_pruner(
    name: str, settings: StudySettings, max_epochs: int, train_images: int | None = None
) -> optuna.pruners.BasePruner:
    # steps are 1-based epochs: the first epoch that may be pruned is the one after the warm-up
    first_prunable = settings.pruner_warmup_epochs + 1
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=settings.pruner_startup_trials, n_warmup_steps=first_prunable
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=first_prunable,
            max_resource=max_epochs,
            reduction_factor=settings.reduction_factor,
        )
    if name == "asha":
        # rungs at first_rung * reduction_factor**k epochs; each keeps the top 1/reduction_factor
        first_rung = settings.pruner_warmup_epochs + settings.first_rung(train_images, max_epochs)
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_rung, reduction_factor=settings.reduction_factor
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise HarnessError(f"unknown pruner {name!r}: use median, hyperband, asha or none")


def make_storage(
    url: str,
    heartbeat_s: int = DEFAULT_HEARTBEAT_S,
    on_dead_trial: Callable[[FrozenTrial], None] | None = None,
) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats: a killed worker's trial is failed, `on_dead_trial` is told
        (to close its MLflow run) and a retry with the same parameters is queued, once per death
    (at most MAX_RETRIES retries of one configuration).

        Two workers may both fail the same stale trial: SQLite has no row locks, so both see it
        RUNNING and both run this callback. Under the storage's lock, the second finds the first's
        retry and does nothing; else the study would train those parameters twice.
    """
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)

    def dead_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        with creation_lock(url):
            if is_retried(study, trial):
                return
            if on_dead_trial is not None:
                on_dead_trial(trial)
            retry(study, trial)

    engine_kwargs = (
        {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}} if url.startswith("sqlite") else {}
    )
    try:
        with creation_lock(url, what="Optuna storage"):
            return optuna.storages.RDBStorage(
                with_installed_driver(url),
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_s,
                grace_period=GRACE_HEARTBEATS * heartbeat_s,
                heartbeat_stale_trial_callback=dead_trial,
            )
    except HarnessError:
        raise
    except (ValueError, ImportError) as error:
        raise user_error(f"cannot use Optuna storage {redacted(url)!r}", error) from None
    except Exception as error:  # SQLAlchemy's OperationalError and friends
        raise user_error(f"cannot open Optuna storage {redacted(url)!r}", error) from None


def is_retried(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether a retry of `trial` is in the study: a trial whose retry history ends with it."""
    history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history
    return any(history(other)[-1:] == [trial.number] for other in study.get_trials(deepcopy=False))


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage,
    settings: StudySettings,
    identity: dict[str, object],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    """Create the study, or load it to resume; refuse to resume it on other data or settings."""
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=settings.direction,
        load_if_exists=True,
    )
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
    if study.metric_names != [settings.metric]:  # else optuna-dashboard says "Objective 0"
        study.set_metric_names([settings.metric])
    return study


def enqueue_known(study: optuna.Study, configurations) -> None:
    """Enqueue each of the space's known-good configurations the study has not had yet.

    Called under the creation lock, so that workers starting together enqueue each once; a
    configuration added to the space file later is enqueued when the study is resumed.
    """
    given = study.user_attrs.get(StudyAttr.ENQUEUED, [])
    missing = [params for params in configurations if params not in given]
    for params in missing:
        study.enqueue_trial(params)
    if missing:
        study.set_user_attr(StudyAttr.ENQUEUED, [*given, *missing])


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def is_surplus(study: optuna.Study, trial_number: int, target: int) -> bool:
    """True when `target` trials numbered below this one are already finished or running.

    Workers share a study only through its storage; each checks its new trial against the
    others before training, so that together they stop at exactly `target` finished trials
    instead of each finishing the trial it had started when the count was reached.
    """
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    earlier = [t for t in study.get_trials(deepcopy=False, states=alive) if t.number < trial_number]
    return len(earlier) >= target


def load_study(storage_url: str, name: str) -> optuna.Study:
    """An existing study, for commands that read one (report, promote)."""
    path = sqlite_path(storage_url)
    # Optuna would create an empty database here; a typo deserves an error instead.
    if path is not None and not Path(path).is_file():
        raise HarnessError(f"no Optuna storage at {path} (--storage {storage_url})")
    storage = make_storage(storage_url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
        known = ", ".join(repr(n) for n in names) or "none"
        raise HarnessError(
            f"no study {name!r} in {redacted(storage_url)} (studies: {known})"
        ) from None
