"""Trials per minute with 1 and with 2 worker processes on one study.

    python bench/parallel_scaling.py [--trials 8] [--max-epochs 3] [--data synthetic]
                                     [--image-size 64] [--workers 1 2]
    python bench/parallel_scaling.py --smoke      # seconds, to check that it runs

Each configuration is a fresh study (local SQLite storage and MLflow store, created before
the clock starts) that `python -m harness.search --trials N` processes share, each with one
torch thread (OMP_NUM_THREADS=1). The space is a small one with the random sampler, no
pruning and no early stopping, so that every configuration trains the same N trials (a trial's
parameters depend only on its number) for exactly --max-epochs epochs. Two rates per row:
"wall" counts from launching the workers to the last one exiting (process start-up and the
study summary included); "trials" from the first trial's start to the last trial's end in
the storage. The ratio column is each row's rate over the first row's. The CPU is whatever
else the machine is doing: the load average is printed with the results.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402
from common import machine  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.search.studies import FINISHED_STATES, make_storage  # noqa: E402
from harness.tracking import Tracker  # noqa: E402

SPACE = """
[study]
sampler = "random"
pruner = "none"
max_epochs = {max_epochs}
image_size = {image_size}

[params.depth]
type = "int"
low = 2
high = 4

[params.lr]
type = "float"
low = 1e-4
high = 1e-2
log = true

[params.batch_size]
type = "categorical"
choices = [16, 32]

[fixed]
base_channels = {base_channels}
patience = 1000
aug_p = 0.2
"""


def run_configuration(workers: int, args, space: Path, folder: Path) -> dict:
    storage = f"sqlite:///{folder / 'optuna.db'}"
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    make_storage(storage)  # both stores exist before the clock starts
    Tracker(tracking_uri)
    argv = [sys.executable, "-m", "harness.search", "--trials", str(args.trials),
            "--space", str(space), "--data", args.data, "--study", "scaling",
            "--storage", storage, "--tracking-uri", tracking_uri,
            "--no-promote", "--no-confirm", "--no-refit", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    logs = [open(folder / f"worker{i}.log", "w") for i in range(workers)]
    start = time.perf_counter()
    processes = [
        subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
        for log in logs
    ]
    try:
        codes = [p.wait() for p in processes]
    finally:
        for p in processes:  # Ctrl-C: take the workers down too
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    wall = time.perf_counter() - start
    if any(codes):
        failed = codes.index(next(c for c in codes if c))
        raise SystemExit(
            f"worker {failed} exited {codes[failed]}:\n"
            + (folder / f"worker{failed}.log").read_text()
        )
    study = optuna.load_study(study_name="scaling", storage=storage)
    finished = study.get_trials(deepcopy=False, states=FINISHED_STATES)
    first = min(t.datetime_start for t in finished)
    last = max(t.datetime_complete for t in finished)
    span = (last - first).total_seconds()
    return {
        "workers": workers,
        "trials": len(finished),
        "wall_s": wall,
        "per_min_wall": 60 * len(finished) / wall,
        "per_min_trials": 60 * len(finished) / span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny settings: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.trials, args.max_epochs, args.data = 2, 1, "synthetic:48"
        args.image_size, args.base_channels = 32, 4
    quiet_libraries()
    load_splits(args.data, args.image_size)  # the decoded-data cache is warm for every worker

    print(f"parallel scaling: {args.trials} trials x {args.max_epochs} epochs on {args.data} at "
          f"{args.image_size}px, base_channels {args.base_channels}, 1 torch thread per worker")  # fmt: skip
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        space = Path(tmp) / "space.toml"
        space.write_text(SPACE.format(max_epochs=args.max_epochs, image_size=args.image_size,
                                      base_channels=args.base_channels))  # fmt: skip
        for workers in args.workers:
            folder = Path(tmp) / f"workers{workers}"
            folder.mkdir()
            rows.append(run_configuration(workers, args, space, folder))

    base = rows[0]
    print(f"{'workers':>7} {'trials':>6} {'wall s':>7} {'trials/min (wall)':>18} "
          f"{'trials/min (trials)':>20} {'ratio (wall)':>13} {'ratio (trials)':>15}")  # fmt: skip
    for r in rows:
        print(f"{r['workers']:>7} {r['trials']:>6} {r['wall_s']:>7.1f} {r['per_min_wall']:>18.2f} "
              f"{r['per_min_trials']:>20.2f} {r['per_min_wall'] / base['per_min_wall']:>13.2f} "
              f"{r['per_min_trials'] / base['per_min_trials']:>15.2f}")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
