"""Training throughput of the harness trainer against a bare eager PyTorch loop, and peak
memory of a large load.

    python bench/trainer_throughput.py [--epochs 3] [--depths 3 4] [--skip-rss]

Side by side in one run (images per second over the training split, median of the epochs
after the first; every loop also runs its validation forward pass per epoch):
- the bare eager loop: float32, NCHW, tensors already in memory (the yardstick);
- the bare loop in channels_last;
- the harness trainer with everything on (data path from uint8 arrays, metrics, early
  stopping, MLflow logging to SQLite), augmentation off and at aug_p = 0.2.
Target (issue 8): harness with augmentation at 0.2 >= 1.3x the bare eager loop at depth 3.
Then, in a child process, peak resident memory of loading `synthetic:7400` at 256x256 and
training one epoch (target < 3 GB), and the time of a warm load of the same set at 64x64
(target: about a second).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch
from common import as_tensors, bare_epochs, machine, peak_rss_mb, steady

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.runs import train_tracked
from harness.tracking import Tracker
from harness.trainer import TrainConfig, fit


def harness_epochs(splits, tracker, depth, base, batch_size, epochs, aug_p) -> list[float]:
    run_id = tracker.start_run(tracker.experiment_id("bench"), f"d{depth}-aug{aug_p}")
    config = TrainConfig(
        depth=depth, base_channels=base, batch_size=batch_size, aug_p=aug_p,
        max_epochs=epochs, patience=epochs,
    )  # fmt: skip
    result = train_tracked(tracker, run_id, config, splits, torch.device("cpu"))
    return [r.epoch_time_s for r in result.history]


def large_load_and_epoch(spec: str, size: int, depth: int, base: int) -> dict:
    """Runs in a child process so that its peak RSS is its own."""
    with tempfile.TemporaryDirectory() as cache:
        splits = load_splits(spec, size, cache_dir=cache)
        after_load = peak_rss_mb()
        config = TrainConfig(
            depth=depth, base_channels=base, batch_size=16, aug_p=0.2, max_epochs=1
        )
        result = fit(config, splits.train, splits.val, device=torch.device("cpu"))
    return {
        "images": len(splits.train) + len(splits.val) + len(splits.test),
        "peak_after_load_mb": after_load,
        "peak_mb": peak_rss_mb(),
        "epoch_s": result.history[0].epoch_time_s,
    }


def warm_load_seconds(spec: str, size: int) -> float:
    with tempfile.TemporaryDirectory() as cache:
        load_splits(spec, size, cache_dir=cache)  # cold: generate and cache
        start = time.perf_counter()
        load_splits(spec, size, cache_dir=cache)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true", help="skip the 256x256 memory check")
    parser.add_argument("--rss-only", action="store_true", help="only the 256x256 memory check")
    parser.add_argument("--rss-data", default="synthetic:7400")
    parser.add_argument("--rss-base-channels", type=int, default=8)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_libraries()
    if args.child:
        print(json.dumps(large_load_and_epoch(args.rss_data, 256, 3, args.rss_base_channels)))
        return

    print(f"machine: {machine()}")
    if not args.rss_only:
        measure_throughput(args)
    if not args.skip_rss:
        measure_rss(args)


def measure_throughput(args) -> None:
    splits = load_splits(args.data, 64)
    x, y = as_tensors(splits.train.images, splits.train.masks)
    val_x, _ = as_tensors(splits.val.images, splits.val.masks)
    n = len(splits.train)
    print(
        f"data {splits.spec}: {n} train images at 64px, batch {args.batch_size}, base {args.base_channels}"
    )
    print(f"{'depth':>5}  {'loop':<36} {'img/s':>7} {'vs bare eager':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
        for depth in args.depths:
            shape = dict(
                depth=depth,
                base_channels=args.base_channels,
                batch_size=args.batch_size,
                epochs=args.epochs,
                val_x=val_x,
            )
            rows = [
                ("bare eager (float32, NCHW)", steady(bare_epochs(x, y, **shape))),
                ("bare channels_last", steady(bare_epochs(x, y, **shape, channels_last=True))),
            ]
            for aug_p in (0.0, 0.2):
                times = harness_epochs(
                    splits, tracker, depth, args.base_channels, args.batch_size, args.epochs, aug_p
                )
                rows.append((f"harness, aug_p {aug_p}", steady(times)))
            for name, seconds in rows:
                print(
                    f"{depth:>5}  {name:<36} {n / seconds:>7.0f} {rows[0][1] / seconds:>13.2f}x",
                    flush=True,
                )


def measure_rss(args) -> None:
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--rss-data", args.rss_data, "--rss-base-channels", str(args.rss_base_channels)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(child.stdout.strip().splitlines()[-1])
    print(
        f"{args.rss_data} at 256x256 ({result['images']} images), cold load + 1 epoch "
        f"(depth 3, base {args.rss_base_channels}, {result['epoch_s']:.0f} s): peak RSS "
        f"{result['peak_after_load_mb'] / 1024:.2f} GB after load, {result['peak_mb'] / 1024:.2f} GB in all (target < 3 GB)"
    )
    seconds = warm_load_seconds(args.rss_data, 64)
    print(f"{args.rss_data} at 64x64: warm load {seconds:.3f} s (target: about a second)")


if __name__ == "__main__":
    main()
