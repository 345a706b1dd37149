"""What a report is built from: plain records that `reading` fills from the stores and
`sections` turns into text, tables and figures. Nothing here talks to MLflow.

A test builds these by hand (an in-memory Optuna study, made-up runs) to check a section
without running a search.
"""

from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.data import SegmentationSet
from harness.metrics import Scores
from harness.names import Param, TrialAttr
from harness.trainer import EpochResult


@dataclass(frozen=True)
class TrialRun:
    """What the report uses of a trial's MLflow run."""

    run_id: str
    params: dict[str, str]  # as MLflow keeps them: strings
    metrics: dict[str, float]  # the latest value of each, as read with the study


@dataclass(frozen=True)
class StudyRecord:
    """A study, its trials and their runs, read once."""

    # Optuna's own analyses (the optimization history, the importances) take the study itself;
    # everything else reads `trials`.
    study: optuna.Study
    trials: tuple[FrozenTrial, ...]  # every trial, in number order
    best: FrozenTrial  # the study's best trial, as its storage picks it among equal values
    maximize: bool
    metric: str  # the study's metric name, for the confirmation table
    parent_run_id: str
    runs: dict[str, TrialRun]  # by run id: the parent run's children
    max_epochs: int

    def trials_in(self, *states: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials if t.state in states]

    def run_of(self, trial: FrozenTrial) -> TrialRun | None:
        return self.runs.get(trial.user_attrs.get(TrialAttr.RUN_ID, ""))

    def depth_of(self, trial: FrozenTrial) -> int | None:
        """The depth its run trained (read from the run: the space may fix it)."""
        run = self.run_of(trial)
        if run is None or Param.DEPTH not in run.params:
            return None
        return int(run.params[Param.DEPTH])

    def best_of(self, trials: list[FrozenTrial]) -> FrozenTrial:
        return (max if self.maximize else min)(trials, key=lambda t: t.value)

    def best_per_depth(self) -> dict[int, FrozenTrial]:
        """The best completed trial of each depth, by depth."""
        by_depth: dict[int, list[FrozenTrial]] = {}
        for trial in self.trials_in(TrialState.COMPLETE):
            depth = self.depth_of(trial)
            if depth is not None:
                by_depth.setdefault(depth, []).append(trial)
        return {depth: self.best_of(trials) for depth, trials in sorted(by_depth.items())}


@dataclass(frozen=True)
class Contender:
    """The best completed trial of one depth, with its run, per-epoch history and scores."""

    depth: int
    trial: FrozenTrial
    run: TrialRun
    history: list[EpochResult]
    scores: dict[str, Scores]  # by split: its restored best weights on whole splits

    @property
    def label(self) -> str:
        return f"UNet depth {self.depth}"


@dataclass(frozen=True)
class Predictions:
    """The best trial's model on the test split."""

    trial: int  # its number
    test: SegmentationSet
    masks: np.ndarray  # uint8 (N, H, W): the predicted masks
    ious: np.ndarray  # per-image mean IoU


@dataclass(frozen=True)
class Confirmation:
    """A final stage's record on the parent run: its confirmation.csv and the run's metrics."""

    rows: list[dict[str, str]]  # one per run of the final stage
    metrics: dict[str, float]
