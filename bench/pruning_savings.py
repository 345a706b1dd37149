"""Compute saved by pruning: the same seeded study with the default pruner and with none.

    python bench/pruning_savings.py [--trials 50] [--data synthetic] [--seed 0]

Runs `harness.search` twice, side by side: the two studies run at the same time in two
processes with one torch thread each (fresh Optuna and MLflow stores in a temporary folder),
so both see the same machine. Prints total epochs trained, wall time, CPU time and best
validation IoU of each, with the ratios. Target (issue 3): at least 40% fewer epochs with the
best IoU within 0.01.
"""

import argparse
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import machine

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.search import SearchOptions, run_search
from harness.spaces import load_space


def one_study(
    args: argparse.Namespace, pruner: str, folder: str
) -> tuple[int, float, float, float]:
    """(epochs trained, wall s, CPU s, best validation IoU) of one study."""
    torch.set_num_threads(1)
    quiet_libraries()
    options = SearchOptions(
        trials=args.trials, space=args.space, data=args.data, seed=args.seed,
        pruner=pruner, study=f"pruning-{pruner}",
        storage=f"sqlite:///{Path(folder) / f'optuna-{pruner}.db'}",
        tracking_uri=f"sqlite:///{Path(folder) / f'mlflow-{pruner}.db'}",
        promote=False, progress_bar=False,
    )  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    study = run_search(options).study
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # every trial reports its validation IoU once per epoch it trained
    epochs = sum(len(t.intermediate_values) for t in study.trials)
    return epochs, wall, cpu, study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--space", default="unet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_libraries()
    default_pruner = load_space(args.space).study.pruner
    load_splits(args.data, load_space(args.space).study.image_size)  # fill the cache first
    print(f"machine: {machine()}; each study: 1 torch thread, both at once")

    pruners = (default_pruner, "none")
    with tempfile.TemporaryDirectory() as tmp:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(pruners), mp_context=context) as pool:
            futures = {p: pool.submit(one_study, args, p, tmp) for p in pruners}
            results = {p: f.result() for p, f in futures.items()}

    print(f"\n{args.trials} trials of {args.space} on {args.data}, seed {args.seed}")
    print(f"{'pruner':<10} {'epochs':>7} {'wall s':>8} {'CPU s':>8} {'best val IoU':>13}")
    for pruner, (epochs, wall, cpu, best) in results.items():
        print(f"{pruner:<10} {epochs:>7} {wall:>8.0f} {cpu:>8.0f} {best:>13.4f}")
    (pe, pw, pc, pb), (ne, nw, nc, nb) = results[default_pruner], results["none"]
    print(
        f"epochs saved by {default_pruner}: {1 - pe / ne:.0%} (target >= 40%); "
        f"wall time ratio {pw / nw:.2f}, CPU time ratio {pc / nc:.2f}"
    )
    print(f"best IoU difference: {pb - nb:+.4f} (target within 0.01)")


if __name__ == "__main__":
    main()
