"""Confirmation and refit after the trials, on real small studies (real Optuna and MLflow stores)."""

import math
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
import torch

from harness.cli import run_main
from harness.names import FINAL_STUDY_SUFFIX, Artifact, Metric, Param, Role, Tag, TrialAttr
from harness.runs import load_run_model
from harness.search import SearchOptions, confirm, run_search
from harness.search.command import main
from harness.search.confirm import confirm_seed
from harness.tracking import Tracker
from tests.helpers import running_runs

DATA = "synthetic:48"

TINY_SPACE = """
[study]
max_epochs = 3
image_size = 32
sampler_startup_trials = 2
pruner = "none"

[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true

[fixed]
depth = 2
base_channels = 4
batch_size = 16
patience = 2
aug_p = 0.0
"""


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SPACE)
    return path


def options(space_file, tracking_uri, study, **overrides) -> SearchOptions:
    settings = {
        "trials": 3,
        "confirm_top": 2,
        "confirm_seeds": 1,
        "registered_model": f"model-{study}",
        "progress_bar": False,
    }
    return SearchOptions(
        space=str(space_file),
        data=DATA,
        study=study,
        tracking_uri=tracking_uri,
        **{**settings, **overrides},
    )


def runs_by_role(client, result, role: str) -> list:
    return [
        r
        for r in client.search_runs([result.experiment_id])
        if r.data.tags.get(Tag.ROLE) == role
        and r.data.tags.get("mlflow.parentRunId") == result.parent_run_id
    ]


def test_top_trials_are_confirmed_and_the_winner_refit_and_registered(
    space_file, tracking_uri, client, capsys
):
    result = run_search(options(space_file, tracking_uri, "confirmed", confirm_seeds=2))
    out = capsys.readouterr().out
    study = result.study
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    top = sorted(complete, key=lambda t: (-t.value, t.number))[:2]

    confirmations = runs_by_role(client, result, Role.CONFIRM)
    assert len(confirmations) == 4 and all(r.info.status == "FINISHED" for r in confirmations)
    expected = {
        (str(t.number), str(confirm_seed(0, t.number, repeat))) for t in top for repeat in (1, 2)
    }
    assert {(r.data.tags[Tag.TRIAL_NUMBER], r.data.params["seed"]) for r in confirmations} == (
        expected
    )
    assert all("test_iou" in r.data.metrics for r in confirmations)

    outcome = result.final
    assert [c.trial.number for c in outcome.confirmed] == [t.number for t in top]
    assert all(len(c.runs) == 3 for c in outcome.confirmed)
    winner = outcome.winner
    assert winner.trial.number in {t.number for t in top}
    means = {c.trial.number: sum(c.values) / 3 for c in outcome.confirmed}
    assert means[winner.trial.number] == max(means.values())

    (refit,) = runs_by_role(client, result, Role.REFIT)
    assert refit.info.status == "FINISHED"
    assert refit.data.tags[Tag.TRIAL_NUMBER] == str(winner.trial.number)
    best_epochs = sorted(r.best_epoch for r in winner.runs)
    assert refit.data.params["max_epochs"] == str(best_epochs[1])  # the median of three
    assert refit.data.metrics["epochs_run"] == best_epochs[1]
    assert "best_val_iou" not in refit.data.metrics  # nothing was held out
    assert refit.data.params["lr"] == str(winner.trial.params["lr"])
    assert refit.data.params[Param.LR_SCHEDULE] == "cosine"
    assert {r.data.params[Param.LR_SCHEDULE] for r in confirmations} == {"constant"}

    parent = client.get_run(result.parent_run_id).data.metrics
    for c in outcome.confirmed:
        assert f"confirm_t{c.trial.number:03d}_val_iou_mean" in parent
        assert f"confirm_t{c.trial.number:03d}_test_iou_sd" in parent
    assert parent[Metric.WINNER_TRIAL] == winner.trial.number
    assert parent[Metric.REFIT_TEST_IOU] == refit.data.metrics["test_iou"]
    assert parent["epochs_confirm"] == sum(r.data.metrics["epochs_run"] for r in confirmations)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert Artifact.CONFIRMATION_CSV in artifacts

    champion = client.get_model_version_by_alias("model-confirmed", "champion")
    assert champion.run_id == refit.info.run_id
    assert "winner: trial" in out and "refit on train + validation" in out
    assert "epochs trained: search" in out
    assert not running_runs(client, result.experiment_id)


def test_a_stage_interrupted_half_way_finishes_on_rerun_without_repeating_runs(
    space_file, tracking_uri, client, monkeypatch, capsys
):
    train_tracked = confirm.train_tracked
    calls = []

    def interrupted_on_the_second_job(*args, **kwargs):
        calls.append(kwargs.get("refit", False))
        if len(calls) == 2:  # the first job is done; Ctrl-C arrives as the second starts
            raise KeyboardInterrupt
        return train_tracked(*args, **kwargs)

    monkeypatch.setattr(confirm, "train_tracked", interrupted_on_the_second_job)
    first = options(space_file, tracking_uri, "resumed")
    with pytest.raises(KeyboardInterrupt):
        run_search(first)
    monkeypatch.setattr(confirm, "train_tracked", train_tracked)
    storage = first.storage
    final = optuna.load_study(study_name="resumed" + FINAL_STUDY_SUFFIX, storage=storage)
    assert sorted(t.state.name for t in final.trials) == ["COMPLETE", "FAIL"]

    result = run_search(first)
    capsys.readouterr()
    confirmations = runs_by_role(client, result, Role.CONFIRM)
    finished = [r for r in confirmations if r.info.status == "FINISHED"]
    killed = [r for r in confirmations if r.info.status == "KILLED"]
    # two jobs planned: the one done before Ctrl-C is not trained again
    assert len(finished) == 2 and len(killed) == 1
    assert len({r.data.tags[Tag.TRIAL_NUMBER] for r in finished}) == 2
    assert killed[0].data.tags[Tag.FAIL_REASON] == "interrupted"
    assert len(runs_by_role(client, result, Role.REFIT)) == 1
    final = optuna.load_study(study_name="resumed" + FINAL_STUDY_SUFFIX, storage=storage)
    assert sorted(t.state.name for t in final.trials) == ["COMPLETE"] * 3 + ["FAIL"]
    assert not running_runs(client, result.experiment_id)
    assert client.get_model_version_by_alias("model-resumed", "champion")

    again = run_search(first)  # nothing left: no run trained, the summary not repeated
    assert len(client.search_runs([result.experiment_id])) == len(
        client.search_runs([again.experiment_id])
    )
    assert again.final is None


def test_a_rerun_whose_trial_checkpoints_are_gone_ends_in_one_line(
    space_file, tracking_uri, client, monkeypatch, capsys
):
    train_tracked = confirm.train_tracked

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C as the first confirmation starts

    monkeypatch.setattr(confirm, "train_tracked", interrupted)
    first = options(space_file, tracking_uri, "gone")
    with pytest.raises(KeyboardInterrupt):
        run_search(first)
    monkeypatch.setattr(confirm, "train_tracked", train_tracked)
    # the trials' artifacts are deleted, or the database is moved without them
    experiment_id = client.get_experiment_by_name("gone").experiment_id
    trial_runs = [
        r for r in client.search_runs([experiment_id]) if r.data.tags.get(Tag.ROLE) == Role.TRIAL
    ]
    for run in trial_runs:
        shutil.rmtree(Path(urlparse(run.info.artifact_uri).path) / Artifact.CHECKPOINT_DIR)

    code = run_main(main, ["--space", str(space_file), "--data", DATA, "--study", "gone",
                           "--trials", "3", "--confirm-top", "2", "--confirm-seeds", "1",
                           "--registered-model", "model-gone", "--tracking-uri", tracking_uri,
                           "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    (line,) = err.splitlines()
    assert "cannot read its checkpoint" in line and "Traceback" not in err
    assert not running_runs(client, experiment_id)
    final = optuna.load_study(study_name="gone" + FINAL_STUDY_SUFFIX, storage=first.storage)
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in final.trials)


def test_threads_share_the_jobs_and_train_none_twice(space_file, tracking_uri, client, capsys):
    result = run_search(
        options(space_file, tracking_uri, "confirm-threads", n_jobs=2, confirm_seeds=2, trials=4)
    )
    capsys.readouterr()
    confirmations = runs_by_role(client, result, Role.CONFIRM)
    assert len(confirmations) == 4
    keys = [(r.data.tags[Tag.TRIAL_NUMBER], r.data.params["seed"]) for r in confirmations]
    assert len(set(keys)) == 4
    assert len(runs_by_role(client, result, Role.REFIT)) == 1
    final = optuna.load_study(
        study_name="confirm-threads" + FINAL_STUDY_SUFFIX, storage=result.study._storage
    )
    assert sum(t.state.name == "COMPLETE" for t in final.trials) == 5


def test_no_confirm_no_refit_registers_the_best_trial_as_before(
    space_file, tracking_uri, client, capsys
):
    result = run_search(options(space_file, tracking_uri, "plain", confirm=False, refit=False))
    out = capsys.readouterr().out
    assert result.final is None
    names = optuna.get_all_study_names(storage=result.study._storage)
    assert "plain" + FINAL_STUDY_SUFFIX not in names
    assert not runs_by_role(client, result, Role.CONFIRM)
    assert not runs_by_role(client, result, Role.REFIT)
    champion = client.get_model_version_by_alias("model-plain", "champion")
    assert champion.run_id == result.best_trial.user_attrs[TrialAttr.RUN_ID]
    assert "confirmation:" not in out


def test_refit_alone_retrains_the_best_trial_for_its_best_epoch(
    space_file, tracking_uri, client, capsys
):
    result = run_search(options(space_file, tracking_uri, "refit-only", confirm=False))
    capsys.readouterr()
    assert not runs_by_role(client, result, Role.CONFIRM)
    (refit,) = runs_by_role(client, result, Role.REFIT)
    best = result.best_trial
    assert refit.data.tags[Tag.TRIAL_NUMBER] == str(best.number)
    assert refit.data.params["max_epochs"] == str(best.user_attrs["best_epoch"])


def test_the_spaces_refit_table_trains_the_registered_model_and_a_change_retrains_it(
    space_file, tracking_uri, client, capsys
):
    first = run_search(options(space_file, tracking_uri, "wide"))
    capsys.readouterr()
    (narrow,) = runs_by_role(client, first, Role.REFIT)
    assert narrow.data.params[Param.BASE_CHANNELS] == "4"  # the trials' width, from [fixed]

    space_file.write_text(TINY_SPACE + "[refit]\nbase_channels = 8\n")
    second = run_search(options(space_file, tracking_uri, "wide"))
    out = capsys.readouterr().out
    # the trials and confirmations stand; only the refit is trained again, at the new width
    assert len(runs_by_role(client, second, Role.CONFIRM)) == 2
    refits = runs_by_role(client, second, Role.REFIT)
    (wide,) = [r for r in refits if r.info.run_id != narrow.info.run_id]
    assert wide.data.params[Param.BASE_CHANNELS] == "8"
    for param in ("lr", "depth", "max_epochs", "seed", Param.LR_SCHEDULE):
        assert wide.data.params[param] == narrow.data.params[param]
    assert second.final.refit.run_id == wide.info.run_id
    assert second.final.refit_changes == (("base_channels", 8),)
    assert "refit on train + validation for" in out and "with base_channels=8" in out

    # summed up again: the parent run's figures are the wide refit's, and it is registered
    parent = client.get_run(second.parent_run_id)
    assert parent.data.metrics[Metric.REFIT_TEST_IOU] == wide.data.metrics["test_iou"]
    assert parent.data.tags[Tag.SUMMED_UP].endswith("refit with base_channels=8")
    versions = client.search_model_versions("name = 'model-wide'")
    assert {v.run_id for v in versions} == {narrow.info.run_id, wide.info.run_id}
    model = load_run_model(Tracker(tracking_uri), wide.info.run_id, torch.device("cpu"))
    assert model.encoder.channels[0] == 8
    assert not running_runs(client, second.experiment_id)


def test_no_run_is_scored_on_test_while_the_storage_lock_is_held(
    space_file, tracking_uri, client, monkeypatch, capsys
):
    # other workers wait on that lock to take a job; choosing the refit needs validation only
    held = []
    scored_under_lock = []
    creation_lock, log_evaluation = confirm.creation_lock, confirm.log_evaluation

    @contextmanager
    def tracked_lock(*args, **kwargs):
        with creation_lock(*args, **kwargs):
            held.append(True)
            try:
                yield
            finally:
                held.pop()

    def tracked_evaluation(*args, **kwargs):
        scored_under_lock.append(bool(held))
        return log_evaluation(*args, **kwargs)

    monkeypatch.setattr(confirm, "creation_lock", tracked_lock)
    monkeypatch.setattr(confirm, "log_evaluation", tracked_evaluation)
    result = run_search(options(space_file, tracking_uri, "lock-free-scoring"))
    capsys.readouterr()
    assert scored_under_lock and not any(scored_under_lock)
    assert all(math.isfinite(c.test_ious[0]) for c in result.final.confirmed)
