"""A study's figures: Optuna's matplotlib plots made to read cleanly, and the importances.

Optuna's plots call the value "Objective Value" (they take a `target_name` argument and do not
read the study's metric names), leave pruned trials out of the history without a word, draw
epochs as "Step" with fractional ticks, and label short log ranges so that the ticks
overprint. Each function here draws Optuna's plot and then mends those points on it.

Parameter importances have one method everywhere, Optuna's default, PED-ANOVA (what
`optuna.importance.get_param_importances` and optuna-dashboard compute): the parent run's
figure and the report show the same numbers, named on the figure. With few complete trials
any method ranks noise, so the figure says so under it.
"""

import warnings

import optuna
import optuna.visualization.matplotlib as optuna_plots
from matplotlib.figure import Figure
from optuna.distributions import IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.errors import first_line
from harness.figures import style
from harness.figures.style import plt
from harness.names import FigureName

IMPORTANCE_METHOD = "PED-ANOVA"
# Below this many complete trials, importances are mostly noise (PED-ANOVA looks at the top
# tenth of the trials; Optuna's documentation asks for at least 5 trials above that quantile).
FEW_TRIALS_FOR_IMPORTANCES = 10
MIN_TRIALS_TO_PLOT = 2
FIGURE_SIZE = (9, 5)
MAX_LEGEND_TRIALS = 12  # the intermediate-values legend names each trial: beyond this, none
PRUNED_STYLE = {"marker": "x", "color": "tab:red"}


def completed(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def metric_name(study: optuna.Study) -> str:
    """The study's metric (`harness.search.studies.open_study` sets it), for axis labels."""
    names = study.metric_names
    return names[0] if names else "trial value"


def reached_value(trial: FrozenTrial, maximize: bool) -> float | None:
    """The trial value; a pruned trial's best intermediate value stands in for it."""
    if trial.state == TrialState.COMPLETE:
        return trial.value
    values = list(trial.intermediate_values.values())
    if not values:
        return None
    return max(values) if maximize else min(values)


def maximizes(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


# --- importances -----------------------------------------------------------------------------


def param_importances(study: optuna.Study) -> dict[str, float] | str:
    """PED-ANOVA importances over the complete trials, or why there are none."""
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    try:
        with warnings.catch_warnings():
            # with few trials PED-ANOVA warns that its two quantiles pick the same trials:
            # importance_warning says that in the user's words
            warnings.simplefilter("ignore", UserWarning)
            return optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as error:
        return first_line(error)


def importance_warning(study: optuna.Study) -> str | None:
    """A plain warning while the study has too few complete trials for importances to mean much."""
    count = len(completed(study))
    if count >= FEW_TRIALS_FOR_IMPORTANCES:
        return None
    return (
        f"Only {count} complete trial{'s' if count != 1 else ''}: with fewer than "
        f"{FEW_TRIALS_FOR_IMPORTANCES}, these importances are mostly noise."
    )


def importances_figure(values: dict[str, float], warning: str | None) -> Figure:
    """Horizontal bars, most important on top, the method in the title, the warning below."""
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + (2.0 if warning else 1.5)))
    ax.barh(names, [values[n] for n in names], color="tab:blue")
    ax.set(
        xlabel="importance for the trial value",
        xlim=(0, 1),
        title=f"Parameter importances ({IMPORTANCE_METHOD}, Optuna's default)",
    )
    if warning:
        fig.text(0.5, 0.01, warning, ha="center", va="bottom", fontsize=9, color="tab:red")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
    else:
        fig.tight_layout()
    return fig


def param_importances_plot(study: optuna.Study) -> Figure | None:
    if len(completed(study)) < MIN_TRIALS_TO_PLOT:
        return None
    values = param_importances(study)
    if isinstance(values, str):
        return None
    return importances_figure(values, importance_warning(study))


# --- Optuna's plots, mended ----------------------------------------------------------------


def optimization_history(study: optuna.Study) -> Figure | None:
    """Trial values in order and the best so far, with pruned trials marked at the best value
    they reached (Optuna's plot draws complete trials only)."""
    metric = metric_name(study)
    figure = _optuna_figure(optuna_plots.plot_optimization_history, study, target_name=metric)
    if figure is None:
        return None
    ax = figure.axes[0]
    pruned = [
        (trial.number, reached_value(trial, maximizes(study)))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        if trial.intermediate_values
    ]
    if pruned:
        numbers, values = zip(*pruned)
        ax.scatter(numbers, values, label="pruned (best value before)", **PRUNED_STYLE)
    ax.legend(bbox_to_anchor=(1.02, 1), loc="upper left", fontsize=9)
    style.integer_ticks(ax.xaxis)
    figure.tight_layout()
    return figure


def intermediate_values(study: optuna.Study) -> Figure | None:
    """What each trial reported per epoch (its best epoch so far, as the pruner judges it)."""
    figure = _optuna_figure(optuna_plots.plot_intermediate_values, study)
    if figure is None:
        return None
    ax = figure.axes[0]
    ax.set(xlabel="epoch", ylabel=f"{metric_name(study)} of the best epoch so far")
    style.integer_ticks(ax.xaxis)
    legend = ax.get_legend()
    if legend is not None and len(study.trials) > MAX_LEGEND_TRIALS:
        legend.remove()
    figure.tight_layout()
    return figure


def parallel_coordinate(study: optuna.Study) -> Figure | None:
    figure = _optuna_figure(
        optuna_plots.plot_parallel_coordinate, study, target_name=metric_name(study)
    )
    if figure is None:
        return None
    ax = figure.axes[0]
    # one twin axis per parameter, in the order Optuna draws them: sorted by name
    twins = [a for a in figure.axes[1:] if a.get_shared_x_axes().joined(a, ax)]
    distributions = {}
    for trial in completed(study):
        distributions.update(trial.distributions)
    if len(twins) == len(distributions):
        for twin, name in zip(twins, sorted(distributions)):
            distribution = distributions[name]
            if isinstance(distribution, IntDistribution) and not distribution.log:
                style.integer_ticks(twin.yaxis)
    style.readable_log_ticks(figure)
    return figure


def _optuna_figure(plot, study: optuna.Study, **kwargs) -> Figure | None:
    """One of Optuna's matplotlib plots, or None while the study is too small to draw it."""
    if len(completed(study)) < MIN_TRIALS_TO_PLOT:
        return None
    # Optuna flags its matplotlib plots as experimental, and the parallel-coordinate plot's
    # colour bar defeats tight_layout; neither is the user's business.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            axes = plot(study, **kwargs)
        except (ValueError, RuntimeError):
            return None  # e.g. a plot that needs two distinct parameter values
        axes = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = axes.get_figure()
        figure.set_size_inches(*FIGURE_SIZE)
        figure.tight_layout()
    return figure


# The parent run's figures/, by file name.
STUDY_FIGURES = {
    FigureName.OPTIMIZATION_HISTORY: optimization_history,
    FigureName.INTERMEDIATE_VALUES: intermediate_values,
    FigureName.PARAM_IMPORTANCES: param_importances_plot,
    FigureName.PARALLEL_COORDINATE: parallel_coordinate,
}
