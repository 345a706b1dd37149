"""Where torch.compile pays for itself: the harness trainer eager and compiled, side by side.

    python bench/compile_break_even.py [--depths 3 5] [--epochs 4] [--data synthetic]

For each depth, trains the same configuration (base 16, batch 16, aug_p 0.2, the search
space's fixed values) with `fit(..., compile_model=False)` and `compile_model=True` and prints
the compile cost (the compiled first epoch minus an eager epoch), the steady per-epoch gain,
and the break-even: the number of epochs after which the compiled training has caught up.
`--compile` is off by default when a search's trials are shorter than that.
"""

import argparse

import torch
from common import machine, steady

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.trainer import TrainConfig, fit


def epoch_times(splits, depth: int, epochs: int, compile_model: bool) -> list[float]:
    config = TrainConfig(
        depth=depth, base_channels=16, batch_size=16, aug_p=0.2, max_epochs=epochs,
        patience=epochs,
    )  # fmt: skip
    result = fit(
        config, splits.train, splits.val, device=torch.device("cpu"), compile_model=compile_model
    )
    return [r.epoch_time_s for r in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    quiet_libraries()
    splits = load_splits(args.data, 64)
    print(f"machine: {machine()}")
    print(
        f"data {splits.spec}: {len(splits.train)} train images at 64px, {args.epochs} epochs each"
    )
    print(f"{'depth':>5} {'eager s/epoch':>14} {'compiled s/epoch':>17} {'gain':>6} {'compile s':>10} {'break-even epochs':>18}")  # fmt: skip
    for depth in args.depths:
        eager = epoch_times(splits, depth, args.epochs, compile_model=False)
        compiled = epoch_times(splits, depth, args.epochs, compile_model=True)
        eager_s, compiled_s = steady(eager), steady(compiled)
        # eval switches the compiled model to a second graph: both compile during epoch 1
        cost = compiled[0] - eager_s
        gain = eager_s - compiled_s
        break_even = f"{cost / gain:.0f}" if gain > 0 else "never"
        print(
            f"{depth:>5} {eager_s:>14.2f} {compiled_s:>17.2f} {gain / eager_s:>6.0%} {cost:>10.1f} {break_even:>18}",
            flush=True,
        )


if __name__ == "__main__":
    main()
