"""Confirmation and refit against the plain best trial, over several search seeds.

    python bench/confirm.py [--seeds 0 1 2 3 4] [--trials 50] [--data synthetic]
                            [--out docs/confirm.json] [--resume]

Each search seed runs the default command (`python -m harness.search --trials 50 --seed S`,
confirmation and refit on) as a subprocess in a folder of its own. From the study's parent run
it reads, side by side: the test mean IoU of the plain best trial (what the search registered
before confirmation and refit), the winner's runs over seeds, and the refit model (what it
registers now), with the epochs of each stage. Target (issue 15): across search seeds, the
registered model's mean test IoU is higher than the plain best trial's, its standard deviation
at least 30% smaller, for at most 40% more epochs than the search alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402
from real_data import ROOT, all_runs, fresh_run, git_commit, promoted_model  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.names import (  # noqa: E402
    SCORE_METRIC,  # noqa: E402
    Metric,
    Role,
    Tag,
    stage_epochs_metric,
)

SD_REDUCTION = 0.3  # the target's
EXTRA_EPOCHS = 0.4


def measure(data: str, seed: int, trials: int) -> dict:
    argv = ["-m", "harness.search", "--trials", str(trials), "--data", data,
            "--seed", str(seed), "--no-progress"]  # fmt: skip
    with fresh_run(argv) as (client, wall):
        study = next(r for r in all_runs(client) if r.data.tags.get(Tag.ROLE) == Role.STUDY)
        metrics = study.data.metrics
        registered, words = promoted_model(client)
        return {
            "best_trial": metrics[SCORE_METRIC],
            "winner_mean": metrics[Metric.WINNER_TEST_IOU_MEAN],
            "winner_sd": metrics.get(Metric.WINNER_TEST_IOU_SD),
            "registered": registered,
            "epochs": {stage: int(metrics[stage_epochs_metric(stage)]) for stage in STAGES},
            "wall_s": wall,
            "notes": words,
        }


STAGES = ("search", Role.CONFIRM, Role.REFIT)


def spread(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan")


def report(results: dict[str, dict]) -> str:
    lines = [
        "| seed | best trial | winner's runs | registered (refit) | epochs search / confirm / "
        "refit | wall min |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for seed, r in sorted(results.items(), key=lambda item: int(item[0])):
        sd = "" if r["winner_sd"] is None else f" ± {r['winner_sd']:.4f}"
        epochs = " / ".join(str(r["epochs"][stage]) for stage in STAGES)
        lines.append(
            f"| {seed} | {r['best_trial']:.4f} | {r['winner_mean']:.4f}{sd} | "
            f"{r['registered']:.4f} | {epochs} | {r['wall_s'] / 60:.1f} |"
        )
    plain_mean, plain_sd = spread([r["best_trial"] for r in results.values()])
    new_mean, new_sd = spread([r["registered"] for r in results.values()])
    search = sum(r["epochs"]["search"] for r in results.values())
    extra = sum(r["epochs"][Role.CONFIRM] + r["epochs"][Role.REFIT] for r in results.values())
    sd_ratio = new_sd / plain_sd if plain_sd else float("nan")
    lines += [
        "",
        f"over {len(results)} search seeds: plain best trial {plain_mean:.4f} ± {plain_sd:.4f}, "
        f"registered (confirmed and refit) {new_mean:.4f} ± {new_sd:.4f}",
        f"mean higher: {'yes' if new_mean > plain_mean else 'no'} ({new_mean - plain_mean:+.4f}); "
        f"sd ratio {sd_ratio:.2f} (target <= {1 - SD_REDUCTION:.2f}); "
        f"extra epochs {extra / search:.2f} of the search's (target <= {EXTRA_EPOCHS:.2f})",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "confirm.json")
    parser.add_argument("--resume", action="store_true", help="keep the seeds already in --out")
    args = parser.parse_args()
    quiet_libraries()
    saved = json.loads(args.out.read_text()) if args.resume and args.out.is_file() else {}
    key = f"{args.data} --trials {args.trials}"
    results = saved.get(key, {})
    commit, where = git_commit(), machine()
    print(f"machine: {where}; harness at {commit}; {key}")
    load_splits(args.data, 64)  # decoded once, before any clock starts
    for seed in args.seeds:
        if str(seed) in results:
            continue
        print(f"search seed {seed} ...", flush=True)
        results[str(seed)] = {**measure(args.data, seed, args.trials), "commit": commit}
        saved[key] = results
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps(saved, indent=1) + "\n")
        os.replace(tmp, args.out)
        print(f"  {results[str(seed)]}", flush=True)
    print(report({s: r for s, r in results.items() if int(s) in args.seeds}))


if __name__ == "__main__":
    main()
