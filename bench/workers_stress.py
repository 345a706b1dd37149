"""The workers' guarantees (docs/scaling.md) under stress: K workers on one study, killed or not.

    nice -n 15 python bench/workers_stress.py [--repetitions 10] [--workers 2 4 8]
        [--wide 32] [--wide-repetitions 2] [--storages sqlite postgresql] [--epoch-s 0.5]
        [--max-connections 200] [--seed 0] [--keep]
    python bench/workers_stress.py --smoke       # a minute or two, to check that it runs

For every storage (the local default: SQLite files; many machines: a PostgreSQL server that
the benchmark starts, with an `mlflow server` on it) and every K, R repetitions of: a fresh
study, K workers running the search command with `--trials 2K` on it, one torch thread each. In
every second repetition a random worker is sent SIGKILL in the middle of a trial (while its
trainer runs), and once the others have exited and the grace period (4 heartbeats of 1 s) has
passed, the command is run once more, as docs/scaling.md says to. Then `--wide` workers on
PostgreSQL, the same way.

What the workers run is the real command (`run_main(harness.search.command.main, argv)`: its storage
locks, parent run, surplus check, heartbeats, stale-trial retries, tracking, summary and the
best trial's evaluation) around a trainer that sleeps instead of training: each epoch sleeps
`--epoch-s` and reports made-up scores that depend on the parameters (two epochs a trial), and
the untrained UNet is logged as the checkpoint. Figures are blank and not logged, and the
summary has no Optuna plots: rendering them is most of a trial's CPU on 2 cores and no part of
the coordination. Confirmation and refit are off (`--no-confirm --no-refit`): their jobs are
another protocol.

Workers are forked from a server process that has imported the harness once
(multiprocessing's forkserver): importing torch and MLflow costs seconds of CPU per
process, which 8 or 32 workers cannot each afford on 2 cores. Each SQLite repetition copies an
empty, migrated MLflow store instead of migrating one (the race on creating a store is in
tests/test_workers.py); the Optuna database, SQLite or PostgreSQL, is created by the workers.
The PostgreSQL server runs with `--max-connections` (200; its default of 100 is too few for
32 workers, see docs/scaling.md).

Printed per setting, summed over its repetitions unless said otherwise:
- exactly N: repetitions that ended with exactly N finished (complete or pruned) trials;
- repeated params: finished trials whose parameters another finished trial of the study has;
- RUNNING left: MLflow runs and Optuna trials left RUNNING;
- FAIL w/o reason: FAIL trials with neither a `fail_reason` user attribute nor a
  `harness.fail_reason` tag on their run;
- runs != finished: repetitions whose FINISHED trial runs are not exactly the finished trials'
  runs (one each);
- parents, summaries: per study, min-max over the repetitions (one each is right);
- errors: worker exit statuses other than 0 (the killed worker's aside), and logs with a
  traceback or "database is locked";
- conns/worker: PostgreSQL connections held by one worker process, most seen over samples every
  0.2 s (the mlflow server's own are not counted), and the most seen for all workers together.
"""

import argparse
import importlib
import itertools
import multiprocessing
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import (  # noqa: E402
    postgres_bin_dir,
    start_mlflow_server,
    start_postgres,
    worker_env,
)

os.environ.update(worker_env())  # one torch thread per worker, before torch is imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import machine  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import harness.figures.training  # noqa: E402
import harness.runs  # noqa: E402
import harness.search.command  # noqa: E402
import harness.search.run  # noqa: E402
import harness.search.summary  # noqa: E402
import harness.tracking  # noqa: E402
from harness.cli import quiet_libraries, run_main  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.metrics import Scores  # noqa: E402
from harness.names import Tag, TrialAttr  # noqa: E402
from harness.search.studies import FINISHED_STATES, GRACE_HEARTBEATS, load_study  # noqa: E402
from harness.tracking import Tracker  # noqa: E402
from harness.trainer import EpochResult, FitResult, StopReason, build_model  # noqa: E402

SPACE = """
[study]
max_epochs = 2
image_size = 32
sampler_startup_trials = 4
pruner = "none"

[params.depth]
type = "int"
low = 2
high = 3

[params.lr]
type = "float"
low = 1e-4
high = 1e-2
log = true

[fixed]
base_channels = 4
batch_size = 16
patience = 2
aug_p = 0.0
"""
# What the command imports on first use (its stores, Optuna's importances for the summary's
# plots, ...): imported here, so that the forkserver's workers start with them.
LAZY_IMPORTS = (
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "mlflow.store.tracking.rest_store",
    "optuna.importance",
    "optuna.storages._rdb.models",
    "alembic.command",
    "alembic.runtime.migration",
    "matplotlib.backends.backend_agg",
    "pandas.io.formats.csvs",
    "pyarrow.pandas_compat",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "mako.template",
)
for _module in LAZY_IMPORTS:
    importlib.import_module(_module)

DATA = "synthetic:48"
HEARTBEAT_S = 1
TRIALS_PER_WORKER = 2  # --trials is this times the workers
SUMMARY_LINE = "stress: summary written"
BUSY_PREFIX = "busy-"  # a file a worker holds while its trainer runs: busy-<pid>
WORKER_TIMEOUT_S = 600

# --- in the workers ------------------------------------------------------------------------

EPOCH_S = 0.5  # set from --epoch-s in each worker


def sleeping_fit(config, train, val, *, device=None, on_epoch=(), precision="auto",
                 compile_model=False) -> FitResult:  # fmt: skip
    """trainer.fit's contract without the training: each epoch sleeps and scores what the
    parameters say, so that the sampler has something to go on."""
    busy = Path(f"{BUSY_PREFIX}{os.getpid()}")
    busy.touch()
    model = build_model(config.depth, config.base_channels, device or torch.device("cpu"))
    history = []
    for epoch in range(1, config.max_epochs + 1):
        time.sleep(EPOCH_S)
        iou = 0.5 + 0.1 * np.sin(3 * np.log10(config.lr)) + 0.05 * config.depth + 0.01 * epoch
        scores = Scores(accuracy=iou, iou=iou, fg_iou=iou)
        result = EpochResult(epoch, 1 - iou, 1 - iou, scores, scores, EPOCH_S)
        history.append(result)
        for hook in on_epoch:
            hook(result)
    busy.unlink()
    best = max(history, key=lambda r: r.val.iou)
    return FitResult(model, best.epoch, best.val.iou, StopReason.MAX_EPOCHS,
                     EPOCH_S * len(history), history)  # fmt: skip


def blank_figure(*args, **kwargs) -> Figure:
    return Figure()


def worker(argv: list[str], folder: str, log: str, epoch_s: float) -> None:
    """One worker process: the search command, its output to `log`, in `folder`."""
    global EPOCH_S
    EPOCH_S = epoch_s
    os.chdir(folder)
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    harness.runs.fit = sleeping_fit
    # Drawing and rendering the figures is most of a trial's CPU on this machine, and no part
    # of the coordination: blank figures, not logged; no Optuna plots in the summary.
    harness.figures.training.learning_curves = harness.figures.training.prediction_grid = (
        blank_figure
    )
    harness.tracking.Tracker.log_figure = lambda *args, **kwargs: None
    harness.search.summary.STUDY_FIGURES.clear()
    summarise = harness.search.run.log_study_summary

    def counted_summary(*args, **kwargs):
        summarise(*args, **kwargs)
        print(SUMMARY_LINE, flush=True)

    harness.search.run.log_study_summary = counted_summary
    sys.exit(run_main(harness.search.command.main, argv))


# --- the benchmark ---------------------------------------------------------------------------


@dataclass
class Stores:
    storage: str
    tracking_uri: str


@dataclass
class Worker:
    process: multiprocessing.Process
    log: Path


@dataclass
class Outcome:
    exactly_n: bool
    repeated: int
    running_runs: int
    running_trials: int
    fail_without_reason: int
    runs_match: bool
    parents: int
    summaries: int
    errors: int
    killed: bool
    wall_s: float
    conns_per_worker: int | None = None
    conns_total: int | None = None
    notes: list[str] = field(default_factory=list)


class Connections:
    """TCP connections to the PostgreSQL port held by each worker process, sampled."""

    def __init__(self, port: int | None):
        self.port = port
        self.per_worker = 0
        self.total = 0

    def sample(self, pids: list[int]) -> None:
        if self.port is None:
            return
        inodes = self._established_inodes()
        counts = [self._count(pid, inodes) for pid in pids]
        self.per_worker = max([self.per_worker, *counts])
        self.total = max(self.total, sum(counts))

    def _established_inodes(self) -> set[str]:
        wanted = f"{self.port:04X}"
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                remote_port, state, inode = fields[2].split(":")[1], fields[3], fields[9]
                if remote_port == wanted and state == "01":  # ESTABLISHED
                    inodes.add(inode)
        return inodes

    @staticmethod
    def _count(pid: int, inodes: set[str]) -> int:
        count = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    count += 1
        except OSError:  # the process has exited
            pass
        return count


class Bench:
    def __init__(self, args, root: Path):
        self.args, self.root = args, root
        self.context = multiprocessing.get_context("forkserver")
        # By its module name, found through PYTHONPATH: Python 3.11's forkserver never preloads
        # "__main__" (it looks for a "main_path" that its preparation data calls
        # "init_main_from_path") and does not take the parent's sys.path.
        here = Path(__file__).resolve().parent
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(here), str(here.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        self.context.set_forkserver_preload([Path(__file__).stem])
        self.space = root / "space.toml"
        self.space.write_text(SPACE)
        self.cache = root / "cache"
        os.environ["HARNESS_CACHE_DIR"] = str(self.cache)
        load_splits(DATA, 32)  # the decoded-data cache is warm for every worker
        self.mlflow_template = root / "mlflow-template.db"
        Tracker(f"sqlite:///{self.mlflow_template}")  # migrated once; copied per repetition
        self.postgres = self.mlflow_server = None
        # the forkserver imports the harness once, here rather than in the first repetition
        warm_up = self.context.Process(target=time.sleep, args=(0,))
        warm_up.start()
        warm_up.join()
        self.rng = random.Random(args.seed)
        self.names = itertools.count()

    def start_postgres(self) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise SystemExit("PostgreSQL server binaries (initdb, postgres) not found")
        self.postgres = start_postgres(bin_dir, {"max_connections": self.args.max_connections})
        backend = self.postgres.create_database("mlflow")
        backend = backend.replace("postgresql://", "postgresql+psycopg2://")
        folder = self.root / "mlflow-server"
        folder.mkdir()
        self.mlflow_server = start_mlflow_server(backend, folder)

    def stop(self) -> None:
        for server in (self.mlflow_server, self.postgres):
            if server is not None:
                server.stop()

    def stores(self, kind: str, folder: Path, name: str) -> Stores:
        if kind == "sqlite":
            shutil.copy(self.mlflow_template, folder / "mlflow.db")
            return Stores(f"sqlite:///{folder / 'optuna.db'}", f"sqlite:///{folder / 'mlflow.db'}")
        return Stores(self.postgres.create_database(name), self.mlflow_server.url)

    def start(self, argv: list[str], folder: Path, name: str) -> Worker:
        log = folder / f"{name}.log"
        process = self.context.Process(
            target=worker, args=(argv, str(folder), str(log), self.args.epoch_s)
        )
        process.start()
        return Worker(process, log)

    def repetition(self, kind: str, workers: int, kill: bool) -> Outcome:
        name = f"stress_{kind}_{workers}_{next(self.names)}"
        folder = self.root / name
        folder.mkdir()
        stores = self.stores(kind, folder, name)
        trials = TRIALS_PER_WORKER * workers
        argv = ["--space", str(self.space), "--data", DATA, "--study", name,
                "--trials", str(trials), "--storage", stores.storage,
                "--tracking-uri", stores.tracking_uri, "--heartbeat", str(HEARTBEAT_S),
                "--no-confirm", "--no-refit", "--no-promote", "--no-progress"]  # fmt: skip
        connections = Connections(self.postgres.port if kind == "postgresql" else None)
        started = time.perf_counter()
        crowd = [self.start(argv, folder, f"worker{i}") for i in range(workers)]
        victim, killed_at, notes = None, None, []
        if kill:
            victim = self.training_worker(crowd, folder, connections)
            if victim is not None:
                time.sleep(self.rng.uniform(0, self.args.epoch_s))  # somewhere in the trainer
                os.kill(victim.process.pid, signal.SIGKILL)
                killed_at = time.monotonic()
            else:
                notes.append("no worker trained")
        self.wait(crowd, connections)
        if victim is not None and not (folder / f"{BUSY_PREFIX}{victim.process.pid}").exists():
            notes.append("victim was not in its trainer when killed")
        runs = list(crowd)
        if killed_at is not None:
            time.sleep(max(0.0, killed_at + GRACE_HEARTBEATS * HEARTBEAT_S + 1 - time.monotonic()))
            rerun = self.start(argv, folder, "rerun")
            self.wait([rerun], connections)
            runs.append(rerun)
        wall = time.perf_counter() - started
        errors = 0
        for w in runs:
            text = w.log.read_text()
            expected = -signal.SIGKILL if w is victim else 0
            if (
                w.process.exitcode != expected
                or "Traceback" in text
                or "database is locked" in text
            ):
                errors += 1
                notes.append(f"{w.log.name}: exit {w.process.exitcode}")
        summaries = sum(w.log.read_text().count(SUMMARY_LINE) for w in runs)
        outcome = check(stores, name, trials, summaries, errors, victim is not None, wall)
        if kind == "postgresql":
            outcome.conns_per_worker, outcome.conns_total = (
                connections.per_worker,
                connections.total,
            )
        outcome.notes = notes
        if not self.args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        return outcome

    def training_worker(self, crowd: list[Worker], folder: Path, connections: Connections):
        """A random one of the workers whose trainer runs, once one's does."""
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while time.monotonic() < deadline and any(w.process.is_alive() for w in crowd):
            busy = [w for w in crowd if (folder / f"{BUSY_PREFIX}{w.process.pid}").exists()]
            if busy:
                return self.rng.choice(busy)
            connections.sample([w.process.pid for w in crowd])
            time.sleep(0.05)
        return None

    def wait(self, crowd: list[Worker], connections: Connections) -> None:
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while any(w.process.is_alive() for w in crowd):
            connections.sample([w.process.pid for w in crowd if w.process.is_alive()])
            if time.monotonic() > deadline:
                for w in crowd:
                    w.process.kill()
                break
            time.sleep(0.2)
        for w in crowd:
            w.process.join()


def check(stores: Stores, name: str, target: int, summaries: int, errors: int, killed: bool,
          wall_s: float) -> Outcome:  # fmt: skip
    study = load_study(stores.storage, name)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED_STATES]
    params = [tuple(sorted(t.params.items())) for t in finished]
    repeated = sum(params.count(p) > 1 for p in params)
    client = MlflowClient(stores.tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=10_000)
    by_id = {r.info.run_id: r for r in runs}
    parents = [r for r in runs if r.data.tags.get(Tag.ROLE) == "study"]
    trial_runs = [r for r in runs if r.data.tags.get(Tag.ROLE) == "trial"]

    def has_reason(trial) -> bool:
        if trial.user_attrs.get(TrialAttr.FAIL_REASON):
            return True
        run = by_id.get(trial.user_attrs.get(TrialAttr.RUN_ID) or "")
        return run is not None and bool(run.data.tags.get(Tag.FAIL_REASON))

    failed = [t for t in trials if t.state.name == "FAIL"]
    finished_runs = sorted(r.info.run_id for r in trial_runs if r.info.status == "FINISHED")
    return Outcome(
        exactly_n=len(finished) == target,
        repeated=repeated,
        running_runs=sum(r.info.status == "RUNNING" for r in runs),
        running_trials=sum(t.state.name == "RUNNING" for t in trials),
        fail_without_reason=sum(not has_reason(t) for t in failed),
        runs_match=finished_runs == sorted(t.user_attrs.get(TrialAttr.RUN_ID) for t in finished),
        parents=len(parents),
        summaries=summaries,
        errors=errors,
        killed=killed,
        wall_s=wall_s,
    )


def span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def row(kind: str, workers: int, outcomes: list[Outcome]) -> str:
    if not outcomes:
        return f"| {kind} | {workers} | no repetitions |"
    conns = [o.conns_per_worker for o in outcomes if o.conns_per_worker is not None]
    totals = [o.conns_total for o in outcomes if o.conns_total is not None]
    cells = [
        kind,
        str(workers),
        str(TRIALS_PER_WORKER * workers),
        f"{len(outcomes)} ({sum(o.killed for o in outcomes)})",
        f"{sum(o.exactly_n for o in outcomes)}/{len(outcomes)}",
        str(sum(o.repeated for o in outcomes)),
        f"{sum(o.running_runs for o in outcomes)} / {sum(o.running_trials for o in outcomes)}",
        str(sum(o.fail_without_reason for o in outcomes)),
        str(sum(not o.runs_match for o in outcomes)),
        span([o.parents for o in outcomes]),
        span([o.summaries for o in outcomes]),
        str(sum(o.errors for o in outcomes)),
        f"{max(conns)} ({max(totals)})" if conns else "-",
        f"{np.median([o.wall_s for o in outcomes]):.0f}",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| storage | workers | N | reps (killed) | exactly N | repeated params | RUNNING left "
    "(runs / trials) | FAIL w/o reason | runs != finished | parents | summaries | errors "
    "| conns/worker (all) | s / rep (median) |\n|" + "---|" * 14
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--storages", nargs="+", choices=["sqlite", "postgresql"],
                        default=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument(
        "--wide", type=int, default=32, help="workers of the last setting (0: none)"
    )
    parser.add_argument("--wide-repetitions", type=int, default=2)
    parser.add_argument("--epoch-s", type=float, default=0.5, help="sleep per epoch (2 a trial)")
    parser.add_argument("--seed", type=int, default=0, help="picks the workers to kill")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=200,
        help="the PostgreSQL server's (its default, 100, is too few for 32 workers: see "
        "docs/scaling.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stores and logs")
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.repetitions, args.workers, args.wide, args.wide_repetitions = 2, [2], 4, 2
    quiet_libraries()
    print(f"workers stress: trials of 2 x {args.epoch_s} s sleeping epochs, heartbeat "
          f"{HEARTBEAT_S} s, --trials {TRIALS_PER_WORKER} x workers, SIGKILL in every second repetition")  # fmt: skip
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start; PostgreSQL "
          f"max_connections {args.max_connections}")  # fmt: skip
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="workers-stress-"))
    bench = Bench(args, root)
    lines = []
    try:
        if "postgresql" in args.storages or args.wide:
            bench.start_postgres()
        settings = [(kind, k, args.repetitions) for kind in args.storages for k in args.workers]
        if args.wide:
            settings.append(("postgresql", args.wide, args.wide_repetitions))
        for kind, workers, repetitions in settings:
            outcomes = []
            for rep in range(repetitions):
                outcome = bench.repetition(kind, workers, kill=rep % 2 == 1)
                outcomes.append(outcome)
                notes = "; ".join([f"{outcome.wall_s:.0f} s", *outcome.notes])
                print(f"  {kind} x{workers} rep {rep}: {notes}", flush=True)
            lines.append(row(kind, workers, outcomes))
            print(lines[-1], flush=True)
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"stores and logs kept in {root}")
    print()
    print(HEADER)
    print("\n".join(lines))
    print(f"total {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.2f} "
          "at the end")  # fmt: skip


if __name__ == "__main__":
    main()
