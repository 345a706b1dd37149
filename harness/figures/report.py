"""The report's own figures (the learning curves and prediction grids are `figures.training`)."""

import math
from dataclasses import dataclass

import numpy as np
import optuna

from harness.figures import style
from harness.figures.style import plt

COMPLETE_STYLE = {"marker": "o", "color": "tab:blue", "label": "complete"}
PRUNED_STYLE = {"marker": "x", "color": "tab:red", "label": "pruned (best value before)"}
ENDING_COLOURS = {"pruned": "tab:red", "early stopped": "tab:green", "ran all epochs": "tab:blue"}


@dataclass(frozen=True)
class ParamPoint:
    value: object  # the trial's value of the parameter
    score: float  # validation IoU: the trial value, or for a pruned trial its best before pruning
    pruned: bool


def param_effects(
    points: dict[str, list[ParamPoint]],
    distributions: dict[str, optuna.distributions.BaseDistribution],
    ylabel: str,
):
    """One panel per searched parameter: the trial's score against the parameter's value."""
    names = list(points)
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        distribution = distributions[name]
        categorical = isinstance(distribution, optuna.distributions.CategoricalDistribution)
        for pruned, marker_style in ((False, COMPLETE_STYLE), (True, PRUNED_STYLE)):
            chosen = [p for p in points[name] if p.pruned == pruned]
            if not chosen:
                continue
            xs = [distribution.choices.index(p.value) if categorical else p.value for p in chosen]
            ax.scatter(xs, [p.score for p in chosen], alpha=0.75, linestyle="none", **marker_style)
        if categorical:
            ax.set_xticks(range(len(distribution.choices)), [str(c) for c in distribution.choices])
        elif getattr(distribution, "log", False):
            ax.set_xscale("log")
        elif isinstance(distribution, optuna.distributions.IntDistribution):
            style.integer_ticks(ax.xaxis)
        ax.set(xlabel=name, ylabel=ylabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.remove()
    axes.flat[0].legend(fontsize=8)
    style.readable_log_ticks(fig)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class TrialCompute:
    number: int
    epochs: int  # epochs run
    seconds: float  # their measured time
    ending: str  # a key of ENDING_COLOURS


def epochs_per_trial(trials: list[TrialCompute], max_epochs: int):
    """A bar per trial: epochs it ran, coloured by how it ended, against the full budget."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.22 * len(trials) + 2), 3.6))
    for ending, colour in ENDING_COLOURS.items():
        chosen = [t for t in trials if t.ending == ending]
        if chosen:
            ax.bar(
                [t.number for t in chosen],
                [t.epochs for t in chosen],
                color=colour,
                label=ending,
            )
    ax.axhline(max_epochs, color="black", linestyle="--", linewidth=1, label="max_epochs")
    ax.set(xlabel="trial", ylabel="epochs run", ylim=(0, max_epochs * 1.15))
    style.integer_ticks(ax.xaxis)
    style.integer_ticks(ax.yaxis)
    ax.legend(fontsize=8, ncols=4, loc="upper center")
    fig.tight_layout()
    return fig


def iou_histogram(ious: np.ndarray, title: str):
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(ious, bins=20, range=(0, 1), color="tab:blue")
    ax.set(xlabel="per-image mean IoU", ylabel="test images", title=title)
    fig.tight_layout()
    return fig
