"""Several workers on one study, and crash safety: real processes, real servers, real stores.

Every worker is a `python -m harness.search` subprocess in its own process group with one
torch thread; servers (PostgreSQL, `mlflow server`) bind 127.0.0.1 on free ports and are
stopped by their fixtures.
"""

import fcntl
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from mlflow.tracking import MlflowClient

from harness.cli import run_main
from harness.data import load_splits
from harness.locks import creation_lock, with_installed_driver
from harness.names import FINAL_STUDY_SUFFIX, FINISHED, Artifact, Role, Tag, TrialAttr
from harness.runs import train_tracked
from harness.search import SearchOptions, confirm, run_search
from harness.search import run as search
from harness.search.command import main
from harness.search.spaces import load_space
from harness.search.studies import FINISHED_STATES, GRACE_HEARTBEATS, make_sampler, make_storage
from harness.tracking import Tracker
from tests.servers import (
    free_port,
    postgres_bin_dir,
    start_mlflow_server,
    start_postgres,
    start_worker,
)

TINY_SPACE = """
[study]
max_epochs = {max_epochs}
image_size = 32
sampler_startup_trials = 2
pruner = "none"

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
patience = {patience}
aug_p = 0.0
"""

DATA = "synthetic:48"
WORKER_TIMEOUT_S = 240
TrialState = optuna.trial.TrialState


def write_space(folder, max_epochs: int = 2, patience: int = 2):
    path = folder / "tiny.toml"
    path.write_text(TINY_SPACE.format(max_epochs=max_epochs, patience=patience))
    return path


def search_argv(space, study: str, storage: str, tracking_uri: str, trials: int, *extra: str):
    return ["--space", str(space), "--data", DATA, "--study", study, "--trials", str(trials),
            "--storage", storage, "--tracking-uri", tracking_uri,
            "--no-promote", "--no-progress", "--no-confirm", "--no-refit", *extra]  # fmt: skip


def load_study(storage: str, name: str) -> optuna.Study:
    with creation_lock(storage):
        rdb = optuna.storages.RDBStorage(with_installed_driver(storage))
    return optuna.load_study(study_name=name, storage=rdb)


def study_runs(client: MlflowClient, study: str) -> tuple[list, list]:
    """The study's parent runs and its trial runs."""
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status == "RUNNING"], "runs left RUNNING"
    parents = [r for r in runs if r.data.tags.get(Tag.ROLE) == "study"]
    trials = [r for r in runs if r.data.tags.get(Tag.ROLE) == "trial"]
    assert len(parents) + len(trials) == len(runs)
    return parents, trials


def check_shared_study(
    storage: str, tracking_uri: str, name: str, target: int, outputs=None
) -> None:
    """Together the workers ran exactly `target` trials, each one run, under one parent run."""
    study = load_study(storage, name)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED_STATES]
    assert len(finished) == target
    assert len({t.number for t in trials}) == len(trials)
    for extra in (t for t in trials if t.state not in FINISHED_STATES):
        # a worker that found the study full failed its new trial before opening a run
        assert extra.state == TrialState.FAIL, extra
        assert extra.user_attrs[TrialAttr.FAIL_REASON].startswith("surplus")
        assert not extra.user_attrs.get(TrialAttr.RUN_ID)
    # the workers' samplers did not propose the same parameters to each other
    assert len({tuple(sorted(t.params.items())) for t in finished}) == target

    parents, runs = study_runs(MlflowClient(tracking_uri), name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(runs) == target
    assert {r.info.run_id for r in runs} == {t.user_attrs[TrialAttr.RUN_ID] for t in finished}
    assert sorted(int(r.data.tags[Tag.TRIAL_NUMBER]) for r in runs) == sorted(
        t.number for t in finished
    )
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in runs)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert "trials.csv" in {
        a.path for a in MlflowClient(tracking_uri).list_artifacts(parents[0].info.run_id)
    }
    if outputs is None:
        return
    # exactly one worker summed the study up (test scores of the best trial)
    assert sum("on the whole splits" in out for out in outputs) == 1, outputs
    for out in outputs:
        assert "database is locked" not in out and "Traceback" not in out, out


def run_workers(argv: list[str], folder, count: int, started=None) -> list[str]:
    """Run `count` workers to the end (each must exit 0); `started(workers)` is called once
    all of them are started."""
    workers = [start_worker(argv, folder, f"worker{i}") for i in range(count)]
    try:
        if started is not None:
            started(workers)
        codes = [w.wait(WORKER_TIMEOUT_S) for w in workers]
    finally:
        for w in workers:
            w.kill()
    outputs = [w.output() for w in workers]
    assert codes == [0] * count, "\n\n".join(outputs)
    return outputs


# --- PostgreSQL storage and an MLflow server: the set-up for many machines ---------------


@pytest.fixture(scope="module")
def postgres():
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not found; CI installs them")
    server = start_postgres(bin_dir)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` with its backend in the same PostgreSQL server, artifacts proxied."""
    backend = postgres.create_database("mlflow").replace("postgresql://", "postgresql+psycopg2://")
    server = start_mlflow_server(backend, tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


def test_three_workers_share_a_postgresql_study_and_an_mlflow_server(
    postgres, mlflow_server, tmp_path
):
    storage = postgres.create_database("optuna_shared")
    argv = search_argv(write_space(tmp_path), "shared", storage, mlflow_server.url, 4)

    outputs = run_workers(argv, tmp_path, 3)

    check_shared_study(storage, mlflow_server.url, "shared", 4, outputs)


# --- the local default: SQLite files in the working directory ----------------------------


def test_three_local_workers_share_a_sqlite_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = search_argv(write_space(tmp_path), "local", storage, tracking_uri, 4)

    outputs = run_workers(argv, tmp_path, 3)

    check_shared_study(storage, tracking_uri, "local", 4, outputs)


def test_threads_of_one_worker_share_the_study(tmp_path, tracking_uri):
    threads = torch.get_num_threads()
    try:
        options = SearchOptions(space=str(write_space(tmp_path)), data=DATA, study="threads",
                                tracking_uri=tracking_uri, trials=3, n_jobs=2, promote=False,
                                confirm=False, refit=False, progress_bar=False)  # fmt: skip
        run_search(options)
    finally:
        torch.set_num_threads(threads)  # --n-jobs shares the cores out for the whole process

    check_shared_study(options.storage, tracking_uri, "threads", 3)


def test_workers_and_resumed_studies_do_not_repeat_trials():
    """The sampler is seeded per trial number: a second sampler with the same seed on the same
    study (another worker, or a resumed run) continues the sequence instead of repeating it."""
    settings = load_space("unet").study
    storage = optuna.storages.InMemoryStorage()

    def objective(trial):
        return trial.suggest_float("x", 0, 1) + trial.suggest_int("depth", 2, 5)

    first = optuna.create_study(study_name="s", storage=storage, sampler=make_sampler(settings, 0))
    first.optimize(objective, n_trials=3)
    resumed = optuna.load_study(study_name="s", storage=storage, sampler=make_sampler(settings, 0))
    resumed.optimize(objective, n_trials=3)
    straight = optuna.create_study(sampler=make_sampler(settings, 0))
    straight.optimize(objective, n_trials=6)

    params = [t.params for t in resumed.trials]
    assert len({tuple(p.items()) for p in params}) == 6
    assert params == [t.params for t in straight.trials]  # as if never interrupted


def test_random_search_continued_after_placeholders_draws_what_it_would_have():
    """bench/search_efficiency.py --extend runs a saved random search on from trial n by
    adding n placeholder trials: random search's trial n depends only on (seed, n)."""
    settings = replace(load_space("unet").study, sampler="random")

    def objective(trial):
        return trial.suggest_float("lr", 1e-4, 1e-2, log=True) + trial.suggest_int("depth", 2, 5)

    straight = optuna.create_study(sampler=make_sampler(settings, 3))
    straight.optimize(objective, n_trials=5)
    continued = optuna.create_study(sampler=make_sampler(settings, 3))
    for _ in range(2):
        continued.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    continued.optimize(objective, n_trials=3)

    assert [t.params for t in continued.trials[2:]] == [t.params for t in straight.trials[2:]]


# --- crash safety --------------------------------------------------------------------------


def wait_for_running_trial(storage: str, study: str, number: int, timeout_s: float):
    """Poll the Optuna storage until trial `number` is running, with its MLflow run and at
    least one epoch behind it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            for trial in load_study(storage, study).get_trials(deepcopy=False):
                if (
                    trial.number == number
                    and trial.state == TrialState.RUNNING
                    and TrialAttr.RUN_ID in trial.user_attrs
                    and trial.intermediate_values
                ):
                    return trial
        except KeyError:  # the worker has not created the study yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"trial {number} of {study!r} never ran")


def test_a_worker_killed_mid_trial_leaves_a_trial_the_next_run_fails_and_retries(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    heartbeat_s = 1
    # trials long enough (10 epochs, no early stop) to be caught in the middle
    space = write_space(tmp_path, max_epochs=10, patience=50)
    argv = search_argv(space, "crash", storage, tracking_uri, 2, "--heartbeat", str(heartbeat_s))
    client = MlflowClient(tracking_uri)

    worker = start_worker(argv, tmp_path, "killed")
    try:
        victim = wait_for_running_trial(storage, "crash", 1, timeout_s=WORKER_TIMEOUT_S)
    finally:
        worker.kill()  # SIGKILL: no handler, no finally, no atexit runs
    assert worker.process.returncode == -9, worker.output()
    survivor = load_study(storage, "crash").trials[0]
    assert survivor.state == TrialState.COMPLETE
    survivor_run = client.get_run(survivor.user_attrs[TrialAttr.RUN_ID])
    survivor_artifacts = client.list_artifacts(survivor_run.info.run_id, Artifact.CHECKPOINT_DIR)
    dead_run_id = victim.user_attrs[TrialAttr.RUN_ID]
    assert client.get_run(dead_run_id).info.status == "RUNNING"  # what a crash leaves behind

    time.sleep(GRACE_HEARTBEATS * heartbeat_s + 1)  # the dead trial's heartbeat goes stale
    rerun = start_worker(argv, tmp_path, "rerun")
    assert rerun.wait(WORKER_TIMEOUT_S) == 0, rerun.output()

    trials = load_study(storage, "crash").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    kept, dead, retried = trials
    # the completed trial is untouched
    assert (kept.value, kept.datetime_complete) == (survivor.value, survivor.datetime_complete)
    assert kept.user_attrs[TrialAttr.RUN_ID] == survivor.user_attrs[TrialAttr.RUN_ID]
    # the dead trial is retried with its parameters, in a new run
    assert dead.number == victim.number and dead.params == victim.params
    assert retried.params == victim.params
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == 1
    assert retried.user_attrs[TrialAttr.RUN_ID] != dead_run_id

    parents, runs = study_runs(client, "crash")  # nothing RUNNING
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    by_id = {r.info.run_id: r for r in runs}
    assert set(by_id) == {t.user_attrs[TrialAttr.RUN_ID] for t in (kept, retried)} | {dead_run_id}
    dead_run = by_id[dead_run_id]
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags[Tag.TRIAL_STATE] == "FAIL"
    assert "worker died" in dead_run.data.tags[Tag.FAIL_REASON]
    for trial in (kept, retried):
        run = by_id[trial.user_attrs[TrialAttr.RUN_ID]]
        assert run.info.status == "FINISHED" and run.data.tags[Tag.TRIAL_STATE] == "COMPLETE"
    kept_run = by_id[kept.user_attrs[TrialAttr.RUN_ID]]
    assert kept_run.info.end_time == survivor_run.info.end_time
    # (being the best trial, it has since gained its test scores; nothing it had changed)
    assert survivor_run.data.metrics.items() <= kept_run.data.metrics.items()
    assert survivor_run.data.params == kept_run.data.params
    assert survivor_run.data.tags.items() <= kept_run.data.tags.items()
    assert (
        client.list_artifacts(kept_run.info.run_id, Artifact.CHECKPOINT_DIR) == survivor_artifacts
    )
    assert survivor_artifacts and survivor_artifacts[0].file_size > 0


def test_a_stale_trial_two_workers_both_fail_is_retried_once(tmp_path):
    """SQLite has no row locks: two workers can both find a dead worker's trial stale, both fail
    it and both run the stale-trial callback. Forced here by running the callback twice: the
    trial is retried (and its run closed) once, so its parameters are not trained twice."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    closed = []
    storage = make_storage(url, heartbeat_s=1, on_dead_trial=closed.append)
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # what each worker did
    failed = study.get_trials()[0]
    dead_trial = storage.get_heartbeat_stale_trial_callback()
    dead_trial(study, failed)  # the first worker
    dead_trial(study, failed)  # the second, which had also seen the trial RUNNING
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.params for t in waiting] == [failed.params]
    assert [t.number for t in closed] == [failed.number]


def blocked_on(lock_file, pids, timeout_s: float) -> None:
    """Wait until every process of `pids` waits for `lock_file`'s flock (Linux /proc/locks:
    a waiter's line reads `N: -> FLOCK ... PID MAJ:MIN:INODE ...`)."""
    inode, deadline = os.stat(lock_file).st_ino, time.monotonic() + timeout_s
    while True:
        waiting = set()
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if "->" in fields and fields[-3].endswith(f":{inode}"):
                waiting.add(int(fields[-4]))
        if set(pids) <= waiting:
            return
        assert time.monotonic() < deadline, f"workers {pids} never waited for {lock_file}"
        time.sleep(0.2)


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="needs Linux's /proc/locks")
def test_two_workers_share_the_final_stage_and_train_no_job_twice(tmp_path):
    """The confirmation and refit jobs of one study, worked by two processes at once: forced
    by holding the storage's lock until both wait for it, so that they start the stage
    together. Each job is trained once, one worker sums up and one model is registered."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = write_space(tmp_path, max_epochs=6, patience=50)  # jobs long enough to overlap
    trials_only = search_argv(space, "final", storage, tracking_uri, 3)
    first = start_worker(trials_only, tmp_path, "trials")
    assert first.wait(WORKER_TIMEOUT_S) == 0, first.output()
    final_flags = ("--no-confirm", "--no-refit", "--no-promote")
    argv = [a for a in trials_only if a not in final_flags]
    argv += ["--confirm-top", "2", "--confirm-seeds", "2", "--registered-model", "final-model"]

    lock_file = tmp_path / "optuna.db.lock"
    with open(lock_file, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)

        def release_once_both_wait(workers):
            blocked_on(lock_file, [w.process.pid for w in workers], WORKER_TIMEOUT_S)
            fcntl.flock(held, fcntl.LOCK_UN)

        outputs = run_workers(argv, tmp_path, 2, started=release_once_both_wait)

    final = load_study(storage, "final" + FINAL_STUDY_SUFFIX).trials
    jobs = [confirm.Job.of(t) for t in final]
    assert [t.state for t in final] == [TrialState.COMPLETE] * 5  # nothing trained twice
    assert len(set(jobs)) == 5
    assert sorted(j.role for j in jobs) == [Role.CONFIRM] * 4 + [Role.REFIT]
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("final")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert not [r for r in runs if r.info.status != "FINISHED"]
    job_runs = [r for r in runs if r.data.tags[Tag.ROLE] in (Role.CONFIRM, Role.REFIT)]
    assert {r.info.run_id for r in job_runs} == {t.user_attrs[TrialAttr.RUN_ID] for t in final}
    # the two workers trained at the same time: some two job runs overlap
    spans = sorted((r.info.start_time, r.info.end_time) for r in job_runs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    assert sum("winner:" in out for out in outputs) == 1, outputs  # one worker summed up
    (version,) = client.search_model_versions("name = 'final-model'")
    refit = next(t for t, j in zip(final, jobs) if j.role == Role.REFIT)
    assert version.run_id == refit.user_attrs[TrialAttr.RUN_ID]
    for out in outputs:
        assert "database is locked" not in out and "Traceback" not in out, out


def test_the_creation_lock_is_reentrant_in_its_thread_and_excludes_others(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    inside = []

    def other_thread():
        with creation_lock(url):
            inside.append("other")

    with creation_lock(url):
        with creation_lock(url):  # e.g. failing stale jobs under the lock, whose callback locks
            inside.append("nested")
        other = threading.Thread(target=other_thread)
        other.start()
        other.join(timeout=0.5)
        assert inside == ["nested"]  # the other thread waits for the lock
    other.join(timeout=30)
    assert inside == ["nested", "other"]


# --- unreachable servers: one line, non-zero exit, before any training ----------------------


def test_an_unreachable_tracking_server_stops_the_search_with_one_line(tmp_path, capsys):
    space = write_space(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code = run_main(main, search_argv(space, "nowhere", "sqlite:///optuna.db", url, 1))

    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and url in err and "unreachable" in err
    assert "data" not in out  # stopped before loading data, let alone training
    assert not (tmp_path / "optuna.db").exists()


def test_an_unreachable_storage_stops_the_search_with_one_line(tmp_path, tracking_uri, capsys):
    space = write_space(tmp_path)
    storage = f"postgresql://harness:secret@127.0.0.1:{free_port()}/optuna"  # no server there
    code = run_main(main, search_argv(space, "no-storage", storage, tracking_uri, 1))

    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "cannot open Optuna storage" in err and "127.0.0.1" in err
    assert "secret" not in err  # the password is not printed
    assert "study" not in out  # no study opened, no trial trained
    assert MlflowClient(tracking_uri).get_experiment_by_name("no-storage") is None


def test_ctrl_c_stops_the_search_cleanly(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # trials far longer than a poll, so that trial 0 is still running when the signal comes
    space = write_space(tmp_path, max_epochs=1000, patience=1000)
    worker = start_worker(
        search_argv(space, "ctrl-c", storage, tracking_uri, 3), tmp_path, "ctrl-c"
    )
    try:
        wait_for_running_trial(storage, "ctrl-c", 0, timeout_s=WORKER_TIMEOUT_S)
        worker.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert worker.wait(WORKER_TIMEOUT_S) == 130, worker.output()
    finally:
        worker.kill()
    assert "interrupted" in worker.output() and "Traceback" not in worker.output()

    # on a busy machine trial 0 may finish between the poll and the signal: the trial that
    # was running when Ctrl-C came is the last one, whichever it is
    trials = load_study(storage, "ctrl-c").trials
    *finished, interrupted = [t.state for t in trials]
    assert interrupted == TrialState.FAIL  # Optuna's state for an interrupted trial
    assert set(finished) <= {TrialState.COMPLETE, TrialState.PRUNED}
    parents, runs = study_runs(MlflowClient(tracking_uri), "ctrl-c")
    assert [p.info.status for p in parents] == ["KILLED"]
    killed = [r for r in runs if r.info.status == "KILLED"]
    assert len(killed) == 1 and len(runs) == len(trials)
    assert killed[0].data.tags[Tag.FAIL_REASON] == "interrupted"


def test_the_summary_is_of_the_best_trial_when_it_ends_while_this_worker_waits(
    tmp_path, monkeypatch
):
    """Another worker's better trial was still running when this worker's last trial ended,
    and completes before this worker takes the lock to sum up: the summary, the evaluation
    and the mark are of that trial, not of the best this worker saw when it stopped."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    space_path = write_space(tmp_path)
    space = load_space(str(space_path))
    # the other worker's trial: running, its run trained and checkpointed, not yet told
    rdb = make_storage(storage)
    other = optuna.create_study(study_name="late", storage=rdb, direction="maximize").ask()
    config = space.suggest(other, seed=0, max_epochs=1)
    tracker = Tracker(tracking_uri)
    run_id = tracker.start_run(
        tracker.experiment_id("late"), "trial-000", tags={Tag.ROLE: "trial", Tag.STUDY: "late"}
    )
    train_tracked(tracker, run_id, config, load_splits(DATA, 32), torch.device("cpu"))
    other.set_user_attr(TrialAttr.RUN_ID, run_id)
    lock, calls = search.creation_lock, []

    def other_worker_finishes_first(url, *args, **kwargs):
        calls.append(url)
        if len(calls) == 2:  # this worker's trials are done; it is about to sum up
            tracker.end_run(run_id, FINISHED)
            other.study.tell(other, 1.0)
        return lock(url, *args, **kwargs)

    monkeypatch.setattr(search, "creation_lock", other_worker_finishes_first)
    argv = search_argv(space_path, "late", storage, tracking_uri, 2, "--no-confirm", "--no-refit")
    assert run_main(main, argv) == 0

    trials = load_study(storage, "late").trials
    assert [t.state for t in trials[:2]] == [TrialState.COMPLETE, TrialState.COMPLETE]
    parents, _ = study_runs(MlflowClient(tracking_uri), "late")
    tags = parents[0].data.tags
    assert tags["best.trial_number"] == "0"
    best_run = MlflowClient(tracking_uri).get_run(run_id)  # the evaluation is of trial 0
    assert parents[0].data.metrics["test_iou"] == best_run.data.metrics["test_iou"]
    assert tags[Tag.SUMMED_UP] == "2 finished, best 0"
