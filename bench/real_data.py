"""Real photos: the hand recipe against the default search, on the shared real data sets.

    python bench/real_data.py [--datasets weizmann-horse kvasir-seg] [--seeds 0 1 2]
                              [--search-seeds 0 1] [--trials 50] [--space FILE]
                              [--data-dir ../shared/data] [--out docs/real_data.json] [--resume]
    python bench/real_data.py --datasets weizmann-horse --seeds 0 --search-seeds 0 \\
        --trials 2 --max-epochs 2 --out /tmp/real_data.json   # smoke: checks that it runs

For each data set under --data-dir (by default ../shared/data, relative to the repository; one
that is missing is skipped with a line), each run the command a user would type, as a
subprocess in a temporary folder of its own, where its default MLflow and Optuna stores land:
- (a) the original report's hand recipe, `python -m harness.train` with depth 3, base
  channels 32, Adam 1e-3, batch 16, patience 5, augmentation 0.2, up to 40 epochs, on the
  harness's own split, once per --seeds training seed: test mean IoU, and their mean and
  standard deviation;
- (b) the mission's command with nothing but the data set, `python -m harness.search --trials
  50 --data folder:PATH`, once per --search-seeds `--seed` (and `--no-progress`, which only
  keeps its log readable): the test mean IoU of the model it promoted, read from the registry
  (the champion version's score tag, else its source run's `test_iou`, so that it reads the
  same whichever run, a trial or a refit, was registered);
- (c) the compute of each: epochs trained (every epoch any run of the store logged, pruned
  trials' included) and wall time (process start to exit; the data is decoded before).
Prints one table. Target (issue 19): on every data set, each search seed's promoted model
beats the hand recipe's mean by at least 0.02 and by more than its seed-to-seed standard
deviation. Each run is saved in --out as it ends; `--resume` runs only those the file lacks
(runs of other settings stay in the file, not shown). `--max-epochs` caps both commands, for
a smoke test only: figures made with it are not the benchmark's. `--space` runs the search on
another space file than the default, to measure a candidate default the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import machine  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.names import (  # noqa: E402  # noqa: E402
    CHAMPION,
    DEFAULT_REGISTERED_MODEL,
    SCORE_METRIC,
    Metric,
    Param,
    Tag,
    VersionTag,
)

DATA_DIR = ROOT.parent / "shared" / "data"
DATASETS = ("weizmann-horse", "kvasir-seg")
IMAGE_SIZE = 64
HAND_RECIPE = {"depth": 3, "base-channels": 32, "lr": 1e-3, "batch-size": 16, "patience": 5,
               "aug-p": 0.2}  # fmt: skip
HAND_MAX_EPOCHS = 40
MARGIN = 0.02  # the target's
LOG_TAIL = 20  # lines of a failed command's output shown


@dataclass(frozen=True)
class Measured:
    test_iou: float | None  # None: the search promoted no model
    epochs: int
    wall_s: float
    notes: str


@dataclass(frozen=True)
class Result:
    """One run as saved in --out: what was run (the key), what it measured, where."""

    dataset: str
    kind: str  # "hand" or "search"
    seed: int
    settings: dict  # the rest of what was run
    measured: Measured
    commit: str
    machine: str


def run_key(dataset: str, kind: str, seed: int, settings: dict) -> str:
    return json.dumps([dataset, kind, seed, settings], sort_keys=True)


def settings_of(kind: str, args: argparse.Namespace) -> dict:
    if kind == "hand":
        return {"max_epochs": args.max_epochs or HAND_MAX_EPOCHS}
    settings = {"trials": args.trials, "max_epochs": args.max_epochs}  # None: the space file's
    if args.space:
        settings["space"] = str(args.space)  # absent: the default space, as in older files
    return settings


@contextmanager
def fresh_run(argv: list[str]) -> Iterator[tuple[MlflowClient, float]]:
    """Run `python ARGV` in a new temporary folder; (client on its MLflow store, wall s)."""
    with tempfile.TemporaryDirectory(prefix="real-data-") as folder:
        log = Path(folder) / "output.log"
        # the subprocess runs this checkout's harness, whatever is installed
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        start = time.perf_counter()
        with open(log, "w") as out:
            code = subprocess.call([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                   cwd=folder, env={**os.environ, "PYTHONPATH": path})  # fmt: skip
        wall = time.perf_counter() - start
        if code:
            tail = "\n".join(log.read_text().splitlines()[-LOG_TAIL:])
            raise SystemExit(f"`python {' '.join(argv)}` exited {code}:\n{tail}")
        yield MlflowClient(f"sqlite:///{Path(folder) / 'mlflow.db'}"), wall


def all_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=10_000)


def epochs_trained(client: MlflowClient, runs: list) -> int:
    """Every epoch the runs logged: a pruned trial logs its epochs, though no summary."""
    return sum(len(client.get_metric_history(r.info.run_id, Metric.EPOCH_TIME_S)) for r in runs)


def best_epoch_note(metrics: dict[str, float]) -> str:
    if Metric.BEST_EPOCH not in metrics:
        return ""
    return f"best epoch {int(metrics[Metric.BEST_EPOCH])} of {int(metrics[Metric.EPOCHS_RUN])}"


def measure_hand(data: str, seed: int, settings: dict) -> Measured:
    flags = [item for name, value in HAND_RECIPE.items() for item in (f"--{name}", str(value))]
    argv = ["-m", "harness.train", "--data", data, "--image-size", str(IMAGE_SIZE), *flags,
            "--max-epochs", str(settings["max_epochs"]), "--seed", str(seed)]  # fmt: skip
    with fresh_run(argv) as (client, wall):
        (run,) = all_runs(client)
        metrics = run.data.metrics
        return Measured(
            metrics[SCORE_METRIC], epochs_trained(client, [run]), wall, best_epoch_note(metrics)
        )


def measure_search(data: str, seed: int, settings: dict) -> Measured:
    capped = ["--max-epochs", str(settings["max_epochs"])] if settings["max_epochs"] else []
    space = ["--space", str(Path(settings["space"]).resolve())] if "space" in settings else []
    argv = ["-m", "harness.search", "--trials", str(settings["trials"]), "--data", data,
            "--seed", str(seed), "--no-progress", *capped, *space]  # fmt: skip
    with fresh_run(argv) as (client, wall):
        runs = all_runs(client)
        study = next(r for r in runs if r.data.tags.get(Tag.ROLE) == "study")
        counts = {s: int(study.data.metrics.get(f"trials_{s}", 0)) for s in ("complete", "pruned")}
        score, promoted = promoted_model(client)
        trials = ", ".join(f"{n} {state}" for state, n in counts.items())
        notes = [trials, promoted, final_stage(study.data.metrics)]
        return Measured(score, epochs_trained(client, runs), wall, "; ".join(filter(None, notes)))


def final_stage(metrics: dict[str, float]) -> str:
    """The study's best trial, its winner over seeds and the refit, on test (issue 15)."""
    words = []
    if SCORE_METRIC in metrics:
        words.append(f"best trial {metrics[SCORE_METRIC]:.4f}")
    if Metric.WINNER_TEST_IOU_MEAN in metrics:
        sd = metrics.get(Metric.WINNER_TEST_IOU_SD)
        spread = "" if sd is None else f" ± {sd:.4f}"
        words.append(f"winner's runs {metrics[Metric.WINNER_TEST_IOU_MEAN]:.4f}{spread}")
    if Metric.REFIT_TEST_IOU in metrics:
        words.append(
            f"refit {metrics[Metric.REFIT_TEST_IOU]:.4f} ({int(metrics[Metric.REFIT_EPOCHS])} epochs)"
        )
    return ", ".join(words)


def promoted_model(client: MlflowClient) -> tuple[float | None, str]:
    """(test mean IoU, a few words on it) of the registered champion."""
    try:
        version = client.get_model_version_by_alias(DEFAULT_REGISTERED_MODEL, CHAMPION)
    except MlflowException:
        return None, "no model promoted"
    source = client.get_run(version.tags.get(VersionTag.SOURCE_RUN_ID) or version.run_id)
    score = version.tags.get(VersionTag.SCORE)
    params, metrics = source.data.params, source.data.metrics
    words = [
        f"promoted {source.info.run_name}: depth {params.get(Param.DEPTH)}",
        f"base {params.get(Param.BASE_CHANNELS)}",
        best_epoch_note(metrics),
    ]
    return (
        float(score) if score is not None else metrics[SCORE_METRIC],
        ", ".join(filter(None, words)),
    )


MEASURE = {"hand": measure_hand, "search": measure_search}


def git_commit() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return f"{commit}+changes" if git("status", "--porcelain", "--untracked-files=no") else commit


def load(path: Path) -> dict[str, Result]:
    if not path.is_file():
        return {}
    results = []
    for entry in json.loads(path.read_text())["runs"]:
        results.append(Result(**{**entry, "measured": Measured(**entry["measured"])}))
    return {run_key(r.dataset, r.kind, r.seed, r.settings): r for r in results}


def save(path: Path, results: dict[str, Result]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"runs": [asdict(r) for r in results.values()]}, indent=1) + "\n")
    os.replace(tmp, path)  # an interrupted write leaves the previous file whole


def describe(m: Measured) -> str:
    score = "no model" if m.test_iou is None else f"test mean IoU {m.test_iou:.4f}"
    return f"{score}, {m.epochs} epochs, {m.wall_s / 60:.1f} min; {m.notes}"


def meets_target(score: float | None, mean: float, sd: float | None) -> bool:
    """At least MARGIN above the hand recipe's mean, and more than its standard deviation."""
    return score is not None and score - mean >= MARGIN and (sd is None or score - mean > sd)


COLUMNS = (
    "data set",
    "run",
    "seed",
    "test mean IoU",
    "vs hand mean",
    "epochs",
    "wall min",
    "notes",
)


def row(cells: list | tuple) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def compute(epochs: float, wall_s: float, notes: str) -> list:
    return [f"{epochs:.0f}", f"{wall_s / 60:.1f}", notes]


def search_label(r: Result) -> str:
    label = f"search --trials {r.settings['trials']}"
    if "space" in r.settings:
        label += f" --space {Path(r.settings['space']).name}"
    return label


def table(results: list[Result]) -> str:
    lines = [row(COLUMNS), row(["---"] * len(COLUMNS))]
    verdicts = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        hand = [r for r in results if r.dataset == dataset and r.kind == "hand"]
        searches = [r for r in results if r.dataset == dataset and r.kind == "search"]
        for r in hand:
            m = r.measured
            lines.append(row([dataset, "hand recipe", r.seed, f"{m.test_iou:.4f}", "",
                              *compute(m.epochs, m.wall_s, m.notes)]))  # fmt: skip
        mean = sd = None
        if hand:
            scores = [r.measured.test_iou for r in hand]
            mean = statistics.mean(scores)
            sd = statistics.stdev(scores) if len(scores) > 1 else None
            what, score = "mean", f"{mean:.4f}"
            if sd is not None:
                what, score = "mean ± sd", f"{score} ± {sd:.4f}"
            epochs = statistics.mean(r.measured.epochs for r in hand)
            wall = statistics.mean(r.measured.wall_s for r in hand)
            count = f"{len(hand)} seed{'s' if len(hand) > 1 else ''}"
            lines.append(row([dataset, f"hand recipe, {what}", count, score, "",
                              *compute(epochs, wall, "epochs and wall time per seed")]))  # fmt: skip
        for r in searches:
            m = r.measured
            score = "none" if m.test_iou is None else f"{m.test_iou:.4f}"
            delta = "" if mean is None or m.test_iou is None else f"{m.test_iou - mean:+.4f}"
            lines.append(row([dataset, search_label(r), r.seed, score,
                              delta, *compute(m.epochs, m.wall_s, m.notes)]))  # fmt: skip
        if mean is None:
            continue
        bar = f"+{MARGIN}" + ("" if sd is None else f" and > +{sd:.4f}")
        for label in dict.fromkeys(map(search_label, searches)):
            runs = [r for r in searches if search_label(r) == label]
            seeds = [r.seed for r in runs]
            met = [r.seed for r in runs if meets_target(r.measured.test_iou, mean, sd)]
            verdicts.append(
                f"{dataset}, {label}: target ({bar} over the hand mean) met by search seeds "
                f"{met} of {seeds}"
            )
    return "\n".join(lines + [""] + verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=list(DATASETS), help="folders of --data-dir"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=[0, 1, 2], help="the hand recipe's --seed"
    )
    parser.add_argument(
        "--search-seeds", type=int, nargs="*", default=[0, 1], help="the search's --seed"
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="smoke test only: caps both commands"
    )
    parser.add_argument("--space", type=Path, help="the search's space file (default: its own)")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="where the data sets are")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "real_data.json")
    parser.add_argument("--resume", action="store_true", help="keep the runs already in --out")
    args = parser.parse_args()  # fmt: skip
    if args.space and not args.space.is_file():
        parser.error(f"--space {args.space}: no such file")
    quiet_libraries()
    results = load(args.out) if args.resume else {}
    commit, where = git_commit(), machine()
    print(f"machine: {where}; harness at {commit}")
    if args.max_epochs:
        print(f"smoke: --max-epochs {args.max_epochs} caps every run: not the benchmark's figures")

    shown: list[Result] = []
    for dataset in args.datasets:
        path = args.data_dir.resolve() / dataset
        if not path.is_dir():
            print(f"skipped {dataset}: {path} not found")
            continue
        data = f"folder:{path}"
        load_splits(data, IMAGE_SIZE)  # decoded once, before any clock starts
        runs = [("hand", seed) for seed in args.seeds]
        runs += [("search", seed) for seed in args.search_seeds]
        for kind, seed in runs:
            settings = settings_of(kind, args)
            key = run_key(dataset, kind, seed, settings)
            if key not in results:
                print(f"{dataset}: {kind} seed {seed} ...", flush=True)
                measured = MEASURE[kind](data, seed, settings)
                results[key] = Result(dataset, kind, seed, settings, measured, commit, where)
                save(args.out, results)
                print(f"  {describe(measured)}", flush=True)
            shown.append(results[key])
    if shown:
        print(table(shown))
        print(
            f"measured at harness {', '.join(sorted({r.commit for r in shown}))}; runs in {args.out}"
        )


if __name__ == "__main__":
    main()
