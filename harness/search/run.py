"""One worker's part of a search: the steps every worker of a study takes, in order.

Any number of workers (processes, machines) may run the same command on one study; each does:

1. `Search.prepare`: read the space and the data, check the device and the tracking server;
2. `Search.open`: under the storage's lock, open the study (created by the first worker,
   refused on other data or settings) and its one parent run, and enqueue the space's known
   configurations;
3. `Search.run_trials`: trials until the study has its number of finished trials;
4. `Search.run_final_stage`: confirmation and refit jobs, once no trial runs;
5. `Search.sum_up`: under the lock, the worker that finds nothing running and the parent run's
   mark not of the study as it is now sums the study up (summary, the best trial's test
   scores, confirmation figures), sets the mark and ends the parent run;
6. that worker registers the model (`Search.promote`).

Re-running the command resumes the study: only the missing trials and jobs run, and a study
already summed up is not summed up again.
"""

import os
from dataclasses import dataclass

import optuna
import torch

from harness.data import Splits, load_splits
from harness.devices import resolve_device
from harness.errors import HarnessError
from harness.locks import creation_lock
from harness.names import (
    FAIL,
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    Artifact,
    Param,
    Role,
    StudyAttr,
    Tag,
    TrialAttr,
    stage_epochs_metric,
)
from harness.registry.promotion import promote_run
from harness.runs import load_run_model, log_evaluation
from harness.search.confirm import (
    FinalResult,
    FinalSettings,
    FinalStage,
    JobRunner,
    describe_changes,
    format_result,
    job_changes,
    result_metrics,
    result_rows,
)
from harness.search.objective import Objective
from harness.search.options import SearchOptions
from harness.search.spaces import SearchSpace, load_space
from harness.search.studies import (
    FINISHED_STATES,
    enqueue_known,
    finished_trials,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
)
from harness.search.summary import log_study_summary, top_trials_table
from harness.stopping import raise_if_stopping
from harness.tracking import Tracker, check_reachable, logged_scores, split_metrics


@dataclass
class SearchResult:
    study: optuna.Study
    experiment_id: str
    parent_run_id: str
    best_trial: optuna.trial.FrozenTrial | None
    final: FinalResult | None = None  # confirmation and refit, when this worker summed up


def run_search(options: SearchOptions) -> SearchResult:
    search = Search.prepare(options)
    search.open()
    try:
        raise_if_stopping()  # one that came while the study was opened
        search.run_trials()
        search.run_final_stage()
        summed_up = search.sum_up()
    except KeyboardInterrupt:
        search.end_parent_run(KILLED)
        raise
    except BaseException:
        search.end_parent_run(FAILED)
        raise
    search.print_outcome()
    if summed_up and options.promote:
        search.promote()
    return search.result()


class Search:
    """The study, its parent run and this worker's view of them; see the module's steps."""

    def __init__(self, options: SearchOptions, space: SearchSpace, splits: Splits, image_size: int):
        self.options, self.space, self.splits = options, space, splits
        self.settings = space.study
        self.name = options.study or space.name
        self.max_epochs = options.max_epochs or self.settings.epochs(len(splits.train))
        self.identity = {
            Param.SPACE: space.name,
            Param.DATASET: splits.spec,
            Param.DATASET_FINGERPRINT: splits.fingerprint,
            Param.IMAGE_SIZE: image_size,
            Param.MAX_EPOCHS: self.max_epochs,
        }
        self.tracker = Tracker(options.tracking_uri)
        self.storage = make_storage(
            options.storage,
            options.heartbeat_s,
            on_dead_trial=lambda trial: close_dead_run(self.tracker, trial),
        )
        self.study: optuna.Study | None = None
        self.experiment_id = self.parent_run_id = ""
        self.final_stage: FinalStage | None = None
        self.best: optuna.trial.FrozenTrial | None = None
        self.outcome: FinalResult | None = None

    @classmethod
    def prepare(cls, options: SearchOptions) -> "Search":
        space = load_space(options.space)
        image_size = options.image_size or space.study.image_size
        resolve_device(options.device)  # fail now on a device that is not there
        check_reachable(options.tracking_uri)
        splits = load_splits(options.data, image_size, cache_dir=options.cache_dir)
        if options.n_jobs > 1:
            # trials run in threads: share the cores out instead of oversubscribing them
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // options.n_jobs))
        return cls(options, space, splits, image_size)

    def open(self) -> None:
        options, settings = self.options, self.settings
        # Workers starting together take turns to create the study and its parent run.
        with creation_lock(options.storage):
            self.study = open_study(
                self.name,
                self.storage,
                settings,
                self.identity,
                sampler=make_sampler(settings, options.seed),
                pruner=make_pruner(
                    options.pruner or settings.pruner,
                    settings,
                    self.max_epochs,
                    len(self.splits.train),
                ),
            )
            if finished_trials(self.study) < options.trials:
                enqueue_known(self.study, self.space.enqueue)
            self.experiment_id = self.tracker.experiment_id(self.name)
            self.parent_run_id = parent_run(
                self.tracker, self.experiment_id, self.study, self.identity
            )
        self.tracker.log_dataset_inputs(self.parent_run_id, self.splits)
        self.tracker.adopt_project_run(self.parent_run_id)
        # trials of killed workers: fail and retry them
        optuna.storages.fail_stale_trials(self.study)
        print(
            f"study {self.name!r}: {finished_trials(self.study)} of {options.trials} trials finished"
        )
        splits = self.splits
        print(
            f"data {splits.spec}: {len(splits.train)} train, {len(splits.val)} val, "
            f"{len(splits.test)} test at {self.identity[Param.IMAGE_SIZE]}px"
        )

    def run_trials(self) -> None:
        options = self.options
        missing = options.trials - finished_trials(self.study)
        if missing <= 0:
            return
        objective = Objective(
            self.space,
            self.splits,
            self.tracker,
            self.experiment_id,
            self.parent_run_id,
            self.name,
            self.max_epochs,
            options.seed,
            options.device,
            target_trials=options.trials,
            precision=options.precision,
            compile_model=options.compile_model,
        )
        self.study.optimize(
            objective,
            n_trials=missing,
            timeout=options.timeout,
            n_jobs=options.n_jobs,
            catch=(Exception,),
            callbacks=[
                optuna.study.MaxTrialsCallback(options.trials, states=FINISHED_STATES),
                raise_if_stopping,  # a stop that came during a trial's bookkeeping
            ],
            show_progress_bar=options.progress_bar,
        )

    def run_final_stage(self) -> None:
        options = self.options
        if best_trial(self.study) is None or not options.final.enabled:
            return
        runner = JobRunner(
            self.space,
            self.study,
            self.splits,
            self.tracker,
            self.experiment_id,
            self.parent_run_id,
            options.device,
            precision=options.precision,
            compile_model=options.compile_model,
        )
        self.final_stage = FinalStage(
            self.study,
            self.storage,
            options.storage,
            options.final,
            options.seed,
            self.max_epochs,
            runner,
            options.n_jobs,
        )
        if not trials_running(self.study):  # else the worker of the last running trial does
            self.final_stage.work()

    def sum_up(self) -> bool:
        """Sum the study up if this worker is the one to; whether it was."""
        tracker, parent_run_id = self.tracker, self.parent_run_id
        self.best = best_trial(self.study)
        with creation_lock(self.options.storage):
            if trials_running(self.study) or (
                self.final_stage is not None and not self.final_stage.settled()
            ):
                return False  # the worker of the last running trial or job sums up
            # read again: trials of other workers may have ended since this one's did
            self.best = best_trial(self.study)
            mark = summary_mark(
                self.study,
                self.best,
                None if self.final_stage is None else self.options.final,
                self.space.refit,
            )
            last_worker = not summed_up(tracker, parent_run_id, mark)
            if last_worker:
                log_study_summary(tracker, parent_run_id, self.study, self.settings.metric)
                if self.best is not None:
                    device = resolve_device(self.options.device)
                    evaluate_best(tracker, parent_run_id, self.best, self.splits, device)
                if self.final_stage is not None:
                    self.outcome = self.final_stage.result()
                    log_final(
                        tracker, parent_run_id, self.final_stage, self.outcome, self.settings.metric
                    )
                tracker.log(parent_run_id, tags={Tag.SUMMED_UP: mark})
            self.end_parent_run(FINISHED)
        return last_worker

    def end_parent_run(self, status: str) -> None:
        self.tracker.end_run(self.parent_run_id, status)

    def print_outcome(self) -> None:
        print_outcome(self.study, self.settings.metric, self.tracker, self.experiment_id)
        if self.best is None:
            raise HarnessError(
                f"no trial of study {self.name!r} completed; see the fail reasons in MLflow"
            )
        if self.outcome is not None:
            print(format_result(self.outcome, self.settings.metric))
            print(format_epochs(self.final_stage.epochs()))

    def promote(self) -> None:
        """Register the winner (the refit model, else the best trial's) and decide the alias."""
        if self.outcome is None:
            run_id = self.best.user_attrs[TrialAttr.RUN_ID]
        else:
            run_id = self.outcome.registered_run_id(self.settings.direction == "maximize")
        promote_run(
            self.tracker,
            run_id,
            self.options.registered_model,
            min_improvement=self.options.min_improvement,
        )

    def result(self) -> SearchResult:
        return SearchResult(
            self.study, self.experiment_id, self.parent_run_id, self.best, self.outcome
        )


def parent_run(tracker: Tracker, experiment_id: str, study: optuna.Study, identity: dict) -> str:
    """The study's one parent run: found again through the study on resume, not duplicated.

    Workers starting together may each create one; all of them then keep the oldest and the
    others delete their own, so every worker ends up on the same run.
    """
    run_id = study.user_attrs.get(StudyAttr.PARENT_RUN)
    if run_id is None:
        mine = tracker.start_run(
            experiment_id,
            study.study_name,
            tags={Tag.ROLE: Role.STUDY, Tag.STUDY: study.study_name},
        )
        candidates = tracker.client.search_runs(
            [experiment_id], filter_string=f"tags.`{Tag.ROLE}` = '{Role.STUDY}'"
        )
        run_id = min(candidates, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
        if run_id != mine:
            tracker.client.delete_run(mine)
        else:
            tags = {Tag.DATASET_FINGERPRINT: identity[Param.DATASET_FINGERPRINT]}
            tracker.log(run_id, params=identity, tags=tags)
            study.set_user_attr(StudyAttr.PARENT_RUN, run_id)
    tracker.client.update_run(run_id, status=RUNNING)
    return run_id


def close_dead_run(tracker: Tracker, trial: optuna.trial.FrozenTrial) -> None:
    """A killed worker's trial: its MLflow run must not stay RUNNING (mlflow#5963)."""
    run_id = trial.user_attrs.get(TrialAttr.RUN_ID)
    if run_id is None:
        return
    tracker.log(run_id, tags={Tag.TRIAL_STATE: FAIL, Tag.FAIL_REASON: "worker died (no heartbeat)"})
    tracker.end_run(run_id, FAILED)


def trials_running(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def summed_up(tracker: Tracker, parent_run_id: str, mark: str) -> bool:
    """Whether the parent run's summary is of the study as it is now (`mark`).

    Called under the storage's lock once no trial or job runs: the first worker to get there
    sums the study up (summary, test scores, promotion) and marks the parent run; workers
    finishing together, and a re-run with nothing left to do, find the mark and do not do it
    again. A re-run after the last worker died before summing up does it.
    """
    parent = tracker.client.get_run(parent_run_id)
    return parent.data.tags.get(Tag.SUMMED_UP) == mark


def summary_mark(
    study: optuna.Study, best, final: FinalSettings | None, refit_changes: dict
) -> str:
    best_number = "none" if best is None else best.number
    mark = f"{finished_trials(study)} finished, best {best_number}"
    if final:
        changes = describe_changes(job_changes(refit_changes))
        refit = (f", refit with {changes}" if changes else ", refit") if final.refit else ""
        mark += f", confirmed top {final.confirm_top} x {final.confirm_seeds} seeds{refit}"
    return mark


def log_final(
    tracker: Tracker, parent_run_id: str, final: FinalStage, outcome: FinalResult, metric: str
) -> None:
    """The confirmation and refit figures and each stage's epochs on the parent run."""
    epochs = {stage_epochs_metric(stage): n for stage, n in final.epochs().items()}
    tracker.log(parent_run_id, {**result_metrics(outcome, metric), **epochs})
    tracker.log_table(parent_run_id, result_rows(outcome), Artifact.CONFIRMATION_CSV)


def format_epochs(epochs: dict[str, int]) -> str:
    stages = ", ".join(f"{stage} {n}" for stage, n in epochs.items())
    return f"epochs trained: {stages} (total {sum(epochs.values())})"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def evaluate_best(tracker: Tracker, parent_run_id: str, best, splits, device: torch.device) -> None:
    """The best trial's restored weights scored on every split, on its run and the parent run
    (once: a study summed up again with the same best trial reads the scores back)."""
    run_id = best.user_attrs[TrialAttr.RUN_ID]
    scores = logged_scores(tracker.client.get_run(run_id).data.metrics)
    if scores is None:
        model = load_run_model(tracker, run_id, device)
        scores = log_evaluation(tracker, run_id, model, splits, device)
    tracker.log(parent_run_id, split_metrics(scores))
    print(f"best trial {best.number} on the whole splits:")
    print(f"{'split':<6} {'accuracy':>9} {'mean IoU':>9} {'fg IoU':>8}")
    for split, s in scores.items():
        print(f"{split:<6} {s.accuracy:>9.4f} {s.iou:>9.4f} {s.fg_iou:>8.4f}")


def print_outcome(study: optuna.Study, metric: str, tracker: Tracker, experiment_id: str) -> None:
    counts = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    print("trials: " + ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())))
    print(top_trials_table(study, metric))
    print(f"MLflow: mlflow ui --backend-store-uri {tracker.tracking_uri}, then open")
    print(
        f"  http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )
