"""What the study's parent run shows: best params and value, a CSV of trials, Optuna's plots."""

import tempfile
import warnings
from pathlib import Path

import optuna
import optuna.visualization.matplotlib as optuna_plots

from harness import plots
from harness.objective import RUN_ID_ATTR, STOP_REASON_ATTR
from harness.tracking import Tracker

TRIALS_CSV = "trials.csv"
BEST_PARAM_TAG_PREFIX = "best."  # params are immutable in MLflow, and the best changes on resume

PLOTS = {
    "optimization_history.png": optuna_plots.plot_optimization_history,
    "intermediate_values.png": optuna_plots.plot_intermediate_values,
    "param_importances.png": optuna_plots.plot_param_importances,
    "parallel_coordinate.png": optuna_plots.plot_parallel_coordinate,
}


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def log_study_summary(
    tracker: Tracker, parent_run_id: str, study: optuna.Study, metric: str
) -> None:
    if completed(study):
        best = study.best_trial
        tracker.log(
            parent_run_id,
            metrics={f"best_{metric}": best.value, "best_trial": best.number},
            tags={
                **{f"{BEST_PARAM_TAG_PREFIX}{k}": v for k, v in best.params.items()},
                "best.trial_number": best.number,
                "best.run_id": best.user_attrs.get(RUN_ID_ATTR, ""),
            },
        )
    counts = {state.name.lower(): 0 for state in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    tracker.log(
        parent_run_id,
        metrics={f"trials_{state}": n for state, n in counts.items() if state != "waiting"},
    )
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / TRIALS_CSV
        study.trials_dataframe().to_csv(csv, index=False)
        tracker.client.log_artifact(parent_run_id, str(csv))
    for name, plot in PLOTS.items():
        figure = study_figure(study, plot)
        if figure is not None:
            tracker.log_figure(parent_run_id, figure, name)
            plots.close(figure)


def study_figure(study: optuna.Study, plot):
    """One of Optuna's matplotlib plots, or None while the study is too small to draw it."""
    if len(completed(study)) < 2:
        return None
    # Optuna flags its matplotlib plots as experimental, and the parallel-coordinate plot's
    # colour bar defeats tight_layout; neither is the user's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            axes = plot(study)
        except (ValueError, RuntimeError):
            return None  # e.g. importances when every trial has the same params
        axes = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = axes.get_figure()
        figure.set_size_inches(9, 5)
        figure.tight_layout()
    return figure


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
            t.user_attrs.get(STOP_REASON_ATTR, ""),
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
