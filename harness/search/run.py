"""`python -m harness.search`: an Optuna study over the shared trainer, recorded in MLflow.

Re-running the same command resumes the study and runs only the trials that are missing.
"""

import argparse
import os
import sys
from dataclasses import dataclass

import optuna
import torch
from mlflow.entities import RunStatus

from harness.cli import (
    add_compute_flags,
    add_data_flags,
    add_promotion_flags,
    positive_int,
    run_main,
)
from harness.data import DEFAULT_SPEC, load_splits
from harness.devices import resolve_device
from harness.errors import HarnessError
from harness.locks import creation_lock
from harness.names import (
    FAIL,
    FAILED,
    FINISHED,
    KILLED,
    Artifact,
    Param,
    Role,
    StudyAttr,
    Tag,
    TrialAttr,
    stage_epochs_metric,
)
from harness.registry import DEFAULT_REGISTERED_MODEL, promote_run
from harness.runs import load_run_model, log_evaluation
from harness.search.confirm import (
    FinalResult,
    FinalSettings,
    FinalStage,
    JobRunner,
    format_result,
    result_metrics,
    result_rows,
)
from harness.search.objective import Objective
from harness.search.spaces import DEFAULT_SPACE, PRUNERS, load_space
from harness.search.studies import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STORAGE,
    FINISHED_STATES,
    enqueue_known,
    finished_trials,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
)
from harness.search.summary import log_study_summary, top_trials_table
from harness.stopping import raise_if_stopping, stops_deferred
from harness.tracking import DEFAULT_TRACKING_URI, Tracker, check_reachable, split_metrics


@dataclass(frozen=True)
class SearchOptions:
    trials: int = 50
    space: str = DEFAULT_SPACE
    data: str = DEFAULT_SPEC
    image_size: int | None = None  # None: the space file's
    max_epochs: int | None = None  # None: the space file's
    pruner: str | None = None  # None: the space file's
    study: str | None = None  # None: the space file's name
    storage: str = DEFAULT_STORAGE
    tracking_uri: str = DEFAULT_TRACKING_URI
    seed: int = 0
    n_jobs: int = 1
    timeout: float | None = None
    device: str = "auto"
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    precision: str = "auto"
    compile_model: bool = False
    cache_dir: str | None = None
    registered_model: str = DEFAULT_REGISTERED_MODEL
    promote: bool = True
    min_improvement: float = 0.0
    confirm: bool = True
    confirm_top: int = FinalSettings.confirm_top
    confirm_seeds: int = FinalSettings.confirm_seeds
    refit: bool = True
    progress_bar: bool = True

    @property
    def final(self) -> FinalSettings:
        return FinalSettings(
            self.confirm_top if self.confirm else 0, self.confirm_seeds, self.refit
        )


@dataclass
class SearchResult:
    study: optuna.Study
    experiment_id: str
    parent_run_id: str
    best_trial: optuna.trial.FrozenTrial | None
    final: FinalResult | None = None  # confirmation and refit, when this worker summed up


def run_search(options: SearchOptions) -> SearchResult:
    space = load_space(options.space)
    settings = space.study
    image_size = options.image_size or settings.image_size
    pruner_name = options.pruner or settings.pruner
    study_name = options.study or space.name
    resolve_device(options.device)  # fail now on a device that is not there
    check_reachable(options.tracking_uri)
    splits = load_splits(options.data, image_size, cache_dir=options.cache_dir)
    max_epochs = options.max_epochs or settings.epochs(len(splits.train))
    if options.n_jobs > 1:
        # trials run in threads: share the cores out instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // options.n_jobs))

    identity = {
        Param.SPACE: space.name,
        Param.DATASET: splits.spec,
        Param.DATASET_FINGERPRINT: splits.fingerprint,
        Param.IMAGE_SIZE: image_size,
        Param.MAX_EPOCHS: max_epochs,
    }
    tracker = Tracker(options.tracking_uri)
    storage = make_storage(
        options.storage,
        options.heartbeat_s,
        on_dead_trial=lambda trial: close_dead_run(tracker, trial),
    )
    # Workers starting together take turns to create the study and its parent run.
    with creation_lock(options.storage):
        study = open_study(
            study_name,
            storage,
            settings,
            identity,
            sampler=make_sampler(settings, options.seed),
            pruner=make_pruner(pruner_name, settings, max_epochs),
        )
        if finished_trials(study) < options.trials:
            enqueue_known(study, space.enqueue)
        experiment_id = tracker.experiment_id(study_name)
        parent_run_id = parent_run(tracker, experiment_id, study, identity)
    tracker.log_dataset_inputs(parent_run_id, splits)
    tracker.adopt_project_run(parent_run_id)
    optuna.storages.fail_stale_trials(study)  # trials of killed workers: fail and retry them
    print(f"study {study_name!r}: {finished_trials(study)} of {options.trials} trials finished")
    print(
        f"data {splits.spec}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test at {image_size}px"
    )

    objective = Objective(
        space,
        splits,
        tracker,
        experiment_id,
        parent_run_id,
        study_name,
        max_epochs,
        options.seed,
        options.device,
        target_trials=options.trials,
        precision=options.precision,
        compile_model=options.compile_model,
    )
    missing = options.trials - finished_trials(study)
    try:
        raise_if_stopping()  # one that came while the study was opened
        if missing > 0:
            study.optimize(
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
        best = best_trial(study)
        final = None
        if best is not None and options.final.enabled:
            runner = JobRunner(
                space,
                study,
                splits,
                tracker,
                experiment_id,
                parent_run_id,
                options.device,
                precision=options.precision,
                compile_model=options.compile_model,
            )
            final = FinalStage(
                study,
                storage,
                options.storage,
                options.final,
                options.seed,
                max_epochs,
                runner,
                options.n_jobs,
            )
            if not trials_running(study):  # else the worker of the last running trial does
                final.work()
        # With several workers on one study, exactly one sums it up: the last to finish.
        last_worker, outcome = False, None
        with creation_lock(options.storage):
            # else the worker of the last running trial or job does
            if not trials_running(study) and (final is None or final.settled()):
                # read again: trials of other workers may have ended since this one's did
                best = best_trial(study)
                mark = summary_mark(study, best, options.final if final else None)
                last_worker = not summed_up(tracker, parent_run_id, mark)
                if last_worker:
                    log_study_summary(tracker, parent_run_id, study, settings.metric)
                    if best is not None:
                        device = resolve_device(options.device)
                        evaluate_best(tracker, parent_run_id, best, splits, device)
                    if final is not None:
                        outcome = final.result()
                        log_final(tracker, parent_run_id, final, outcome, settings.metric)
                    tracker.log(parent_run_id, tags={Tag.SUMMED_UP: mark})
                tracker.end_run(parent_run_id, FINISHED)
    except KeyboardInterrupt:
        tracker.end_run(parent_run_id, KILLED)
        raise
    except BaseException:
        tracker.end_run(parent_run_id, FAILED)
        raise
    print_outcome(study, settings.metric, tracker, experiment_id)
    if best is None:
        raise HarnessError(
            f"no trial of study {study_name!r} completed; see the fail reasons in MLflow"
        )
    if outcome is not None:
        print(format_result(outcome, settings.metric))
        print(format_epochs(final.epochs()))
    if options.promote and last_worker:
        maximize = settings.direction == "maximize"
        run_id = (
            best.user_attrs[TrialAttr.RUN_ID]
            if outcome is None
            else outcome.registered_run_id(maximize)
        )
        promote_run(
            tracker, run_id, options.registered_model, min_improvement=options.min_improvement
        )
    return SearchResult(study, experiment_id, parent_run_id, best, outcome)


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
    tracker.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
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


def summary_mark(study: optuna.Study, best, final: FinalSettings | None) -> str:
    best_number = "none" if best is None else best.number
    mark = f"{finished_trials(study)} finished, best {best_number}"
    if final is not None:
        refit = ", refit" if final.refit else ""
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
    """Score the best trial's restored weights on every split, once per best trial."""
    parent = tracker.client.get_run(parent_run_id)
    if parent.data.tags.get(Tag.EVALUATED_TRIAL) == str(best.number):
        return
    run_id = best.user_attrs[TrialAttr.RUN_ID]
    model = load_run_model(tracker, run_id, device)
    scores = log_evaluation(tracker, run_id, model, splits, device)
    tracker.log(parent_run_id, split_metrics(scores), tags={Tag.EVALUATED_TRIAL: best.number})
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


def build_parser() -> argparse.ArgumentParser:
    defaults = SearchOptions()
    parser = argparse.ArgumentParser(
        prog="python -m harness.search",
        description="Search UNet hyperparameters with Optuna; every trial is an MLflow run. "
        "Re-running the same command resumes the study.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--trials",
        type=positive_int,
        default=defaults.trials,
        help="finished trials (complete or pruned) the study should reach",
    )
    parser.add_argument(
        "--space",
        default=defaults.space,
        help="search space: a name in search_spaces/ or a path to a .toml file",
    )
    add_data_flags(
        parser,
        default=defaults.data,
        image_size_default=None,
        image_size_help="override the space file's image_size",
    )
    parser.add_argument(
        "--max-epochs",
        type=positive_int,
        default=None,
        help="each trial's epoch budget, overriding the space file's (budget_images, max_epochs)",
    )
    parser.add_argument(
        "--pruner", choices=PRUNERS, default=None, help="override the space file's pruner"
    )
    parser.add_argument(
        "--study",
        default=None,
        help="study name (default: the space file's name); also the MLflow experiment",
    )
    parser.add_argument("--storage", default=defaults.storage, help="Optuna storage URL")
    parser.add_argument("--tracking-uri", default=defaults.tracking_uri, help="MLflow tracking URI")
    parser.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seeds the sampler and each trial's training",
    )
    parser.add_argument(
        "--n-jobs",
        type=positive_int,
        default=defaults.n_jobs,
        help="trials run at once in this process",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="stop starting new trials after this many seconds",
    )
    add_compute_flags(
        parser,
        device_help="auto, cpu, cuda or cuda:N; with several GPUs, auto spreads concurrent trials round-robin",
    )
    parser.add_argument(
        "--heartbeat",
        type=positive_int,
        default=defaults.heartbeat_s,
        help="seconds between a trial's heartbeats; a trial silent for 4 heartbeats is failed and retried",
    )
    parser.add_argument(
        "--registered-model",
        default=defaults.registered_model,
        help="MLflow registered model the best model is promoted to",
    )
    parser.add_argument(
        "--no-promote", action="store_true", help="do not register or promote the best model"
    )
    add_promotion_flags(parser, force=False)
    final = parser.add_argument_group(
        "confirmation and refit",
        "after the trials, the best configurations are trained again with more seeds; the "
        "one with the best mean validation metric is refit on train + validation and registered",
    )
    final.add_argument(
        "--confirm-top",
        type=int,
        default=defaults.confirm_top,
        help="configurations of this many best complete trials are confirmed",
    )
    final.add_argument(
        "--confirm-seeds",
        type=positive_int,
        default=defaults.confirm_seeds,
        help="more training seeds for each confirmed configuration",
    )
    final.add_argument(
        "--no-confirm", action="store_true", help="no confirmation: the best trial is the winner"
    )
    final.add_argument(
        "--no-refit",
        action="store_true",
        help="no refit: the winner's run with the best validation metric is registered",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = SearchOptions(
        trials=args.trials,
        space=args.space,
        data=args.data,
        image_size=args.image_size,
        max_epochs=args.max_epochs,
        pruner=args.pruner,
        study=args.study,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        seed=args.seed,
        n_jobs=args.n_jobs,
        timeout=args.timeout,
        device=args.device,
        heartbeat_s=args.heartbeat,
        precision=args.precision,
        compile_model=args.compile,
        cache_dir=args.cache_dir,
        registered_model=args.registered_model,
        promote=not args.no_promote,
        min_improvement=args.min_improvement,
        confirm=not args.no_confirm,
        confirm_top=args.confirm_top,
        confirm_seeds=args.confirm_seeds,
        refit=not args.no_refit,
        progress_bar=not args.no_progress,
    )
    with stops_deferred():  # a stop waits for training or a safe point: see stopping.py
        run_search(options)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
