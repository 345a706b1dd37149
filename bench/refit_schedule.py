"""The refit's learning-rate schedule: constant against cosine, beside the runs it replaces.

    python bench/refit_schedule.py [--data synthetic folder:../shared/data/kvasir-seg ...]
                                   [--seeds 0 1 2] [--out docs/refit_schedule.json]

For one configuration (by default a typical winner of the default search: depth 4, base 16,
batch 8, Adam 2e-3, patience 5, aug 0.2) and each data set, with the default space's epoch
budget for that set, it trains side by side:
- the runs: on train, early-stopped on validation (what confirmation trains), one per seed;
- the refit as the search does it, on train + validation for the median of the runs' best
  epochs, with the learning rate constant (`lr_schedule = "constant"`) and, from the same
  seed, annealed to zero over those epochs (`"cosine"`).
It prints the test mean IoU of each, their mean and standard deviation over the seeds, and the
refits' paired differences. Issue 15 asks that on real photos the refit beat the runs.
Results are kept in --out by data set name (`synthetic`, or the folder's name), so a run on
one set leaves the others' figures in place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402
from real_data import ROOT, git_commit  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.runs import concatenate  # noqa: E402
from harness.search.confirm import figures, median_epoch  # noqa: E402
from harness.search.spaces import load_space  # noqa: E402
from harness.trainer import LR_SCHEDULES, TrainConfig, evaluate, fit  # noqa: E402

CPU = torch.device("cpu")
REAL = ("weizmann-horse", "kvasir-seg")
DEFAULT_DATA = ["synthetic", *(f"folder:{ROOT.parent / 'shared' / 'data' / n}" for n in REAL)]
WINNER = dict(depth=4, base_channels=16, batch_size=8, lr=2e-3, patience=5, aug_p=0.2)


def test_iou(config: TrainConfig, train, val, test) -> tuple[float, int]:
    """(test mean IoU, best epoch) of one fit, in float32 as on this machine's CPU."""
    result = fit(config, train, val, device=CPU, precision="fp32")
    return evaluate(result.model, test, CPU)[1].iou, result.best_epoch


def measure(spec: str, seeds: list[int]) -> dict:
    space = load_space()
    splits = load_splits(spec, space.study.image_size)
    budget = space.study.epochs(len(splits.train))
    config = TrainConfig(**WINNER, max_epochs=budget)
    start = time.perf_counter()
    runs = [test_iou(replace(config, seed=s), splits.train, splits.val, splits.test) for s in seeds]
    epochs = median_epoch(best for _, best in runs)
    both = concatenate(splits.train, splits.val)
    refits = {schedule: [] for schedule in LR_SCHEDULES}
    for schedule, scores in refits.items():
        for s in seeds:
            refit = replace(config, seed=s, max_epochs=epochs, lr_schedule=schedule)
            scores.append(test_iou(refit, both, None, splits.test)[0])
    return {
        "config": asdict(config),
        "train_images": len(splits.train),
        "runs": [iou for iou, _ in runs],
        "best_epochs": [best for _, best in runs],
        "refit_epochs": epochs,
        "refits": refits,
        "wall_s": time.perf_counter() - start,
    }


def name_of(spec: str) -> str:
    """The data set's name in --out: its folder's name, not the path it was read from here."""
    return Path(spec.removeprefix("folder:")).name if spec.startswith("folder:") else spec


def measure_each(specs: list[str], out: Path, measure_one: Callable[[str], dict]) -> dict:
    """`measure_one(spec)` for each data set that is here, with the machine and commit; each
    result is written to `out` under the set's name as it ends, beside the other sets' results."""
    saved = json.loads(out.read_text()) if out.is_file() else {}
    results = {}
    for spec in specs:
        if spec.startswith("folder:") and not Path(spec.removeprefix("folder:")).is_dir():
            print(f"skipped {spec}: no such folder")
            continue
        print(f"{spec} ...", flush=True)
        results[name_of(spec)] = {**measure_one(spec), "machine": machine(), "commit": git_commit()}
        out.write_text(json.dumps({**saved, **results}, indent=1) + "\n")
    return results


def report(results: dict[str, dict]) -> str:
    lines = [
        "| data | budget | refit epochs | runs (train, early-stopped) | refit, constant lr | "
        "refit, cosine | cosine minus constant, by seed |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        constant, cosine = r["refits"]["constant"], r["refits"]["cosine"]
        paired = " ".join(f"{b - a:+.4f}" for a, b in zip(constant, cosine))
        lines.append(
            f"| {name} | {r['config']['max_epochs']} | {r['refit_epochs']} | "
            f"{figures(r['runs'])} | {figures(constant)} | {figures(cosine)} | {paired} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "refit_schedule.json")
    args = parser.parse_args()
    quiet_libraries()
    print(f"machine: {machine()}; harness at {git_commit()}")
    print(report(measure_each(args.data, args.out, lambda spec: measure(spec, args.seeds))))


if __name__ == "__main__":
    main()
