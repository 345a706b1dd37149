"""The search end to end: real Optuna SQLite storage, real MLflow SQLite store, real training."""

import optuna
import pytest

from harness.cli import run_main
from harness.metrics import Scores
from harness.names import Tag, TrialAttr
from harness.search import SearchOptions, run_search
from harness.search.command import main
from harness.search.objective import Objective, RestoredValue
from harness.search.spaces import load_space
from harness.tracking import Tracker
from harness.trainer import EpochResult
from tests.helpers import running_runs, toy_splits

TINY_SPACE = """
[study]
max_epochs = 3
image_size = 32
sampler_startup_trials = 2
pruner = "median"
pruner_startup_trials = 2
pruner_warmup_epochs = 1

[params.depth]
type = "int"
low = 2
high = 3

[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true

[fixed]
base_channels = 4
batch_size = 16
patience = 2
aug_p = 0.0
"""

DATA = "synthetic:48"


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPACE)
    return path


def options(space_file, tracking_uri, study, **overrides):
    return SearchOptions(
        space=str(space_file),
        data=DATA,
        study=study,
        tracking_uri=tracking_uri,
        # the trials alone, as before confirmation and refit (tests/test_confirm.py has those)
        **{"promote": False, "progress_bar": False, "confirm": False, "refit": False, **overrides},
    )


def child_runs(client, result):
    return [
        r
        for r in client.search_runs([result.experiment_id])
        if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id
    ]


def test_three_trial_study_records_every_trial_in_mlflow(space_file, tracking_uri, client):
    result = run_search(options(space_file, tracking_uri, "three", trials=3))

    trials = result.study.trials
    assert len(trials) == 3
    assert all(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in trials
    )
    runs = child_runs(client, result)
    assert len(runs) == 3
    by_id = {r.info.run_id: r for r in runs}
    for trial in trials:
        run = by_id[trial.user_attrs[TrialAttr.RUN_ID]]
        assert run.data.tags[Tag.TRIAL_STATE] == trial.state.name
        assert run.data.tags[Tag.TRIAL_NUMBER] == str(trial.number)
        assert run.data.tags[Tag.STUDY] == "three"
        assert run.data.params["depth"] == str(trial.params["depth"])
        assert float(run.data.params["lr"]) == pytest.approx(trial.params["lr"])
        history = client.get_metric_history(run.info.run_id, "val_iou")
        assert sorted(m.step for m in history) == sorted(trial.intermediate_values)
        # the pruner is told the best epoch so far: what the trial returns if it stops there
        ious = [m.value for m in sorted(history, key=lambda m: m.step)]
        best_so_far = [max(ious[: i + 1]) for i in range(len(ious))]
        reported = [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]
        assert reported == pytest.approx(best_so_far)
        assert trial.user_attrs[TrialAttr.STOP_REASON]
        assert run.info.status == "FINISHED"

    parent = client.get_run(result.parent_run_id)
    assert parent.data.tags[Tag.ROLE] == "study"
    assert parent.data.tags["best.trial_number"] == str(result.best_trial.number)
    assert parent.data.metrics["study_best_val_iou"] == pytest.approx(result.best_trial.value)
    for split in ("test", "final_train", "final_val"):
        assert 0 <= parent.data.metrics[f"{split}_iou"] <= 1
    best_run = client.get_run(result.best_trial.user_attrs[TrialAttr.RUN_ID])
    assert best_run.data.metrics["test_iou"] == parent.data.metrics["test_iou"]
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert "trials.csv" in artifacts
    figures = {a.path for a in client.list_artifacts(result.parent_run_id, "figures")}
    assert {"figures/optimization_history.png", "figures/intermediate_values.png"} <= figures
    assert not running_runs(client, result.experiment_id)


def test_resume_from_three_to_five_runs_only_the_missing_trials(space_file, tracking_uri, client):
    first = run_search(options(space_file, tracking_uri, "resume", trials=3))
    second = run_search(options(space_file, tracking_uri, "resume", trials=5))

    assert second.parent_run_id == first.parent_run_id
    finished = [t for t in second.study.trials if t.state.is_finished()]
    assert len(second.study.trials) == len(finished) == 5
    assert len(child_runs(client, second)) == 5
    studies = [
        r
        for r in client.search_runs([second.experiment_id])
        if r.data.tags.get(Tag.ROLE) == "study"
    ]
    assert len(studies) == 1
    assert not running_runs(client, second.experiment_id)

    # a third run with the same target has nothing left to do
    third = run_search(options(space_file, tracking_uri, "resume", trials=5))
    assert len(third.study.trials) == 5


def test_enqueued_configurations_are_tried_first_and_once_also_on_resume(
    space_file, tracking_uri, client
):
    first = run_search(options(space_file, tracking_uri, "known", trials=2))
    assert all(t.params["lr"] != 0.005 for t in first.study.trials)

    # the space file gains known-good configurations; the study is resumed with them
    known = space_file
    known.write_text(TINY_SPACE + "\n[[enqueue]]\ndepth = 3\nlr = 0.005\n[[enqueue]]\ndepth = 2\n")
    second = run_search(options(known, tracking_uri, "known", trials=4))
    trials = second.study.trials
    assert len(trials) == 4
    assert trials[2].params == {"depth": 3, "lr": 0.005}
    assert trials[3].params["depth"] == 2  # partial: the sampler picks the learning rate

    third = run_search(options(known, tracking_uri, "known", trials=6))
    assert len(third.study.trials) == 6
    assert sum(t.params == {"depth": 3, "lr": 0.005} for t in third.study.trials) == 1


def test_resume_on_other_data_is_refused(space_file, tracking_uri, capsys):
    run_search(options(space_file, tracking_uri, "guarded", trials=1))
    code = run_main(main, ["--space", str(space_file), "--data", "synthetic:64", "--study", "guarded",
                           "--tracking-uri", tracking_uri, "--no-progress", "--no-promote"])  # fmt: skip
    assert code == 2
    assert "guarded" in capsys.readouterr().err


def test_a_pruned_trial_is_pruned_in_optuna_and_tagged_in_mlflow(tmp_path, tracking_uri, client):
    space_file = tmp_path / "lr.toml"
    space_file.write_text(
        '[params.lr]\ntype = "float"\nlow = 1e-6\nhigh = 1e-1\nlog = true\n'
        "[fixed]\ndepth = 2\nbase_channels = 4\nbatch_size = 8\npatience = 5\naug_p = 0.0\n"
    )
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("pruning")
    parent = tracker.start_run(experiment_id, "pruning")
    study = optuna.create_study(
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=1, n_warmup_steps=3
        ),  # epochs are 1-based
    )
    objective = Objective(
        load_space(str(space_file)), toy_splits(), tracker, experiment_id, parent,
        "pruning", max_epochs=4, seed=0, device="cpu",
    )  # fmt: skip
    study.enqueue_trial({"lr": 3e-2})  # learns: sets the median
    study.enqueue_trial({"lr": 1e-6})  # learns nothing: far below the median at epoch 3
    study.optimize(objective, n_trials=2)

    good, slow = study.trials
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert slow.state == optuna.trial.TrialState.PRUNED
    assert slow.user_attrs[TrialAttr.STOP_REASON] == "pruned at epoch 3"
    assert sorted(slow.intermediate_values) == [1, 2, 3]
    run = client.get_run(slow.user_attrs[TrialAttr.RUN_ID])
    assert run.data.tags[Tag.TRIAL_STATE] == "PRUNED"
    assert run.data.tags[Tag.STOP_REASON] == "pruned at epoch 3"
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_iou")) == 3


def test_a_diverging_trial_fails_and_the_study_goes_on(space_file, tracking_uri, client, capsys):
    space_file.write_text(
        TINY_SPACE.replace("[fixed]", "[fixed]\nlr = 10.0").replace(
            '[params.lr]\ntype = "float"\nlow = 1e-3\nhigh = 1e-2\nlog = true\n', ""
        )
    )
    code = run_main(main, ["--space", str(space_file), "--data", DATA, "--trials", "2", "--study", "diverge",
                           "--tracking-uri", tracking_uri, "--no-progress", "--no-promote"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    # one line per failed trial as it happens, then one line for the outcome
    assert code == 2 and len(err) == 3 and "no trial" in err[-1]
    assert all(line.startswith(f"trial {n} failed:") for n, line in enumerate(err[:2]))

    study = optuna.load_study(study_name="diverge", storage="sqlite:///optuna.db")
    assert len(study.trials) == 2  # both attempted: the first failure did not stop the study
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.FAIL
        assert "diverged" in trial.user_attrs[TrialAttr.FAIL_REASON]
        run = client.get_run(trial.user_attrs[TrialAttr.RUN_ID])
        assert run.info.status == "FAILED"
        assert run.data.tags[Tag.TRIAL_STATE] == "FAIL"
        assert "diverged" in run.data.tags[Tag.FAIL_REASON]
    experiment = client.get_experiment_by_name("diverge")
    assert not running_runs(client, experiment.experiment_id)


def test_the_search_promotes_its_best_model(space_file, tracking_uri, client):
    result = run_search(
        options(
            space_file,
            tracking_uri,
            "promoted",
            trials=2,
            promote=True,
            registered_model="search-best",
        )
    )
    champion = client.get_model_version_by_alias("search-best", "champion")
    assert champion.tags["harness.source_run_id"] == result.best_trial.user_attrs[TrialAttr.RUN_ID]
    assert champion.tags["harness.study"] == "promoted"


def test_a_dip_after_the_best_epoch_is_not_what_the_pruner_sees():
    def epoch(number: int, iou: float, val_loss: float) -> EpochResult:
        scores = Scores(accuracy=0.9, iou=iou, fg_iou=iou)
        return EpochResult(number, 0.5, val_loss, scores, scores, epoch_time_s=1.0)

    by_iou, by_loss = RestoredValue("val_iou"), RestoredValue("val_loss")
    curve = [epoch(1, 0.50, 0.40), epoch(2, 0.70, 0.30), epoch(3, 0.60, 0.20), epoch(4, 0.80, 0.25)]
    assert [by_iou.update(e) for e in curve] == [0.50, 0.70, 0.70, 0.80]
    # another study metric is read at the best-IoU epoch, the one whose weights are restored
    assert [by_loss.update(e) for e in curve] == [0.40, 0.30, 0.30, 0.25]
