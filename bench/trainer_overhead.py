"""What the harness trainer costs over a bare PyTorch loop, and cold versus warm data loading.

    python bench/trainer_overhead.py [--data synthetic] [--epochs 4] [--depth 3]

Side by side in one run, on the same tensors, model and batch size:
- the bare loop in plain float32 / NCHW (the yardstick every PyTorch user writes);
- the bare loop with the settings the harness picks on this machine (channels_last, and
  bf16 autocast where the CPU has it), so that the ratio isolates the harness's own work;
- the harness trainer with augmentation off and MLflow logging on (SQLite store).
Every loop also runs a validation forward pass per epoch, as the harness does.
Target (issue 2): harness / bare-with-same-settings at most 1.10.
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import as_tensors, bare_epochs, machine, steady

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.runs import train_tracked
from harness.tracking import Tracker
from harness.trainer import TrainConfig, autocast_dtype


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    quiet_libraries()
    print(f"machine: {machine()}")

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        load_splits(args.data, args.image_size, cache_dir=cache)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        splits = load_splits(args.data, args.image_size, cache_dir=cache)
        warm = time.perf_counter() - start
        assert splits.from_cache
        print(
            f"data {splits.spec} at {args.image_size}px: cold load {cold:.2f} s, warm load {warm:.3f} s ({cold / warm:.0f}x)"
        )

        x, y = as_tensors(splits.train.images, splits.train.masks)
        val_x, _ = as_tensors(splits.val.images, splits.val.masks)
        device = torch.device("cpu")
        dtype = autocast_dtype("auto", device)
        shape = dict(
            depth=args.depth,
            base_channels=args.base_channels,
            batch_size=args.batch_size,
            epochs=args.epochs,
        )
        yardstick = steady(bare_epochs(x, y, **shape, val_x=val_x))
        same = steady(bare_epochs(x, y, **shape, channels_last=True, dtype=dtype, val_x=val_x))

        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db")
        run_id = tracker.start_run(tracker.experiment_id("bench"), "overhead")
        config = TrainConfig(
            depth=args.depth, base_channels=args.base_channels, batch_size=args.batch_size,
            aug_p=0.0, max_epochs=args.epochs, patience=args.epochs,
        )  # fmt: skip
        fit = train_tracked(tracker, run_id, config, splits, device)
        harness = steady([r.epoch_time_s for r in fit.history])

    n = len(splits.train)
    print(
        f"UNet depth {args.depth} base {args.base_channels}, batch {args.batch_size}, {n} train images, median of epochs 2..{args.epochs}"
    )
    print(f"{'loop':<44} {'s/epoch':>8} {'img/s':>7} {'ratio':>6}")
    rows = [
        ("bare, float32 NCHW (yardstick)", yardstick),
        (f"bare, channels_last + {dtype or 'float32'}".replace("torch.", ""), same),
        ("harness trainer, aug off, MLflow on", harness),
    ]
    for name, seconds in rows:
        print(f"{name:<44} {seconds:>8.2f} {n / seconds:>7.0f} {seconds / yardstick:>6.2f}")
    print(
        f"harness overhead over the bare loop with the same settings: {harness / same:.3f} (target <= 1.10)"
    )


if __name__ == "__main__":
    main()
