"""Base channels 16 against 32 at the default space's epoch budget, seed by seed.

    python bench/base_channels.py [--data synthetic folder:../shared/data/kvasir-seg ...]
                                  [--seeds 0 1 2] [--widths 16 32] [--batch-size 8]
                                  [--space FILE] [--config KEY=VALUE ...]
                                  [--refit | --refit-epochs N]
                                  [--out docs/base_channels.json]

The default space fixes base channels at 16; the original report's hand recipe uses 32. Wider
models cost about four times the work per epoch but no more epochs, and issue 19's compute
limits are counted in epochs. For one configuration (a typical winner of the default search:
depth 4, batch 8, Adam 2e-3, patience 5, aug 0.2) and each data set, with the space's epoch
budget for that set, it trains one run per seed and width (on train, early-stopped on
validation, as a trial does) and prints each width's test mean IoU (mean and standard
deviation over the seeds), the paired differences by seed, the best epochs and the wall time.
`--batch-size` trains the same configuration at another batch size (more optimizer steps per
epoch at a smaller one, again at no cost in epochs). `--space` takes the epoch budget from a
candidate space file instead of the default one, and `--config` trains another configuration
(`--config depth=5 lr=1.2e-3 patience=8 aug_p=0.03`, over the typical winner's values).
`--refit` also trains, after each width's runs and from the same seeds, the refit as the search
does it (train + validation, the median of those runs' best epochs, the learning rate annealed
to zero), the model the search registers. `--refit-epochs N` trains only the refits, for N
epochs (the epochs the search would take from runs at another width, say).
Results are kept in --out by data set name, so a run on one set leaves the others in place.
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
from harness.search.confirm import REFIT_LR_SCHEDULE, figures, median_epoch  # noqa: E402
from harness.search.spaces import load_space  # noqa: E402
from harness.trainer import TrainConfig  # noqa: E402

DEFAULT_DATA = ["synthetic", f"folder:{ROOT.parent / 'shared' / 'data' / 'kvasir-seg'}"]


def parse_config(pairs: list[str]) -> dict:
    """`KEY=VALUE` overrides of the typical winner: each key one of its fields, each value of
    that field's type."""
    config = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in WINNER or not value:
            raise ValueError(f"{pair!r}: use KEY=VALUE, KEY one of {', '.join(WINNER)}")
        kind = type(WINNER[key])
        try:
            config[key] = kind(value)
        except ValueError:
            raise ValueError(f"{pair!r}: {key} takes a {kind.__name__}") from None
    return config


def measure(
    spec: str,
    seeds: list[int],
    widths: list[int],
    space_file: str,
    config: dict,
    refit: bool,
    refit_epochs: int | None = None,
) -> dict:
    """With `refit_epochs`, only the refits, for that many epochs (no runs to take them from)."""
    space = load_space(space_file)
    splits = load_splits(spec, space.study.image_size)
    budget = space.study.epochs(len(splits.train))
    config = TrainConfig(**{**WINNER, **config}, max_epochs=budget)
    refit = refit or refit_epochs is not None
    both = concatenate(splits.train, splits.val) if refit else None
    by_width = {}
    for width in widths:
        runs = {"test_iou": [], "best_epochs": [], "wall_s": []}
        for seed in seeds if refit_epochs is None else []:
            start = time.perf_counter()
            run = replace(config, base_channels=width, seed=seed)
            iou, best = test_iou(run, splits.train, splits.val, splits.test)
            runs["wall_s"].append(time.perf_counter() - start)
            runs["test_iou"].append(iou)
            runs["best_epochs"].append(best)
        by_width[str(width)] = runs
        if refit:
            epochs = median_epoch(runs["best_epochs"]) if refit_epochs is None else refit_epochs
            runs["refit"] = {
                "epochs": epochs,
                "test_iou": [
                    test_iou(
                        replace(config, base_channels=width, seed=seed, max_epochs=epochs,
                                lr_schedule=REFIT_LR_SCHEDULE),
                        both, None, splits.test,
                    )[0]
                    for seed in seeds
                ],
            }  # fmt: skip
    return {
        "config": asdict(config),
        "space": space_file,
        "train_images": len(splits.train),
        "widths": by_width,
    }


def report(results: dict[str, dict]) -> str:
    lines = [
        "| data | budget | batch | base | test mean IoU | minus the first width, by seed "
        "| best epochs | wall min per run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        first = next(iter(r["widths"].values()))
        for width, w in r["widths"].items():
            if w["test_iou"]:
                paired = " ".join(f"{b - a:+.4f}" for a, b in zip(first["test_iou"], w["test_iou"]))
                wall = sum(w["wall_s"]) / len(w["wall_s"]) / 60
                lines.append(
                    f"| {name} | {r['config']['max_epochs']} | {r['config']['batch_size']} "
                    f"| {width} | {figures(w['test_iou'])} | {paired} "
                    f"| {' '.join(map(str, w['best_epochs']))} | {wall:.1f} |"
                )
            if "refit" in w:
                refit, firsts = w["refit"]["test_iou"], first["refit"]["test_iou"]
                paired = " ".join(f"{b - a:+.4f}" for a, b in zip(firsts, refit))
                lines.append(
                    f"| {name} | refit, {w['refit']['epochs']} epochs | "
                    f"{r['config']['batch_size']} | {width} | {figures(refit)} | {paired} | | |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--batch-size", type=int, default=WINNER["batch_size"])
    parser.add_argument("--space", default="unet", help="the space file whose budget to use")
    parser.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--refit", action="store_true", help="also the refit of each width")
    parser.add_argument(
        "--refit-epochs", type=int, help="only the refits, for this many epochs (no runs)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "base_channels.json")
    args = parser.parse_args()
    try:
        config = {"batch_size": args.batch_size, **parse_config(args.config)}
    except ValueError as error:
        parser.error(f"--config {error}")
    if args.refit_epochs is not None and args.refit_epochs < 1:
        parser.error(f"--refit-epochs {args.refit_epochs}: must be at least 1")
    quiet_libraries()
    print(f"machine: {machine()}; harness at {git_commit()}")
    results = measure_each(
        args.data,
        args.out,
        lambda s: measure(
            s, args.seeds, args.widths, args.space, config, args.refit, args.refit_epochs
        ),
    )
    print(report(results))


if __name__ == "__main__":
    main()
