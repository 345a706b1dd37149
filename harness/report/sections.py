"""The sections of a study's report, built from what `reading` read: pure functions from
`inputs` records to `document.Section`s (text, tables and figures), with no store in sight.
"""

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from harness.data import Splits
from harness.figures import report as figures
from harness.figures import training
from harness.figures.study import (
    IMPORTANCE_METHOD,
    importance_warning,
    importances_figure,
    optimization_history,
    param_importances,
    reached_value,
)
from harness.figures.style import png_bytes
from harness.names import SPLITS, Metric, Param, TrialAttr
from harness.report.document import Block, Image, Section, Table
from harness.report.inputs import Contender, Predictions, StudyRecord, TrialRun
from harness.trainer import StopReason

# Parameters in the order the original report discussed them; others follow by name.
PARAM_ORDER = (Param.DEPTH, Param.LR, Param.BATCH_SIZE, Param.PATIENCE, Param.AUG_P)


def overview_section(record: StudyRecord, splits: Splits) -> Section:
    counts = {state.name.lower(): len(record.trials_in(state)) for state in TrialState}
    best = record.best
    blocks: list[Block] = [
        f"Data {splits.spec} at {splits.image_size} px: {len(splits.train)} train, "
        f"{len(splits.val)} validation and {len(splits.test)} test images "
        f"(fingerprint {splits.fingerprint}). Up to {record.max_epochs} epochs per trial.",
        "Trials: " + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + ".",
        f"Best trial: {best.number}, validation IoU {best.value:.4f}, with "
        + ", ".join(f"{k} = {_format(v)}" for k, v in best.params.items())
        + f". MLflow parent run {record.parent_run_id}.",
    ]
    figure = optimization_history(record.study)
    if figure is not None:
        blocks.append(
            Image(
                "optimization_history.png",
                "Trial values in order, and the best so far; a pruned trial (x) is drawn at "
                "the best value it reached before it was pruned.",
                png_bytes(figure),
            )
        )
    return Section("Study", blocks)


def comparison_section(record: StudyRecord, contenders: list[Contender]) -> Section:
    overall = record.best.number
    scores_header = ["model", "trial"]
    scores_header += [
        f"{s} {n}" for s in ("train", "val", "test") for n in ("accuracy", "mean IoU")
    ]
    scores_header += ["median s / epoch", "training s"]
    shown_params = (Param.BASE_CHANNELS, Param.LR, Param.BATCH_SIZE, Param.PATIENCE, Param.AUG_P)
    params_header = ["model", "trial", *shown_params, "epochs run", "best epoch", "ended"]
    scores_rows, params_rows = [], []
    for c in contenders:
        model = c.label + (" (best)" if c.trial.number == overall else "")
        epoch_times = [r.epoch_time_s for r in c.history]
        scores_rows.append(
            [
                model,
                str(c.trial.number),
                *(f"{getattr(c.scores[s], n):.4f}" for s in SPLITS for n in ("accuracy", "iou")),
                f"{np.nanmedian(epoch_times):.2f}" if epoch_times else "",
                _metric(c.run, Metric.TRAIN_TIME_S, "{:.1f}"),
            ]
        )
        params_rows.append(
            [
                model,
                str(c.trial.number),
                *(_format_text(c.run.params.get(p, "")) for p in shown_params),
                str(len(c.trial.intermediate_values)),
                _metric(c.run, Metric.BEST_EPOCH, "{:.0f}"),
                c.trial.user_attrs.get(TrialAttr.STOP_REASON, ""),
            ]
        )
    return Section(
        "UNet depths compared",
        [
            "The best completed trial of each depth, its restored best weights scored on the "
            "whole, unaugmented splits (pixel accuracy and mean IoU over background and foreground). "
            "Scores are taken under the autocast the trial trained with, so the validation "
            "mean IoU is the trial value. Time per epoch is the median measured epoch, "
            "validation included (one slow epoch, such as the first, does not move it).",
            Table(scores_header, scores_rows),
            Table(params_header, params_rows),
            *uncompleted_depths(record, {c.depth for c in contenders}),
        ],
    )


def uncompleted_depths(record: StudyRecord, shown: set[int]) -> list[str]:
    """A line for each depth the study tried without completing a trial of it."""
    endings: dict[int, list[str]] = {}
    for trial in record.trials_in(TrialState.PRUNED, TrialState.FAIL):
        depth = record.depth_of(trial)
        if depth is not None:
            endings.setdefault(depth, []).append(trial.state.name)
    return [
        f"Depth {depth}: no completed trial ("
        + ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
        + ")."
        for depth, states in sorted(endings.items())
        if depth not in shown
    ]


def learning_curves_section(contenders: list[Contender]) -> Section:
    blocks: list[Block] = [
        "Loss and mean IoU per epoch of the trials in the table (training on augmented "
        "batches, validation unaugmented), from their MLflow metric histories."
    ]
    for c in contenders:
        if not c.history:
            continue
        figure = training.learning_curves(c.history)
        figure.suptitle(f"{c.label}, trial {c.trial.number}")
        figure.tight_layout()
        blocks.append(
            Image(
                f"learning_curves_depth{c.depth}.png",
                f"Learning curves of {c.label} (trial {c.trial.number}).",
                png_bytes(figure),
            )
        )
    return Section("Learning curves", blocks)


def parameters_section(record: StudyRecord) -> Section:
    finished = record.trials_in(TrialState.COMPLETE, TrialState.PRUNED)
    distributions = {}
    for trial in finished:
        distributions.update(trial.distributions)
    names = sorted(
        distributions,
        key=lambda n: (n not in PARAM_ORDER, PARAM_ORDER.index(n) if n in PARAM_ORDER else 0, n),
    )
    blocks: list[Block] = []
    if not names:
        return Section("Searched parameters", ["The study searched no parameter."])
    points = {name: [] for name in names}
    for trial in finished:
        score = reached_value(trial, record.maximize)
        if score is None:
            continue
        for name in names:
            if name in trial.params:
                points[name].append(
                    figures.ParamPoint(trial.params[name], score, trial.state == TrialState.PRUNED)
                )
    blocks.append(
        f"Validation IoU of every finished trial ({len(finished)}) against each searched "
        "parameter; a pruned trial is drawn at the best value it reached before it was pruned."
    )
    blocks.append(
        Image(
            "param_effects.png",
            "Validation IoU against each searched parameter.",
            png_bytes(figures.param_effects(points, distributions, "validation IoU")),
        )
    )
    importances = param_importances(record.study)
    if isinstance(importances, str):
        blocks.append(f"Optuna's parameter importances: not computable ({importances}).")
    else:
        warning = importance_warning(record.study)
        blocks.append(
            f"Optuna's parameter importances ({IMPORTANCE_METHOD}, Optuna's default and what "
            "optuna-dashboard shows, over the complete trials): how much each parameter "
            "decides whether a trial reaches the top tenth of the trial values."
            + (f" {warning}" if warning else "")
        )
        blocks.append(
            Table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importances.items()])
        )
        blocks.append(
            Image(
                "param_importances.png",
                f"Optuna's parameter importances ({IMPORTANCE_METHOD}).",
                png_bytes(importances_figure(importances, warning)),
            )
        )
    return Section("Searched parameters", blocks)


def trial_ending(trial: FrozenTrial) -> str:
    if trial.state == TrialState.PRUNED:
        return "pruned"
    if trial.user_attrs.get(TrialAttr.STOP_REASON) == StopReason.EARLY_STOPPED:
        return "early stopped"
    return "ran all epochs"


def trial_compute(trial: FrozenTrial, seconds: float) -> figures.TrialCompute:
    """Epochs (one Optuna report each) and the measured seconds of a finished trial."""
    return figures.TrialCompute(
        trial.number, len(trial.intermediate_values), seconds, trial_ending(trial)
    )


def compute_row(label: str, trials: list[figures.TrialCompute], budget: int) -> list[str]:
    run = sum(t.epochs for t in trials)
    full = budget * len(trials)
    seconds = sum(t.seconds for t in trials)
    # what the skipped epochs would have cost, at each trial's own mean epoch time
    saved_s = sum((budget - t.epochs) * t.seconds / t.epochs for t in trials if t.epochs)
    saved = f"{budget * len(trials) - run} ({1 - run / full:.0%})"
    return [label, str(len(trials)), str(run), str(full), saved, f"{seconds:.0f}", f"{saved_s:.0f}"]


def pruning_section(record: StudyRecord, seconds: dict[int, float]) -> Section:
    """`seconds`: each finished trial's measured epoch times summed, by trial number."""
    budget = record.max_epochs
    trials = [
        trial_compute(t, seconds[t.number])
        for t in record.trials_in(TrialState.COMPLETE, TrialState.PRUNED)
    ]
    groups = {
        ending: [t for t in trials if t.ending == ending] for ending in figures.ENDING_COLOURS
    }
    rows = [compute_row(ending, group, budget) for ending, group in groups.items() if group]
    rows.append(compute_row("all", trials, budget))
    pruned_saved = sum(budget - t.epochs for t in groups["pruned"])
    ran = sum(t.epochs for t in trials)
    text = (
        f"A full run is {budget} epochs (max_epochs). The {len(trials)} finished trials ran "
        f"{ran} of {budget * len(trials)} epochs; pruning skipped {pruned_saved} of them "
        f"({pruned_saved / (budget * len(trials)):.0%} of the budget), early stopping "
        f"{budget * len(trials) - ran - pruned_saved}. Seconds are the measured epoch times; "
        "saved seconds assume that each skipped epoch would have taken the trial's own mean "
        "epoch time."
    )
    failed = len(record.trials_in(TrialState.FAIL))
    if failed:
        text += f" {failed} failed trial(s) are not counted."
    header = ["ended", "trials", "epochs run", "full runs' epochs", "epochs saved", "seconds"]
    return Section(
        "Compute saved by pruning and early stopping",
        [
            text,
            Table([*header, "seconds saved (est.)"], rows),
            Image(
                "epochs_per_trial.png",
                "Epochs each trial ran, against the full budget.",
                png_bytes(figures.epochs_per_trial(trials, budget)),
            ),
        ],
    )


def predictions_section(predictions: Predictions, samples: int, worst: int) -> Section:
    """The first `samples` test images and the `worst` ones by per-image IoU."""
    test, ious = predictions.test, predictions.ious
    shown = np.arange(min(samples, len(test)))
    lowest = np.argsort(ious, kind="stable")[: min(worst, len(test))]

    def grid(indices: np.ndarray, name: str, caption: str) -> Image:
        titles = [f"{test.names[i]}, IoU {ious[i]:.2f}" for i in indices]
        figure = training.prediction_grid(
            test.images[indices], test.masks[indices], predictions.masks[indices], titles
        )
        return Image(name, caption, png_bytes(figure))

    return Section(
        "Test predictions of the best model",
        [
            f"Trial {predictions.trial} on the {len(test)} test images: per-image mean IoU "
            f"{ious.mean():.4f} on average (median {np.median(ious):.4f}, lowest {ious.min():.4f}); "
            f"{int((ious < 0.5).sum())} image(s) below 0.5.",
            grid(
                shown,
                "test_predictions.png",
                f"The first {len(shown)} test images: image, truth, prediction.",
            ),
            grid(
                lowest,
                "test_worst.png",
                f"The {len(lowest)} test images with the lowest per-image IoU.",
            ),
            Image(
                "test_iou_histogram.png",
                "Per-image mean IoU on the test split.",
                png_bytes(figures.iou_histogram(ious, f"trial {predictions.trial}")),
            ),
        ],
    )


# --- small helpers ---------------------------------------------------------------------------


def _metric(run: TrialRun, name: str, form: str) -> str:
    value = run.metrics.get(name)
    return "" if value is None else form.format(value)


def _format(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _format_text(text: str) -> str:
    """An MLflow param (always a string) shortened like `_format` when it is a float."""
    if text.lstrip("-").isdigit():
        return text
    try:
        return _format(float(text))
    except ValueError:
        return text
