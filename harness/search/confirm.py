"""After the trials: confirm the best configurations with more seeds, refit the winner.

A study ranks trials by one training run each, and one run of a configuration moves with its
seed by about as much as the top trials differ (docs/confirm.md). So once the study has its
trials, the configurations of its K best complete trials are trained again with N more seeds
each, unpruned, with their own early stopping; the winner is the configuration with the best
mean validation metric over its 1 + N runs. The winner is then refit on train + validation for
the median of its runs' best epochs, its learning rate annealed to zero over them, with the
space's `[refit]` values in place of its trial's (a wider model, say), and scored on test:
that model is the one registered.

The runs are jobs of a companion Optuna study, `<study>.final`, in the same storage: each job
is a waiting trial whose user attributes say what it trains. A worker takes a waiting trial
under the storage's lock (so each goes to one worker), heartbeats fail the job of a killed
worker and retry it, and a re-run of the command enqueues what is missing from what is
recorded. So with several workers no run is
trained twice, and a stage cut short by a crash or Ctrl-C finishes when the command is re-run.
The value of a job's trial is its validation metric (confirmation) or test mean IoU (refit).
"""

import math
import statistics
import sys
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import optuna
from optuna.storages._heartbeat import BaseHeartbeat  # the pinned Optuna keeps it private
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from harness.data import Splits
from harness.devices import device_for_trial
from harness.locks import creation_lock
from harness.names import (
    COMPLETE,
    FAIL,
    FAILED,
    FINAL_STUDY_SUFFIX,
    FINISHED,
    KILLED,
    SEARCH_STAGE,
    TEST_IOU,
    Column,
    Metric,
    Role,
    Tag,
    TrialAttr,
    confirmed_metric,
)
from harness.runs import load_run_model, log_evaluation, train_tracked
from harness.search.objective import trial_value
from harness.search.spaces import SearchSpace
from harness.stopping import STOP_REASONS, stop_reason
from harness.tracking import Tracker

# The refit has no epoch to select, so it keeps its last: annealed, those weights have settled,
# where at a constant rate they are one noisy step of the curve (docs/confirm.md has the figures)
REFIT_LR_SCHEDULE = "cosine"

# user attributes of a job's trial: what it trains


@dataclass(frozen=True)
class FinalSettings:
    confirm_top: int = 3  # K: configurations confirmed; 0 turns confirmation off
    confirm_seeds: int = 2  # N: more seeds for each
    refit: bool = True

    @property
    def confirms(self) -> bool:
        return self.confirm_top > 0 and self.confirm_seeds > 0

    @property
    def enabled(self) -> bool:
        return self.confirms or self.refit


@dataclass(frozen=True)
class Job:
    role: str
    trial_number: int
    seed: int
    epochs: int
    # (name, value) pairs, sorted: what the job trains other than its trial's configuration
    changes: tuple[tuple[str, object], ...] = ()

    def attrs(self) -> dict[str, object]:
        attrs = {
            TrialAttr.JOB_ROLE: self.role,
            TrialAttr.JOB_TRIAL: self.trial_number,
            TrialAttr.JOB_SEED: self.seed,
            TrialAttr.JOB_EPOCHS: self.epochs,
        }
        if self.changes:  # absent, as in the jobs of studies from before [refit]
            attrs[TrialAttr.JOB_CHANGES] = dict(self.changes)
        return attrs

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> "Job | None":
        attrs = trial.user_attrs
        if TrialAttr.JOB_ROLE not in attrs:
            return None  # a trial Optuna created when no job was left waiting
        return cls(
            attrs[TrialAttr.JOB_ROLE],
            attrs[TrialAttr.JOB_TRIAL],
            attrs[TrialAttr.JOB_SEED],
            attrs[TrialAttr.JOB_EPOCHS],
            job_changes(attrs.get(TrialAttr.JOB_CHANGES, {})),
        )


def job_changes(values: dict[str, object]) -> tuple[tuple[str, object], ...]:
    return tuple(sorted(values.items()))


def describe_changes(changes: Iterable[tuple[str, object]]) -> str:
    """`base_channels=32; ...`: a refit's changes as the record and the messages show them."""
    return "; ".join(f"{name}={value}" for name, value in changes)


def confirm_seed(seed: int, trial_number: int, repeat: int) -> int:
    """The training seed of the `repeat`-th (1-based) confirmation of a trial.

    The trial itself trained with `seed + trial_number`; these are drawn apart from every
    such seed, and stay the same on a re-run so that a resumed stage trains the same runs.
    """
    state = np.random.SeedSequence([seed, trial_number, repeat]).generate_state(1)[0]
    return int(state % 2**31)


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The k best complete trials, best first (ties: the earlier trial)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = -1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1
    return sorted(complete, key=lambda t: (sign * t.value, t.number))[:k]


@dataclass(frozen=True)
class Run:
    """One training of a confirmed configuration: the trial itself or a confirmation."""

    role: str  # Role.TRIAL or Role.CONFIRM
    seed: int
    value: float  # the study metric at the restored best epoch
    test_iou: float
    best_epoch: int
    epochs_run: int
    run_id: str


@dataclass(frozen=True)
class Confirmed:
    """A top trial's configuration and its runs (the trial's first)."""

    trial: FrozenTrial
    runs: list[Run]

    @property
    def values(self) -> list[float]:
        return [r.value for r in self.runs]

    @property
    def test_ious(self) -> list[float]:
        return [r.test_iou for r in self.runs]


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (nan for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def pick_winner(confirmed: list[Confirmed], maximize: bool) -> Confirmed:
    """The configuration with the best mean validation metric (ties: the better trial)."""
    sign = -1 if maximize else 1
    return min(enumerate(confirmed), key=lambda ic: (sign * mean_sd(ic[1].values)[0], ic[0]))[1]


def median_epoch(best_epochs: Iterable[int]) -> int:
    """The epochs a refit trains for runs that selected `best_epochs`: their median."""
    return max(1, round(statistics.median(best_epochs)))


def refit_epochs(winner: Confirmed) -> int:
    """The epochs the winner's runs selected: the median of their best epochs."""
    return median_epoch(r.best_epoch for r in winner.runs)


@dataclass(frozen=True)
class FinalResult:
    confirmed: list[Confirmed]  # best trial first
    winner: Confirmed
    refit: Run | None  # None with refit off, or when the refit failed
    refit_epochs: int | None
    refit_changes: tuple[tuple[str, object], ...] = ()  # the space's [refit] it was trained with

    def registered_run_id(self, maximize: bool) -> str:
        """The refit model; without one, the winner's run with the best validation metric."""
        if self.refit is not None:
            return self.refit.run_id
        sign = -1 if maximize else 1
        return min(self.winner.runs, key=lambda run: sign * run.value).run_id


def job_epochs(trial: FrozenTrial) -> int:
    """Epochs a trial of either study trained: recorded when complete, else its last report."""
    if TrialAttr.EPOCHS_RUN in trial.user_attrs:
        return int(trial.user_attrs[TrialAttr.EPOCHS_RUN])
    return max(trial.intermediate_values, default=0)


@dataclass
class JobRunner:
    """The objective of the final study: train what the job's attributes say, as a child run."""

    space: SearchSpace
    study: optuna.Study  # the search's study, whose trials the jobs retrain
    splits: Splits
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    device: str
    precision: str = "auto"
    compile_model: bool = False

    def __call__(self, trial: optuna.Trial) -> float:
        job = Job.of(trial)  # FinalStage._claim hands out waiting jobs only
        source = self.study.get_trials(deepcopy=False)[job.trial_number]
        config = self.space.config(source.params, seed=job.seed, max_epochs=job.epochs)
        refit = job.role == Role.REFIT
        if refit:
            config = replace(config, lr_schedule=REFIT_LR_SCHEDULE, **dict(job.changes))
        run_id = self.tracker.start_run(
            self.experiment_id,
            f"{job.role}-{job.trial_number:03d}" + ("" if refit else f"-s{job.seed}"),
            tags={
                Tag.ROLE: job.role,
                Tag.STUDY: self.study.study_name,
                Tag.TRIAL_NUMBER: str(job.trial_number),
            },
            parent_run_id=self.parent_run_id,
        )
        trial.set_user_attr(TrialAttr.RUN_ID, run_id)
        try:
            device = device_for_trial(self.device, trial.number)
            fit = train_tracked(
                self.tracker,
                run_id,
                config,
                self.splits,
                device,
                precision=self.precision,
                compile_model=self.compile_model,
                refit=refit,
            )
            names = ("train", "test") if refit else ("train", "val", "test")
            scores = log_evaluation(self.tracker, run_id, fit.model, self.splits, device, names)
        except KeyboardInterrupt as stop:
            reason = stop_reason(stop)
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            self._end(run_id, FAIL, KILLED, {Tag.FAIL_REASON: reason})
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            self._end(run_id, FAIL, FAILED, {Tag.FAIL_REASON: reason})
            tqdm.write(f"{job.role} of trial {job.trial_number} failed: {reason}", file=sys.stderr)
            raise
        trial.set_user_attr(TrialAttr.TEST_IOU, scores["test"].iou)
        trial.set_user_attr(TrialAttr.BEST_EPOCH, fit.best_epoch)
        trial.set_user_attr(TrialAttr.EPOCHS_RUN, fit.epochs_run)
        self._end(run_id, COMPLETE, FINISHED, {})
        return scores["test"].iou if refit else trial_value(fit, self.space.study.metric)

    def _end(self, run_id: str, state: str, status: str, tags: dict[str, str]) -> None:
        self.tracker.log(run_id, tags={Tag.TRIAL_STATE: state, **tags})
        self.tracker.end_run(run_id, status)


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat while it runs, as `Study.optimize` does for its trials, so
    that a killed worker's job is failed and retried."""
    if not isinstance(storage, BaseHeartbeat) or storage.get_heartbeat_interval() is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(storage.get_heartbeat_interval()):
            storage.record_heartbeat(trial_id)

    storage.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class FinalStage:
    """The jobs after the trials, shared by every worker through the final study.

    `work()` enqueues what is missing and trains waiting jobs until none is left; `settled()`
    says whether every job is done; `result()` reads the outcome from the stores.
    """

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        storage_url: str,
        settings: FinalSettings,
        seed: int,
        max_epochs: int,
        runner: JobRunner,
        n_jobs: int = 1,
    ):
        self.study, self.storage, self.storage_url = study, storage, storage_url
        self.settings = settings
        self.seed, self.max_epochs, self.runner, self.n_jobs = seed, max_epochs, runner, n_jobs
        self.maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        with creation_lock(storage_url):
            self.final = optuna.create_study(
                study_name=study.study_name + FINAL_STUDY_SUFFIX,
                storage=storage,
                sampler=optuna.samplers.RandomSampler(seed=seed),
                pruner=optuna.pruners.NopPruner(),
                direction=study.direction,
                load_if_exists=True,
            )

    # --- what the jobs are -----------------------------------------------------------------

    def confirm_jobs(self) -> list[Job]:
        if not self.settings.confirms:
            return []
        return [
            Job(
                Role.CONFIRM,
                trial.number,
                confirm_seed(self.seed, trial.number, repeat),
                self.max_epochs,
            )
            for trial in top_trials(self.study, self.settings.confirm_top)
            for repeat in range(1, self.settings.confirm_seeds + 1)
        ]

    def refit_job(self) -> Job | None:
        """The winner's refit, once every confirmation is done (None before, or refit off)."""
        if not self.settings.refit or not self._done(self.confirm_jobs()):
            return None
        # the winner is chosen on validation alone: no test scoring here, under the lock
        winner = pick_winner(self.confirmed(score_test=False), self.maximize)
        return Job(
            Role.REFIT,
            winner.trial.number,
            self.seed + winner.trial.number,
            refit_epochs(winner),
            job_changes(self.runner.space.refit),
        )

    def planned(self) -> list[Job]:
        refit = self.refit_job()
        return self.confirm_jobs() + ([refit] if refit is not None else [])

    # --- the stores' record ----------------------------------------------------------------

    def _trials(self, job: Job) -> list[FrozenTrial]:
        return [t for t in self.final.get_trials(deepcopy=False) if Job.of(t) == job]

    def _state(self, job: Job) -> str:
        """done (complete, or failed in training: not retried), active (waiting or running),
        or missing (never enqueued, or interrupted: enqueued again)."""
        trials = self._trials(job)
        if any(t.state == TrialState.COMPLETE for t in trials):
            return "done"
        if any(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials):
            return "active"
        # a reason other than an interruption is the run's own failure (e.g. diverged)
        reasons = [
            t.user_attrs.get(TrialAttr.FAIL_REASON) for t in trials if t.state == TrialState.FAIL
        ]
        if any(reason not in (None, *STOP_REASONS) for reason in reasons):
            return "done"
        return "missing"

    def _done(self, jobs: list[Job]) -> bool:
        return all(self._state(job) == "done" for job in jobs)

    def _completed(self, job: Job) -> FrozenTrial | None:
        return next((t for t in self._trials(job) if t.state == TrialState.COMPLETE), None)

    # --- the protocol ----------------------------------------------------------------------

    def work(self) -> None:
        """Enqueue what is missing and train waiting jobs until none is left (in `n_jobs`
        threads); returns when all are done or the last ones run in other workers."""
        if self.n_jobs == 1:
            self._work()
            return
        with ThreadPoolExecutor(self.n_jobs) as pool:
            for future in [pool.submit(self._work) for _ in range(self.n_jobs)]:
                future.result()

    def _work(self) -> None:
        while (trial := self._claim()) is not None:
            with heartbeat(self.storage, trial._trial_id):
                try:
                    value = self.runner(trial)
                except KeyboardInterrupt:
                    self.final.tell(trial, state=TrialState.FAIL)
                    raise
                except Exception:  # recorded by the runner; the other jobs go on
                    self.final.tell(trial, state=TrialState.FAIL)
                    continue
            self.final.tell(trial, value)

    def _claim(self) -> optuna.Trial | None:
        """The next waiting job, taken under the storage's lock: Optuna's own hand-out of a
        waiting trial can give one trial to two threads or processes (SQLite's reads do not
        lock), and a job must be trained once."""
        with creation_lock(self.storage_url):
            optuna.storages.fail_stale_trials(self.final)  # jobs of killed workers
            for job in self.planned():
                if self._state(job) == "missing":
                    self.final.enqueue_trial({}, user_attrs=job.attrs())
            if not self.final.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                return None
            return self.final.ask()  # pops the oldest waiting trial

    def settled(self) -> bool:
        return self._done(self.planned())

    def confirmed(self, score_test: bool = True) -> list[Confirmed]:
        """The top trials' configurations with their runs so far (test scores read from MLflow;
        a trial's own, when missing, evaluated first, or nan with `score_test` off)."""
        out = []
        for trial in top_trials(
            self.study, self.settings.confirm_top if self.settings.confirms else 1
        ):
            runs = [self._trial_run(trial, score_test)]
            for job in self.confirm_jobs():
                done = self._completed(job) if job.trial_number == trial.number else None
                if done is not None:
                    runs.append(job_run(Role.CONFIRM, job, done))
            out.append(Confirmed(trial, runs))
        return out

    def _trial_run(self, trial: FrozenTrial, score_test: bool) -> Run:
        tracker, run_id = self.runner.tracker, trial.user_attrs[TrialAttr.RUN_ID]
        metrics = tracker.client.get_run(run_id).data.metrics
        if TEST_IOU not in metrics:
            metrics = {TEST_IOU: self._test_iou(trial, run_id) if score_test else math.nan}
        return Run(
            Role.TRIAL,
            self.seed + trial.number,
            trial.value,
            metrics[TEST_IOU],
            int(trial.user_attrs[TrialAttr.BEST_EPOCH]),
            int(trial.user_attrs[TrialAttr.EPOCHS_RUN]),
            run_id,
        )

    def _test_iou(self, trial: FrozenTrial, run_id: str) -> float:
        """Evaluate a trial's model on every split (logged to its run); its test mean IoU."""
        device = device_for_trial(self.runner.device, trial.number)
        model = load_run_model(self.runner.tracker, run_id, device)
        scores = log_evaluation(self.runner.tracker, run_id, model, self.runner.splits, device)
        return scores["test"].iou

    def result(self) -> FinalResult:
        confirmed = self.confirmed()
        winner = pick_winner(confirmed, self.maximize)
        refit = self.refit_job()
        done = None if refit is None else self._completed(refit)
        return FinalResult(
            confirmed,
            winner,
            None if done is None else job_run(Role.REFIT, refit, done),
            None if refit is None else refit.epochs,
            () if refit is None else refit.changes,
        )

    def epochs(self) -> dict[str, int]:
        """Epochs trained by each stage of the pipeline, failed and interrupted runs included."""
        spent = {SEARCH_STAGE: sum(job_epochs(t) for t in self.study.get_trials(deepcopy=False))}
        for role in (Role.CONFIRM, Role.REFIT):
            spent[role] = sum(
                job_epochs(t)
                for t in self.final.get_trials(deepcopy=False)
                if (job := Job.of(t)) is not None and job.role == role
            )
        return spent


def job_run(role: str, job: Job, trial: FrozenTrial) -> Run:
    attrs = trial.user_attrs
    return Run(
        role,
        job.seed,
        trial.value,
        attrs[TrialAttr.TEST_IOU],
        int(attrs[TrialAttr.BEST_EPOCH]),
        int(attrs[TrialAttr.EPOCHS_RUN]),
        attrs[TrialAttr.RUN_ID],
    )


# --- the record -----------------------------------------------------------------------------


def result_metrics(result: FinalResult, metric: str) -> dict[str, float]:
    """The parent run's figures: each confirmed configuration's mean and sd, the winner's test
    mean IoU over its runs and the refit model's."""
    out: dict[str, float] = {}
    for confirmed in result.confirmed:
        for name, values in ((metric, confirmed.values), (TEST_IOU, confirmed.test_ious)):
            mean, sd = mean_sd(values)
            out[confirmed_metric(confirmed.trial.number, name, "mean")] = mean
            if math.isfinite(sd):
                out[confirmed_metric(confirmed.trial.number, name, "sd")] = sd
    mean, sd = mean_sd(result.winner.test_ious)
    out[Metric.WINNER_TRIAL] = result.winner.trial.number
    out[Metric.WINNER_TEST_IOU_MEAN] = mean
    if math.isfinite(sd):
        out[Metric.WINNER_TEST_IOU_SD] = sd
    if result.refit is not None:
        out[Metric.REFIT_TEST_IOU] = result.refit.test_iou
        out[Metric.REFIT_EPOCHS] = result.refit_epochs
    return out


def result_rows(result: FinalResult) -> list[dict[str, object]]:
    """One row per run of the pipeline's last stages, for the parent run's CSV and the report."""
    runs = [(c.trial.number, run) for c in result.confirmed for run in c.runs]
    if result.refit is not None:
        runs.append((result.winner.trial.number, result.refit))
    refit_changes = describe_changes(result.refit_changes)
    return [
        {
            Column.TRIAL: number,
            Column.ROLE: run.role,
            Column.SEED: run.seed,
            Column.VALUE: run.value if run.role != Role.REFIT else math.nan,
            Column.TEST_IOU: run.test_iou,
            Column.BEST_EPOCH: run.best_epoch,
            Column.EPOCHS_RUN: run.epochs_run,
            Column.WINNER: number == result.winner.trial.number,
            Column.CHANGES: refit_changes if run.role == Role.REFIT else "",
            Column.RUN_ID: run.run_id,
        }
        for number, run in runs
    ]


def figures(values: list[float]) -> str:
    """`mean ± sd`, or the mean alone for a single value."""
    mean, sd = mean_sd(values)
    return f"{mean:.4f} ± {sd:.4f}" if math.isfinite(sd) else f"{mean:.4f}"


def format_result(result: FinalResult, metric: str) -> str:
    lines = [
        f"confirmation: the {len(result.confirmed)} best trials' configurations, each run "
        f"{len(result.confirmed[0].runs)} times",
        f"{'trial':>5}  {metric + ' mean ± sd':>20}  {'test_iou mean ± sd':>20}  by seed "
        f"({metric} / test_iou)",
    ]
    for c in result.confirmed:
        by_seed = "  ".join(f"{r.value:.4f}/{r.test_iou:.4f}" for r in c.runs)
        mark = "*" if c is result.winner else " "
        lines.append(
            f"{c.trial.number:>4}{mark}  {figures(c.values):>20}  {figures(c.test_ious):>20}  {by_seed}"
        )
    lines.append(
        f"winner: trial {result.winner.trial.number}'s configuration, test mean IoU "
        f"{figures(result.winner.test_ious)} over its {len(result.winner.runs)} runs"
    )
    if result.refit is not None:
        changes = describe_changes(result.refit_changes)
        lines.append(
            f"refit on train + validation for {result.refit_epochs} epoch(s)"
            f"{f' with {changes}' if changes else ''}: test mean IoU "
            f"{result.refit.test_iou:.4f} (the registered model)"
        )
    elif result.refit_epochs is not None:
        lines.append("refit failed: the winner's trial run is registered instead")
    return "\n".join(lines)
