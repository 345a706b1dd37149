"""Local storage under several processes: SQLite (the harness's RDB storage) vs JournalStorage.

    python bench/local_storage.py [--workers 3] [--trials 60]

Each worker is a process running `study.optimize` on one shared study until the study holds
`--trials` finished trials (MaxTrialsCallback), with an objective that only writes: ten
intermediate values and a user attribute per trial, no training. That is the worst case for
write contention; a real trial trains for seconds between its writes. SQLite gets what the
harness gives it (60 s busy timeout, heartbeats every second); the journal file gets Optuna's
default lock. Prints, per storage: wall time, trials per second, finished trials, failed
trials, errors seen by the workers ("database is locked" and others), duplicated numbers.
"""

import argparse
import multiprocessing
import sys
import tempfile
import time
import traceback
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.cli import quiet_libraries  # noqa: E402
from harness.search.studies import make_storage  # noqa: E402

STUDY = "contention"


def storage_for(kind: str, folder: Path):
    if kind == "sqlite":
        return make_storage(f"sqlite:///{folder / 'optuna.db'}", heartbeat_s=1)
    backend = optuna.storages.journal.JournalFileBackend(str(folder / "journal.log"))
    return optuna.storages.JournalStorage(backend)


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0, 1)
    for step in range(10):
        trial.report(x * step, step)
    trial.set_user_attr("note", "written")
    return x


def worker(kind: str, folder: Path, trials: int, errors) -> None:
    quiet_libraries()
    try:
        study = optuna.load_study(study_name=STUDY, storage=storage_for(kind, folder))
        done = (optuna.trial.TrialState.COMPLETE,)
        study.optimize(
            objective,
            n_trials=trials,
            catch=(Exception,),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)],
        )
    except Exception:
        errors.append(traceback.format_exc().strip().splitlines()[-1])


def measure(kind: str, workers: int, trials: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        optuna.create_study(study_name=STUDY, storage=storage_for(kind, folder))
        with multiprocessing.Manager() as manager:
            errors = manager.list()
            start = time.perf_counter()
            processes = [
                multiprocessing.Process(target=worker, args=(kind, folder, trials, errors))
                for _ in range(workers)
            ]
            for p in processes:
                p.start()
            for p in processes:
                p.join()
            wall = time.perf_counter() - start
            errors = list(errors)
        study = optuna.load_study(study_name=STUDY, storage=storage_for(kind, folder))
        all_trials = study.get_trials(deepcopy=False)
        states = [t.state for t in all_trials]
        numbers = [t.number for t in all_trials]
        return {
            "wall_s": wall,
            "trials_per_s": len(all_trials) / wall,
            "complete": states.count(optuna.trial.TrialState.COMPLETE),
            "failed": states.count(optuna.trial.TrialState.FAIL),
            "errors": errors,
            "duplicate_numbers": len(numbers) - len(set(numbers)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--trials", type=int, default=60)
    args = parser.parse_args()
    quiet_libraries()
    print(f"{args.workers} processes, one study, target {args.trials} complete trials")
    print(f"{'storage':<8} {'wall s':>7} {'trials/s':>9} {'complete':>9} {'failed':>7} "
          f"{'dup nums':>9}  errors")  # fmt: skip
    for kind in ("sqlite", "journal"):
        r = measure(kind, args.workers, args.trials)
        locked = sum("database is locked" in e for e in r["errors"])
        print(f"{kind:<8} {r['wall_s']:>7.1f} {r['trials_per_s']:>9.1f} {r['complete']:>9} "
              f"{r['failed']:>7} {r['duplicate_numbers']:>9}  "
              f"{len(r['errors'])} ({locked} database is locked)")  # fmt: skip
        for error in sorted(set(r["errors"])):
            print(f"           {error}")


if __name__ == "__main__":
    main()
