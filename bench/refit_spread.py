"""The registered model's own seed-to-seed spread: one configuration, refit once per seed.

    python bench/refit_spread.py [--data synthetic] [--seeds 0 1 2 3 4 5]
                                 [--out docs/refit_spread.json]

The search registers one refit model, so even a search that always chose the same
configuration would promote models that differ by that configuration's seed-to-seed spread.
That spread is a floor under the standard deviation across search seeds that issue 15 asks to
narrow. For one configuration (a typical winner of the default search: depth 4, base 16,
batch 8, Adam 2e-3, patience 5, aug 0.2) it trains the refit as the search does it, on
train + validation, annealed over the space's whole epoch budget (the median best epoch of the
winners' runs on the generated data), once per seed, and prints the test mean IoU of each,
their mean and standard deviation. Results are kept in --out by data set name.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine  # noqa: E402
from real_data import ROOT, git_commit  # noqa: E402
from refit_schedule import WINNER, measure_each, test_iou  # noqa: E402

from harness.cli import quiet_libraries  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.runs import concatenate  # noqa: E402
from harness.search.confirm import REFIT_LR_SCHEDULE, figures  # noqa: E402
from harness.search.spaces import load_space  # noqa: E402
from harness.trainer import TrainConfig  # noqa: E402


def measure(spec: str, seeds: list[int]) -> dict:
    space = load_space()
    splits = load_splits(spec, space.study.image_size)
    budget = space.study.epochs(len(splits.train))
    config = TrainConfig(**WINNER, max_epochs=budget, lr_schedule=REFIT_LR_SCHEDULE)
    both = concatenate(splits.train, splits.val)
    scores, walls = [], []
    for seed in seeds:
        start = time.perf_counter()
        scores.append(test_iou(replace(config, seed=seed), both, None, splits.test)[0])
        walls.append(time.perf_counter() - start)
    return {"config": asdict(config), "seeds": seeds, "test_iou": scores, "wall_s": walls}


def report(results: dict[str, dict]) -> str:
    lines = [
        "| data | refit epochs | seeds | test mean IoU, by seed | mean ± sd | wall min per run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        by_seed = " ".join(f"{iou:.4f}" for iou in r["test_iou"])
        wall = sum(r["wall_s"]) / len(r["wall_s"]) / 60
        lines.append(
            f"| {name} | {r['config']['max_epochs']} | {len(r['seeds'])} | {by_seed} | "
            f"{figures(r['test_iou'])} | {wall:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["synthetic"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "refit_spread.json")
    args = parser.parse_args()
    quiet_libraries()
    print(f"machine: {machine()}; harness at {git_commit()}")
    print(report(measure_each(args.data, args.out, lambda spec: measure(spec, args.seeds))))


if __name__ == "__main__":
    main()
