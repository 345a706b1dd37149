"""Best model for the least compute: random search, TPE, and TPE with the default pruner.

    python bench/search_efficiency.py [--budget 150] [--seeds 0 1 2] [--data synthetic]
                                      [--jobs 2] [--variant NAME:KEY=VALUE,...] [--out docs]
                                      [--extend random=450] [--resume]

Each method runs the default search space with the same budget of training epochs, over
several seeds: (a) random sampling without pruning, (b) TPE without pruning, (c) the default
(TPE with the space file's pruner). `--variant` adds candidate settings to compare (any
[study] key of the space file, e.g. `median:pruner=median,pruner_warmup_epochs=1`). It records the
best validation IoU reached against cumulative epochs (the anytime curve), and the epochs each
needs to come within 0.01 of the best IoU any of them found within the common budget.
`--extend random=450` runs random search on past the budget, so that when it has not come
within the tolerance by then its cost is measured instead of charged the budget (continuing
the saved searches with --resume: its trials are drawn independently from (seed, trial number),
so a continued search draws what the same search would have drawn had it run on). A second
table does the same on the mean anytime curve over the seeds, which one lucky search does not
set alone. Compute is counted in epochs, so
`--jobs` searches run at once (one torch thread each) without changing the result. Writes
`search_efficiency.png`, `search_efficiency.md` and the raw curves (`search_efficiency.json`,
written as searches finish; `--from-json` remakes the table and plot from it, `--resume`
runs only the searches it lacks) to --out.
Target (issue 8): the default needs at most a third of random search's compute.
"""

import argparse
import dataclasses
import json
import math
import multiprocessing
import random
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from common import machine  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.search.objective import Objective  # noqa: E402
from harness.search.spaces import StudySettings, load_space  # noqa: E402
from harness.search.studies import make_pruner, make_sampler  # noqa: E402
from harness.tracking import Tracker  # noqa: E402

# overrides of the space file's [study] settings; the default overrides nothing
METHODS: dict[str, dict[str, object]] = {
    "random": {"sampler": "random", "pruner": "none"},
    "tpe": {"sampler": "tpe", "pruner": "none"},
    "default": {},
}
TOLERANCE = 0.01  # the target's; --also-tolerance adds looser ones to the table
TARGET = "Target: the default at most 0.33 of random search's compute."


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    """`asha:pruner=asha,pruner_warmup_epochs=0` -> ("asha", {...}), typed like StudySettings."""
    name, _, assignments = text.partition(":")
    types = {f.name: f.type for f in dataclasses.fields(StudySettings)}
    overrides: dict[str, object] = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        if key not in types:
            raise SystemExit(f"--variant {text}: unknown study setting {key!r}")
        overrides[key] = int(value) if types[key] in (int, "int") else value
    return name, overrides


def anytime_curve(
    args: argparse.Namespace,
    method: str,
    overrides: dict[str, object],
    seed: int,
    threads: int,
    budget: int,
    done: list[tuple[int, float | None]],
) -> list[tuple[int, float | None]]:
    """(cumulative epochs, best validation IoU of a completed trial so far) after each trial,
    going on from the curve of the trials `done` (only for a sampler that ignores history)."""
    torch.set_num_threads(threads)
    quiet_libraries()
    space = load_space(args.space)
    settings = dataclasses.replace(space.study, **overrides)
    space = dataclasses.replace(space, study=settings)
    splits = load_splits(args.data, args.image_size or settings.image_size)
    max_epochs = settings.epochs(len(splits.train))
    study = optuna.create_study(
        direction=settings.direction,
        sampler=make_sampler(settings, seed),
        pruner=make_pruner(settings.pruner, settings, max_epochs, len(splits.train)),
    )
    # placeholders, so the next trial gets the number (and so the parameters and training
    # seed) it would have had
    for _ in done:
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    curve = list(done)
    better = max if settings.direction == "maximize" else min

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        spent = (curve[-1][0] if curve else 0) + len(trial.intermediate_values)
        best = curve[-1][1] if curve else None
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = trial.value if best is None else better(best, trial.value)
        curve.append((spent, best))
        if spent >= budget:
            study.stop()

    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
        experiment_id = tracker.experiment_id("search-efficiency")
        parent = tracker.start_run(experiment_id, f"{method}-seed{seed}")
        objective = Objective(
            space, splits, tracker, experiment_id, parent, f"{method}-{seed}",
            max_epochs, seed, "cpu",
        )  # fmt: skip
        study.optimize(objective, callbacks=[record], catch=(Exception,))
        tracker.end_run(parent, "FINISHED")
    return curve


def run_searches(
    args: argparse.Namespace, ran: dict[str, dict], budgets: dict[str, int], path: Path
) -> dict:
    """Every (method, seed) search of the methods to be `ran`, `args.jobs` at a time; curves
    saved to `path` as they end.

    With --resume, searches whose curve `path` already holds are not run again, saved random
    searches shorter than their budget go on from where they stopped, and the saved curves of
    other methods are kept.
    """
    saved = json.loads(path.read_text()) if args.resume and path.exists() else {}
    # methods this run leaves alone keep their saved curves
    methods = saved.get("methods", {}) | ran
    curves = {m: dict(saved.get("curves", {}).get(m, {})) for m in methods}
    threads = max(1, torch.get_num_threads() // args.jobs)
    jobs = {}
    for seed in args.seeds:
        for m in ran:
            done = curves[m].get(str(seed), [])
            if done and done[-1][0] >= budgets[m]:
                continue
            if done and not draws_independently(methods[m]):
                raise SystemExit(f"cannot extend the saved {m} search: its sampler uses history")
            jobs[m, seed] = done
    begun = time.perf_counter()
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        started = {
            pool.submit(
                anytime_curve, args, m, methods[m], seed, threads, budgets[m], done
            ): (m, seed, begun)
            for (m, seed), done in jobs.items()
        }  # fmt: skip
        for future in as_completed(started):
            method, seed, start = started[future]
            curve = future.result()
            curves[method][str(seed)] = curve
            path.write_text(json.dumps({"methods": methods, "curves": curves}, indent=1))
            print(
                f"  {method:<8} seed {seed}: {len(curve)} trials, {curve[-1][0]} epochs, "
                f"best {curve[-1][1]}, {time.perf_counter() - start:.0f} s into the benchmark",
                flush=True,
            )
    return curves


def draws_independently(overrides: dict[str, object]) -> bool:
    return overrides.get("sampler") == "random" and overrides.get("pruner") == "none"


def parse_extension(text: str) -> tuple[str, int]:
    method, _, epochs = text.partition("=")
    if method not in METHODS or not draws_independently(METHODS[method]) or not epochs.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected random=EPOCHS")
    return method, int(epochs)


def within_budget(curve: list, budget: int) -> list:
    """The curve the search would have drawn with `budget`: up to the trial that reached it."""
    end = next((i for i, (spent, _) in enumerate(curve) if spent >= budget), len(curve) - 1)
    return curve[: end + 1]


def epochs_to_reach(curve, threshold: float) -> int | None:
    return next((spent for spent, best in curve if best is not None and best >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=150, help="training epochs per search")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--image-size", type=int, default=None, help="default: the space file's")
    parser.add_argument("--space", default="unet")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--variant", action="append", default=[], type=parse_variant)
    parser.add_argument("--jobs", type=int, default=1, help="searches run at once")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--from-json", type=Path, help="tabulate saved curves, run nothing")
    parser.add_argument(
        "--also-tolerance", type=float, nargs="*", default=[0.02], help="more tables, looser"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the curves already in --out's JSON"
    )
    parser.add_argument(
        "--extend", action="append", default=[], type=parse_extension, metavar="random=EPOCHS",
        help="run random search on to EPOCHS, to measure what it needs past the budget",
    )  # fmt: skip
    args = parser.parse_args()
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        curves = saved["curves"]
        args.variant = [(m, o) for m, o in saved["methods"].items() if m not in METHODS]
        args.seeds = sorted({int(seed) for per_seed in curves.values() for seed in per_seed})
    else:
        image_size = args.image_size or load_space(args.space).study.image_size
        load_splits(args.data, image_size)  # fill the cache once, before the workers read it
        print(f"machine: {machine()}")
        print(f"{args.space} space on {args.data} at {image_size}px, {args.budget} epochs per search, seeds {args.seeds}")  # fmt: skip
        methods = {m: METHODS[m] for m in args.methods} | dict(args.variant)
        budgets = {m: args.budget for m in methods} | dict(args.extend)
        if budgets.keys() != methods.keys():
            raise SystemExit("--extend names a method this run does not run (see --methods)")
        curves = run_searches(args, methods, budgets, args.out / "search_efficiency.json")
    curves = {m: per_seed for m, per_seed in curves.items() if per_seed}
    tolerances = (TOLERANCE, *args.also_tolerance)
    tables = [tabulate(curves, args.budget, t) for t in tolerances]
    tables += [tabulate_mean(curves, args.budget, t) for t in tolerances]
    table = "\n\n".join(t for t, _ in tables)
    thresholds = {"best any search found": tables[0][1], "best mean": tables[len(tolerances)][1]}
    print(table)
    command = (
        f"python bench/search_efficiency.py --budget {args.budget} --seeds {' '.join(map(str, args.seeds))} "
        f"--data {args.data} --jobs {args.jobs}"
        + "".join(f" --variant {name}:" + ",".join(f"{k}={v}" for k, v in o.items()) for name, o in args.variant)
        + "".join(f" --extend {m}={e}" for m, e in args.extend)
    )  # fmt: skip
    (args.out / "search_efficiency.md").write_text(
        f"Measured with `{command}` on {machine()}.\n\n{table}\n"
    )
    plot(curves, args.budget, thresholds, args.out / "search_efficiency.png")
    print(f"wrote {args.out}/search_efficiency.png, .md and .json")


def tabulate(
    curves: dict[str, dict[str, list]], budget: int, tolerance: float
) -> tuple[str, float]:
    """Per search: the best any search found within `budget` sets the threshold; a search that
    never got there is charged what it spent (a lower bound on its cost, shown as >N)."""
    finals = {m: finals_at(per_seed, budget) for m, per_seed in curves.items()}
    best_overall = max(max(f) for f in finals.values())
    threshold = best_overall - tolerance
    rows = {}
    for method, per_seed in curves.items():
        reached = [(epochs_to_reach(c, threshold), c[-1][0]) for c in per_seed.values()]
        censored = any(r is None for r, _ in reached)
        epochs = statistics.mean(r if r is not None else spent for r, spent in reached)
        rows[method] = {
            "final": statistics.mean(finals[method]),
            "trials": statistics.mean(len(within_budget(c, budget)) for c in per_seed.values()),
            "reached": f"{sum(r is not None for r, _ in reached)}/{len(reached)}",
            "epochs": epochs,
            "mean": f"≥ {epochs:.0f}" if censored else f"{epochs:.0f}",
            "each": ", ".join(str(r) if r is not None else f">{spent}" for r, spent in reached),
            "censored": censored,
        }  # fmt: skip
    lines = [
        f"Per search. Best validation IoU any search found in {budget} epochs: {best_overall:.4f}; threshold {threshold:.4f} (best - {tolerance}).",
        "",
        "| method | trials per search | mean best IoU at the budget | reached threshold | epochs to threshold, per seed | mean | / random |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += table_rows(rows)
    if tolerance == TOLERANCE:
        lines += ["", TARGET]
    return "\n".join(lines), threshold


def finals_at(per_seed: dict[str, list], budget: int) -> list[float]:
    """Each search's best IoU once it had spent the budget (the trial that crossed it included)."""
    return [within_budget(c, budget)[-1][1] or 0.0 for c in per_seed.values()]


def mean_curve(per_seed: dict[str, list]) -> list[tuple[int, float]]:
    """The mean over seeds of the best IoU so far, at every epoch count where a search ended a
    trial, from when every seed has a completed trial until the first search stopped."""
    steps = [[(s, b) for s, b in c if b is not None] for c in per_seed.values()]
    if not all(steps):
        raise SystemExit("a search without a completed trial has no anytime curve to average")
    start, end = max(c[0][0] for c in steps), min(c[-1][0] for c in steps)
    points = sorted({s for c in steps for s, _ in c if start <= s <= end})
    # the step function of each curve: the last value at or before the epoch count
    return [
        (e, statistics.mean(next(b for s, b in reversed(c) if s <= e) for c in steps))
        for e in points
    ]  # fmt: skip


def mean_rows(
    curves: dict[str, dict[str, list]], budget: int, tolerance: float
) -> tuple[dict[str, dict], float]:
    """On each method's mean anytime curve: the threshold is the best mean at the budget."""
    at_budget = {m: statistics.mean(finals_at(per_seed, budget)) for m, per_seed in curves.items()}
    threshold = max(at_budget.values()) - tolerance
    rows = {}
    for method, per_seed in curves.items():
        curve = mean_curve(per_seed)
        reached = epochs_to_reach(curve, threshold)
        rows[method] = {
            "final": at_budget[method],
            "epochs": reached if reached is not None else curve[-1][0],
            "each": str(reached) if reached is not None else f">{curve[-1][0]}",
            "censored": reached is None,
        }
    return rows, threshold


def tabulate_mean(
    curves: dict[str, dict[str, list]], budget: int, tolerance: float
) -> tuple[str, float]:
    rows, threshold = mean_rows(curves, budget, tolerance)
    lines = [
        f"Mean over seeds. Best mean of the searches' best IoU at {budget} epochs: {threshold + tolerance:.4f}; threshold {threshold:.4f} (best - {tolerance}).",
        "",
        "| method | mean best IoU at the budget | epochs for the mean curve to reach the threshold | / random |",
        "|---|---|---|---|",
    ]
    lines += table_rows(rows)
    if {"default", "random"} <= rows.keys():
        lines += ["", bootstrap_summary(curves, budget, tolerance)]
    if tolerance == TOLERANCE:
        lines += ["", TARGET]
    return "\n".join(lines), threshold


def bootstrap_summary(
    curves: dict[str, dict[str, list]], budget: int, tolerance: float, resamples: int = 2000
) -> str:
    """How much the mean-curve ratio of the default to random search owes to which seeds ran.

    Seeds are resampled in pairs: with the same seed the two searches share their first trial
    (TPE starts with the random sampler's draws), so they are not independent.
    """
    seeds = sorted(curves["default"].keys() & curves["random"].keys(), key=int)
    rng = random.Random(0)
    draws = []  # (ratio, default never got there, random never got there)
    for _ in range(resamples):
        drawn = [rng.choice(seeds) for _ in seeds]
        pair = {
            m: {str(i): curves[m][s] for i, s in enumerate(drawn)} for m in ("default", "random")
        }
        rows, _ = mean_rows(pair, budget, tolerance)
        d, r = rows["default"], rows["random"]
        draws.append((d["epochs"] / r["epochs"], d["censored"], r["censored"]))
    ratios = sorted(ratio for ratio, _, _ in draws)
    low, median, high = (ratios[round(q * (len(ratios) - 1))] for q in (0.05, 0.5, 0.95))
    # a resample where the default never got there cannot show the target met
    met = sum(ratio <= 1 / 3 and not d_cut for ratio, d_cut, _ in draws) / len(draws)
    random_cut = sum(r_cut for _, _, r_cut in draws) / len(draws)
    return (
        f"Seeds {', '.join(seeds)} resampled with replacement, default and random search together, "
        f"{resamples} times (threshold from those two): default / random median {median:.2f}, 90% "
        f"between {low:.2f} and {high:.2f}, at most 1/3 in {met:.0%}. In {random_cut:.0%} of them "
        "random search's mean curve never got there and is charged the epochs it ran, so those "
        "ratios are upper bounds."
    )


def table_rows(rows: dict[str, dict]) -> list[str]:
    """Markdown rows; a ratio with a censored side (a search charged only what it spent) is a
    bound, rounded the safe way, and says which way; with both sides censored it says nothing."""
    baseline = rows.get("random")
    lines = []
    for method, r in rows.items():
        ratio = "-"
        if baseline and method != "random":
            value = r["epochs"] / baseline["epochs"]
            if r["censored"] and baseline["censored"]:
                ratio = "n/a (both censored)"
            elif r["censored"]:
                ratio = f"≥ {math.floor(value * 100) / 100:.2f}"
            elif baseline["censored"]:
                ratio = f"≤ {math.ceil(value * 100) / 100:.2f}"
            else:
                ratio = f"{value:.2f}"
        elif baseline:
            ratio = "1.00"
        if "trials" in r:
            cells = [
                f"{r['trials']:.0f}",
                f"{r['final']:.4f}",
                r["reached"],
                r["each"],
                r["mean"],
                ratio,
            ]
        else:
            cells = [f"{r['final']:.4f}", r["each"], ratio]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def plot(
    curves: dict[str, dict[str, list]], budget: int, thresholds: dict[str, float], path: Path
) -> None:
    colours = dict(zip(curves, plt.get_cmap("tab10").colors, strict=False))
    fig, ax = plt.subplots(figsize=(8, 5))
    for method, per_seed in curves.items():
        for curve in per_seed.values():
            points = [(s, b) for s, b in curve if b is not None]
            ax.step(
                *zip(*points, strict=True), where="post", color=colours[method], alpha=0.3, lw=0.8
            )
        ax.step(
            *zip(*mean_curve(per_seed), strict=True),
            where="post", color=colours[method], lw=2, label=f"{method} (mean of {len(per_seed)} seeds)",
        )  # fmt: skip
    for (name, threshold), style in zip(thresholds.items(), (":", "-."), strict=True):
        ax.axhline(threshold, color="black", linestyle=style, lw=1, label=f"{name} - {TOLERANCE}")
    ax.axvline(budget, color="grey", linestyle="--", label="common budget")
    ax.set(
        xlabel="cumulative training epochs",
        ylabel="best validation IoU so far",
        title="Anytime performance (thin: one search each; thick: mean over seeds)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
