"""SIGTERM as a clean stop: real worker processes and real stores, the signal sent mid-trial,
and the bookkeeping windows forced by raising the signal at the exact point in question.
"""

import signal
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from harness.cli import EXIT_TERMINATED, run_main
from harness.names import FINISHED, Metric, Tag, TrialAttr
from harness.search import run as search
from harness.search.command import main
from harness.search.studies import GRACE_HEARTBEATS, make_storage
from harness.stopping import TERMINATED
from harness.tracking import Tracker
from tests.servers import start_worker
from tests.test_workers import (
    WORKER_TIMEOUT_S,
    load_study,
    search_argv,
    study_runs,
    wait_for_running_trial,
    write_space,
)

TrialState = optuna.trial.TrialState
# far longer than any wait here: a trial that is not stopped does not end by itself either
ENDLESS_EPOCHS = 100_000
STOP_WAIT_S = 120  # a bound for the stop to take effect on a loaded machine, not a timing


def stores(tmp_path) -> tuple[str, str]:
    return f"sqlite:///{tmp_path / 'optuna.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"


def check_stopped(storage: str, tracking_uri: str, study: str, stopped: int) -> list:
    """No trial and no run left RUNNING; the last `stopped` trials FAIL with SIGTERM as their
    reason and their runs KILLED with it; the study's run KILLED. Returns the stopped trials."""
    trials = load_study(storage, study).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    cut = [t for t in trials if t.state == TrialState.FAIL]
    assert len(cut) == stopped, trials
    parents, runs = study_runs(MlflowClient(tracking_uri), study)  # asserts nothing RUNNING
    assert [p.info.status for p in parents] == ["KILLED"]
    by_id = {r.info.run_id: r for r in runs}
    for trial in cut:
        assert trial.user_attrs[TrialAttr.FAIL_REASON] == TERMINATED
        run = by_id[trial.user_attrs[TrialAttr.RUN_ID]]
        assert run.info.status == "KILLED"
        assert run.data.tags[Tag.FAIL_REASON] == TERMINATED
        assert run.data.tags[Tag.TRIAL_STATE] == "FAIL"
    return cut


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_sigterm_to_a_worker_mid_trial_stops_it_cleanly(tmp_path, n_jobs):
    """With --n-jobs 2 the signal reaches the main thread only; both training threads stop."""
    storage, tracking_uri = stores(tmp_path)
    space = write_space(tmp_path, max_epochs=ENDLESS_EPOCHS, patience=ENDLESS_EPOCHS)
    argv = search_argv(space, "term", storage, tracking_uri, 4, "--n-jobs", str(n_jobs))
    worker = start_worker(argv, tmp_path, "term")
    try:
        for number in range(n_jobs):  # every thread is training, past its first epoch
            wait_for_running_trial(storage, "term", number, timeout_s=WORKER_TIMEOUT_S)
        worker.process.send_signal(signal.SIGTERM)
        code = worker.wait(STOP_WAIT_S)
    finally:
        worker.kill()
    out = worker.output()
    assert code == EXIT_TERMINATED, out
    assert TERMINATED in out and "Traceback" not in out, out

    cut = check_stopped(storage, tracking_uri, "term", stopped=n_jobs)
    assert sorted(t.number for t in cut) == list(range(n_jobs))


# --- the windows between Optuna's record and MLflow's, forced ------------------------------


def in_process_search(tmp_path, trials: int = 3, *extra: str) -> tuple[list[str], str, str]:
    storage, tracking_uri = stores(tmp_path)
    space = write_space(tmp_path, max_epochs=2)
    argv = search_argv(space, "forced", storage, tracking_uri, trials, "--no-confirm", *extra)
    return argv, storage, tracking_uri


def sigterm() -> None:
    # the handler runs before raise_signal returns: the stop comes exactly here
    signal.raise_signal(signal.SIGTERM)


def test_sigterm_between_creating_a_trials_run_and_recording_it(tmp_path, monkeypatch, capsys):
    argv, storage, tracking_uri = in_process_search(tmp_path)
    start_run = Tracker.start_run

    def start_then_sigterm(self, experiment_id, name, tags=None, parent_run_id=None):
        run_id = start_run(self, experiment_id, name, tags, parent_run_id)
        if tags and tags.get(Tag.ROLE) == "trial":
            sigterm()  # before the trial knows its run's id
        return run_id

    monkeypatch.setattr(Tracker, "start_run", start_then_sigterm)
    code = run_main(main, argv)

    assert code == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == TERMINATED
    [cut] = check_stopped(storage, tracking_uri, "forced", stopped=1)
    assert cut.number == 0


def test_sigterm_as_a_trial_ends_lets_it_complete_and_starts_no_other(
    tmp_path, monkeypatch, capsys
):
    argv, storage, tracking_uri = in_process_search(tmp_path)
    end_run = Tracker.end_run
    calls = []

    def end_then_sigterm(self, run_id, status):
        end_run(self, run_id, status)
        calls.append(status)
        if calls == [FINISHED]:  # trial 0's run, before Optuna is told the trial is complete
            sigterm()

    monkeypatch.setattr(Tracker, "end_run", end_then_sigterm)
    code = run_main(main, argv)

    assert code == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == TERMINATED
    [trial] = load_study(storage, "forced").get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE
    parents, [run] = study_runs(MlflowClient(tracking_uri), "forced")
    assert run.info.run_id == trial.user_attrs[TrialAttr.RUN_ID]
    assert run.info.status == "FINISHED" and run.data.tags[Tag.TRIAL_STATE] == "COMPLETE"
    assert [p.info.status for p in parents] == ["KILLED"]


def test_sigterm_while_a_dead_workers_trial_is_failed_still_closes_its_run(
    tmp_path, monkeypatch, capsys
):
    argv, storage, tracking_uri = in_process_search(tmp_path, 1, "--heartbeat", "1")
    # a trial as a killed worker leaves it: RUNNING, with a run and a heartbeat gone stale
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("forced")
    run_id = tracker.start_run(experiment_id, "trial-000", tags={Tag.ROLE: "trial"})
    rdb = make_storage(storage, heartbeat_s=1)
    dead = optuna.create_study(study_name="forced", storage=rdb, direction="maximize").ask()
    dead.set_user_attr(TrialAttr.RUN_ID, run_id)
    rdb.record_heartbeat(dead._trial_id)
    time.sleep(GRACE_HEARTBEATS + 1)
    close_dead_run = search.close_dead_run

    def sigterm_then_close(tracker, trial):
        sigterm()  # Optuna has failed the trial; its run is not closed yet
        close_dead_run(tracker, trial)

    monkeypatch.setattr(search, "close_dead_run", sigterm_then_close)
    code = run_main(main, argv)

    assert code == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == TERMINATED
    trials = load_study(storage, "forced").get_trials(deepcopy=False)
    # the dead trial failed, its retry queued, nothing trained
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    parents, [run] = study_runs(MlflowClient(tracking_uri), "forced")
    assert run.info.run_id == run_id and run.info.status == "FAILED"
    assert "worker died" in run.data.tags[Tag.FAIL_REASON]
    assert [p.info.status for p in parents] == ["KILLED"]


def test_sigterm_during_a_record_write_lets_it_finish_and_stops_at_the_next_epoch(
    tmp_path, monkeypatch, capsys
):
    """A stop inside a database client's session would leave it open (a SQLite store then
    stays locked for the clean-up): one that comes while an epoch is logged waits for it."""
    argv, storage, tracking_uri = in_process_search(tmp_path)
    log = Tracker.log

    def sigterm_then_log(self, run_id, metrics=(), params=(), tags=(), step=0):
        if Metric.VAL_IOU in dict(metrics) and step == 1:
            sigterm()
        log(self, run_id, metrics, params, tags, step)

    monkeypatch.setattr(Tracker, "log", sigterm_then_log)
    code = run_main(main, argv)

    assert code == EXIT_TERMINATED
    assert capsys.readouterr().err.strip() == TERMINATED
    [cut] = check_stopped(storage, tracking_uri, "forced", stopped=1)
    history = MlflowClient(tracking_uri).get_metric_history(
        cut.user_attrs[TrialAttr.RUN_ID], Metric.VAL_IOU
    )
    assert [m.step for m in history] == [1]  # written; epoch 2 never started
    assert list(cut.intermediate_values) == [1]
