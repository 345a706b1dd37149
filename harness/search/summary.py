"""What the study's parent run shows: best params and value, a CSV of trials, Optuna's plots."""

import tempfile
from pathlib import Path

import optuna

from harness.figures import style
from harness.figures.study import STUDY_FIGURES, completed
from harness.names import Artifact, Metric, Tag, TrialAttr, study_best_metric, trials_metric
from harness.tracking import Tracker


def log_study_summary(
    tracker: Tracker, parent_run_id: str, study: optuna.Study, metric: str
) -> None:
    if completed(study):
        best = study.best_trial
        tracker.log(
            parent_run_id,
            metrics={study_best_metric(metric): best.value, Metric.BEST_TRIAL: best.number},
            tags={
                **{f"{Tag.BEST_PARAM_PREFIX}{k}": v for k, v in best.params.items()},
                Tag.BEST_TRIAL_NUMBER: best.number,
                Tag.BEST_RUN_ID: best.user_attrs.get(TrialAttr.RUN_ID, ""),
            },
        )
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    tracker.log(
        parent_run_id,
        metrics={trials_metric(state): n for state, n in counts.items() if state != "waiting"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / Artifact.TRIALS_CSV
        study.trials_dataframe().to_csv(csv, index=False)
        tracker.client.log_artifact(parent_run_id, str(csv))
    for name, plot in STUDY_FIGURES.items():
        figure = plot(study)
        if figure is not None:
            tracker.log_figure(parent_run_id, figure, name)
            style.close(figure)


def top_trials_table(study: optuna.Study, metric: str, count: int = 5) -> str:
    ranked = sorted(
        completed(study), key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE"
    )
    params = list(ranked[0].params) if ranked else []
    header = ["trial", metric, *params, "epochs", "ended"]
    rows = [
        [
            str(t.number),
            f"{t.value:.4f}",
            *(_format(t.params.get(p)) for p in params),
            str(len(t.intermediate_values)),
            t.user_attrs.get(TrialAttr.STOP_REASON, ""),
        ]
        for t in ranked[:count]
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in [header, *rows]
    )


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
