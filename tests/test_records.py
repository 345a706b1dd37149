"""The records read the way MLflow, Optuna and their users expect: run tags, dataset inputs,
metric names, pruned trials, importances, stores, figures. Real stores, real tiny studies."""

import itertools
import subprocess
from pathlib import Path

import numpy as np
import optuna
import optuna.visualization
import pytest
import torch
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

import harness
from harness import predict, promote
from harness.cli import run_main
from harness.figures import report as figures
from harness.figures import study as study_plots
from harness.figures import style, training
from harness.names import PRUNED_NAME_SUFFIX, Metric, Tag, TrialAttr, study_best_metric
from harness.report import command as report
from harness.report.reading import run_history
from harness.runs import load_run_model, log_evaluation
from harness.search import SearchOptions, run_search
from harness.search.objective import Objective
from harness.search.spaces import load_space
from harness.search.summary import log_study_summary
from harness.tracking import Tracker
from harness.transfer import command as transfer
from tests.helpers import TINY_SEARCH_SPACE, toy_splits


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tracking_uri):
    """A real three-trial search with its confirmation and refit; returns its result, storage URL
    and runs (parent first, then the trials', confirmations' and refit's)."""
    folder = tmp_path_factory.mktemp("records")
    space = folder / "tiny.toml"
    space.write_text(TINY_SEARCH_SPACE)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    result = run_search(
        SearchOptions(
            space=str(space),
            data="synthetic:48",
            study="records",
            storage=storage,
            tracking_uri=tracking_uri,
            trials=3,
            confirm_top=2,
            confirm_seeds=1,
            promote=False,
            progress_bar=False,
            cache_dir=str(folder / "cache"),
        )
    )
    tracker = Tracker(tracking_uri)
    children = tracker.client.search_runs(
        [result.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    trial_runs = {
        tracker.client.get_run(t.user_attrs[TrialAttr.RUN_ID]).info.run_id
        for t in result.study.trials
    }
    assert trial_runs < {r.info.run_id for r in children}  # and 3 confirmation and refit runs
    return result, storage, [tracker.client.get_run(result.parent_run_id), *children]


@pytest.fixture(scope="module")
def pruned(tracking_uri, tmp_path_factory):
    """Two complete trials and a pruned one (the median rule on learnable toy data), summed
    up on their parent run."""
    space_file = tmp_path_factory.mktemp("pruned") / "lr.toml"
    space_file.write_text(
        '[params.lr]\ntype = "float"\nlow = 1e-6\nhigh = 1e-1\nlog = true\n'
        "[fixed]\ndepth = 2\nbase_channels = 4\nbatch_size = 8\npatience = 5\naug_p = 0.0\n"
    )
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("records-pruned")
    parent = tracker.start_run(experiment_id, "pruned", tags={Tag.ROLE: "study"})
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3),
    )
    study.set_metric_names(["val_iou"])
    objective = Objective(
        load_space(str(space_file)), toy_splits(), tracker, experiment_id, parent,
        "pruned", max_epochs=4, seed=0, device="cpu",
        precision="bf16",  # what `auto` picks on a CPU or GPU with native bfloat16
    )  # fmt: skip
    for lr in (3e-2, 1e-2):  # these learn and set the median
        study.enqueue_trial({"lr": lr})
    study.enqueue_trial({"lr": 1e-6})  # learns nothing: far below the median at epoch 3
    study.optimize(objective, n_trials=3)
    log_study_summary(tracker, parent, study, "val_iou")
    tracker.end_run(parent, "FINISHED")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    return study, tracker, experiment_id, parent


# --- run tags ------------------------------------------------------------------------------


def package_commit() -> str | None:
    folder = Path(harness.__file__).parent
    done = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True)
    return done.stdout.decode().strip() if done.returncode == 0 else None


def test_every_run_carries_source_user_and_code_version(searched):
    _, _, runs = searched
    expected = resolve_tags()  # what MLflow's fluent API would set in this process
    commit = package_commit()
    for run in runs:
        tags = run.data.tags
        assert tags[MLFLOW_USER] == expected[MLFLOW_USER]
        assert tags[MLFLOW_SOURCE_NAME] == expected[MLFLOW_SOURCE_NAME]
        assert tags[MLFLOW_SOURCE_TYPE] == "LOCAL"
        assert tags[Tag.VERSION] == harness.__version__
        # the commit of the harness checkout, whatever script started Python
        assert tags.get(MLFLOW_GIT_COMMIT) == commit


def test_every_run_logs_its_splits_as_dataset_inputs(searched, client):
    result, _, runs = searched
    fingerprint = result.study.user_attrs["dataset_fingerprint"]
    sizes = {"train": None, "validation": None, "test": None}
    for run in runs:
        inputs = run.inputs.dataset_inputs
        contexts = {i.tags[0].value: i.dataset for i in inputs}
        assert set(contexts) == set(sizes)
        assert {d.digest for d in contexts.values()} == {fingerprint}
        assert len({d.name for d in contexts.values()}) == 3
        assert all(d.name.startswith("synthetic:48 ") for d in contexts.values())
        assert '"features_shape": [' in contexts["train"].profile
    # the UI's dataset filter finds every run of the study
    found = client.search_runs(
        [result.experiment_id], filter_string=f"dataset.digest = '{fingerprint}'"
    )
    assert {r.info.run_id for r in found} == {r.info.run_id for r in runs}
    found = client.search_runs(
        [result.experiment_id], filter_string="dataset.context = 'validation'"
    )
    assert {r.info.run_id for r in found} == {r.info.run_id for r in runs}


# --- the Optuna study ----------------------------------------------------------------------


def test_the_study_names_its_metric_and_optuna_visualization_draws_it(searched):
    _, storage, _ = searched
    study = optuna.load_study(study_name="records", storage=storage)
    assert study.metric_names == ["val_iou"]  # optuna-dashboard's name for the objective
    assert "value_val_iou" in study.trials_dataframe().columns  # trials.csv names it too
    for plot in (
        optuna.visualization.plot_optimization_history,
        optuna.visualization.plot_intermediate_values,
        optuna.visualization.plot_parallel_coordinate,
        optuna.visualization.plot_slice,
        optuna.visualization.plot_param_importances,
    ):
        figure = plot(study)
        assert figure.data, plot.__name__


def test_importances_are_optuna_s_default_named_and_flagged_with_few_trials(searched):
    result, _, _ = searched
    values = study_plots.param_importances(result.study)
    # what optuna-dashboard and Optuna's own plot compute
    assert values == optuna.importance.get_param_importances(result.study)
    warning = study_plots.importance_warning(result.study)
    complete = len(study_plots.completed(result.study))
    assert warning.startswith(f"Only {complete} complete trial") and "noise" in warning
    figure = study_plots.importances_figure(values, warning)
    assert "PED-ANOVA" in figure.axes[0].get_title()
    assert [t.get_text() for t in figure.texts] == [warning]
    style.close(figure)


def test_importances_need_no_warning_from_ten_complete_trials():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + 0.1 * t.suggest_float("y", 0, 1), 10)
    assert study_plots.importance_warning(study) is None
    assert set(study_plots.param_importances(study)) == {"x", "y"}


# --- pruned trials and sorting -------------------------------------------------------------


def test_a_pruned_trial_is_named_and_sums_up_what_it_reached(pruned, client):
    study, _, _, _ = pruned
    good, _, slow = (client.get_run(t.user_attrs[TrialAttr.RUN_ID]) for t in study.trials)
    assert slow.info.run_name == "trial-002" + PRUNED_NAME_SUFFIX
    assert good.info.run_name == "trial-000"
    history = {m.step: m.value for m in client.get_metric_history(slow.info.run_id, "val_iou")}
    best_epoch = max(history, key=lambda step: (history[step], -step))
    assert slow.data.metrics[Metric.BEST_VAL_IOU] == history[best_epoch]
    assert slow.data.metrics[Metric.BEST_EPOCH] == best_epoch
    assert slow.data.metrics[Metric.EPOCHS_RUN] == 3 == len(history)
    assert slow.data.metrics[Metric.BEST_VAL_IOU] == max(
        study.trials[2].intermediate_values.values()
    )


def test_sorting_by_best_val_iou_lists_the_trials_not_the_study(pruned, client):
    study, _, experiment_id, parent = pruned
    ranked = client.search_runs([experiment_id], order_by=[f"metrics.{Metric.BEST_VAL_IOU} DESC"])
    with_metric = [r for r in ranked if Metric.BEST_VAL_IOU in r.data.metrics]
    reached = sorted(study.trials, key=lambda t: -study_plots.reached_value(t, maximize=True))
    assert [r.info.run_id for r in with_metric] == [t.user_attrs[TrialAttr.RUN_ID] for t in reached]
    assert with_metric[-1].info.run_name.endswith(PRUNED_NAME_SUFFIX)  # it reached least
    parent_run = client.get_run(parent)
    assert Metric.BEST_VAL_IOU not in parent_run.data.metrics
    assert parent_run.data.metrics[study_best_metric("val_iou")] == study.best_value


# --- scores ---------------------------------------------------------------------------------


def test_the_final_validation_iou_is_the_trial_value(pruned):
    """The restored weights scored again on the validation split (the report's and the
    search's table) give the trial value itself, not a float32 rescoring of a bfloat16 run."""
    study, tracker, _, _ = pruned
    cpu = torch.device("cpu")
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        run_id = trial.user_attrs[TrialAttr.RUN_ID]
        model = load_run_model(tracker, run_id, cpu)
        scores = log_evaluation(tracker, run_id, model, toy_splits(), cpu)
        assert scores["val"].iou == trial.value
        assert tracker.client.get_run(run_id).data.metrics["final_val_iou"] == trial.value


# --- read-only commands ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "argv"),
    [
        (predict, ["--out", "masks", "image.png"]),
        (report, ["--study", "any"]),
        (promote, ["--run-id", "0" * 32]),
        (transfer, ["--run-id", "0" * 32]),
    ],
    ids=["predict", "report", "promote", "transfer"],
)
@pytest.mark.parametrize("explicit", [False, True], ids=["default-uri", "explicit-uri"])
def test_a_read_only_command_never_creates_a_store(module, argv, explicit, tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "image.png")
    store = tmp_path / ("elsewhere.db" if explicit else "mlflow.db")
    extra = ["--tracking-uri", f"sqlite:///{store}"] if explicit else []

    code = run_main(module.main, [*argv, *extra])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"no MLflow tracking store at {store}" in err[0]
    assert not store.exists() and not Path(f"{store}.lock").exists()
    assert not (tmp_path / "mlruns").exists()


# --- figures ---------------------------------------------------------------------------------


def clashing_tick_labels(figure) -> list[tuple[str, str]]:
    """Pairs of drawn tick labels on one axis whose boxes overlap."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    clashes = []
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            boxes = [
                (label.get_text(), label.get_window_extent(renderer))
                for minor in (False, True)
                for loc, label in zip(axis.get_ticklocs(minor=minor), axis.get_ticklabels(minor))
                if label.get_visible() and label.get_text() and low <= loc <= high
            ]
            clashes += [
                (a, b) for (a, x), (b, y) in itertools.combinations(boxes, 2) if x.overlaps(y)
            ]
    return clashes


def tick_texts(axis) -> list[str]:
    axis.figure.canvas.draw()
    low, high = sorted(axis.get_view_interval())
    return [
        label.get_text()
        for loc, label in zip(axis.get_ticklocs(), axis.get_ticklabels())
        if low <= loc <= high and label.get_text()
    ]


def test_a_short_log_range_reads_cleanly():
    """lr over one decade: matplotlib's own labels (2x10^-2, 3x10^-2, ...) overprint here."""
    distribution = optuna.distributions.FloatDistribution(5e-3, 5e-2, log=True)
    lrs = np.geomspace(5.5e-3, 4.6e-2, 6)
    points = {"lr": [figures.ParamPoint(v, 0.5 + v, i % 2 == 1) for i, v in enumerate(lrs)]}
    figure = figures.param_effects(points, {"lr": distribution}, "validation IoU")
    assert clashing_tick_labels(figure) == []
    assert tick_texts(figure.axes[0].xaxis) == ["0.005", "0.01", "0.02", "0.05"]
    style.close(figure)


def test_the_study_figures_read_cleanly(searched, pruned):
    result, _, _ = searched
    for study in (result.study, pruned[0]):
        for name, plot in study_plots.STUDY_FIGURES.items():
            figure = plot(study)
            assert figure is not None, name
            assert clashing_tick_labels(figure) == [], name
            style.close(figure)


def test_epoch_and_trial_axes_have_whole_number_ticks(searched, pruned):
    result, _, runs = searched
    history = run_history(pruned[1], pruned[1].client.get_run(
        pruned[0].trials[0].user_attrs[TrialAttr.RUN_ID]).info.run_id)  # fmt: skip
    curves = training.learning_curves(history)
    for figure, axes in (
        (curves, curves.axes),
        (study_plots.intermediate_values(result.study), None),
        (study_plots.optimization_history(result.study), None),
    ):
        for ax in axes or figure.axes[:1]:
            texts = tick_texts(ax.xaxis)
            assert texts and all(t.lstrip("−-").isdigit() for t in texts), texts
        style.close(figure)


def test_the_history_names_the_metric_and_shows_pruned_trials(pruned):
    study = pruned[0]
    figure = study_plots.optimization_history(study)
    ax = figure.axes[0]
    assert ax.get_ylabel() == "val_iou"
    marks = {c.get_label(): c for c in ax.collections}
    slow = study.trials[2]
    pruned_marks = marks["pruned (best value before)"].get_offsets()
    assert pruned_marks.tolist() == [[slow.number, max(slow.intermediate_values.values())]]
    style.close(figure)


def test_only_mlflow_run_s_own_run_is_adopted(searched, tracking_uri, monkeypatch):
    """MLFLOW_RUN_ID naming a run that `mlflow run` did not make, or one in another store,
    leaves every run as it was (tests/test_mlproject.py has the run `mlflow run` makes)."""
    result, _, runs = searched
    trial = runs[1]
    tracker = Tracker(tracking_uri)
    for run_id in (trial.info.run_id, "0" * 32):
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        tracker.adopt_project_run(result.parent_run_id)
    assert tracker.client.get_run(trial.info.run_id).data.tags == trial.data.tags
