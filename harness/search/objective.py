"""The Optuna objective: one trial = one child MLflow run of the shared trainer.

Reads top to bottom: the trial picks the hyperparameters, a child run is opened under the
study's parent run, the trainer fits with two per-epoch hooks (MLflow metrics, Optuna
pruning), and the run is closed with the trial's state as a tag.
"""

import sys
from dataclasses import dataclass

import optuna
from tqdm import tqdm

from harness.data import Splits
from harness.devices import device_for_trial
from harness.names import COMPLETE, FAIL, FAILED, FINISHED, KILLED, PRUNED, Tag, TrialAttr
from harness.runs import train_tracked
from harness.search.spaces import SearchSpace
from harness.search.studies import is_surplus
from harness.stopping import stop_reason
from harness.tracking import Tracker, epoch_metrics
from harness.trainer import EpochResult, FitResult


def pruned_reason(epoch: int) -> str:
    return f"pruned at epoch {epoch}"


class SurplusTrialError(Exception):
    """Other workers already run or finished the study's target number of trials."""


@dataclass
class Objective:
    space: SearchSpace
    splits: Splits
    tracker: Tracker
    experiment_id: str
    parent_run_id: str
    study_name: str
    max_epochs: int
    seed: int
    device: str  # "auto", "cpu", "cuda" or "cuda:N"; see devices.device_for_trial
    target_trials: int | None = None  # stop at this many finished trials across all workers
    precision: str = "auto"
    compile_model: bool = False

    def __call__(self, trial: optuna.Trial) -> float:
        if self.target_trials is not None and is_surplus(
            trial.study, trial.number, self.target_trials
        ):
            trial.set_user_attr(TrialAttr.FAIL_REASON, "surplus: the study already has its trials")
            if TrialAttr.RUN_ID in trial.user_attrs:  # a retry inherits its dead trial's run id
                trial.set_user_attr(TrialAttr.RUN_ID, "")
            trial.study.stop()
            raise SurplusTrialError(f"study has {self.target_trials} trials")
        config = self.space.suggest(
            trial, seed=self.seed + trial.number, max_epochs=self.max_epochs
        )
        run_id = self.tracker.start_run(
            self.experiment_id,
            f"trial-{trial.number:03d}",
            tags={
                Tag.ROLE: "trial",
                Tag.STUDY: self.study_name,
                Tag.TRIAL_NUMBER: str(trial.number),
            },
            parent_run_id=self.parent_run_id,
        )
        trial.set_user_attr(TrialAttr.RUN_ID, run_id)
        metric = self.space.study.metric
        restored = RestoredValue(metric)

        def report_to_optuna(result: EpochResult) -> None:
            trial.report(restored.update(result), result.epoch)
            if trial.should_prune():
                self.tracker.mark_pruned(run_id, restored.best, result.epoch)
                raise optuna.TrialPruned(pruned_reason(result.epoch))

        try:
            device = device_for_trial(self.device, trial.number)
            fit = train_tracked(
                self.tracker,
                run_id,
                config,
                self.splits,
                device,
                hooks=[report_to_optuna],
                precision=self.precision,
                compile_model=self.compile_model,
            )
        except optuna.TrialPruned as pruned:
            self._end(trial, run_id, PRUNED, FINISHED, {Tag.STOP_REASON: str(pruned)})
            trial.set_user_attr(TrialAttr.STOP_REASON, str(pruned))
            raise
        except KeyboardInterrupt as stop:
            reason = stop_reason(stop)
            self._end(trial, run_id, FAIL, KILLED, {Tag.FAIL_REASON: reason})
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            raise
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            self._end(trial, run_id, FAIL, FAILED, {Tag.FAIL_REASON: reason})
            trial.set_user_attr(TrialAttr.FAIL_REASON, reason)
            tqdm.write(f"trial {trial.number} failed: {reason}", file=sys.stderr)
            raise
        value = trial_value(fit, metric)
        trial.set_user_attr(TrialAttr.STOP_REASON, fit.stop_reason)
        trial.set_user_attr(TrialAttr.BEST_EPOCH, fit.best_epoch)
        trial.set_user_attr(TrialAttr.EPOCHS_RUN, fit.epochs_run)
        self._end(trial, run_id, COMPLETE, FINISHED, {})
        return value

    def _end(self, trial, run_id: str, state: str, status: str, tags: dict[str, str]) -> None:
        self.tracker.log(run_id, tags={Tag.TRIAL_STATE: state, **tags})
        self.tracker.end_run(run_id, status)


class RestoredValue:
    """What the trial would return if it stopped now: the metric at its best epoch so far.

    This, not the latest epoch's value, is what the trial reports to the pruner: a trial
    returns its best epoch (the trainer restores those weights), and on small validation sets
    one epoch's IoU dips by a few hundredths. Judged on the latest epoch, a good trial that dips
    at a rung is pruned. Replaying recorded learning curves (bench/learning_curves.py), the
    default pruner judged this way got near the best in fewer epochs than judged on the
    latest epoch (docs/performance.md).
    """

    def __init__(self, metric: str):
        self.metric = metric
        self.best: EpochResult | None = None

    def update(self, result: EpochResult) -> float:
        # the trainer's rule for its best epoch: the first with the highest validation IoU
        if self.best is None or result.val.iou > self.best.val.iou:
            self.best = result
        return epoch_metrics(self.best)[self.metric]


def trial_value(fit: FitResult, metric: str) -> float:
    """The study metric at the epoch whose weights were restored."""
    return epoch_metrics(fit.history[fit.best_epoch - 1])[metric]
