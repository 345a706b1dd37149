"""Compute saved by pruning: the same seeded study with the default pruner and with none.

    python bench/pruning_savings.py [--trials 50] [--data synthetic] [--seeds 0 [1 2 ...]]
                                    [--pruners asha ...]

Runs `harness.search` twice per seed: all the studies run at the same time, one process with
one torch thread each (fresh Optuna and MLflow stores in a temporary folder), so that they
see the same machine; CPU time is the figure to compare across seeds. Prints total epochs
trained, wall time, CPU time and best validation IoU of each, with the ratios; with several
seeds, also their means (one seed's best IoU moves with the seed by about as much as the
target's margin: docs/performance.md). Target (issue 3): at least 40% fewer epochs with the
best IoU within 0.01.
"""

import argparse
import multiprocessing
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from common import machine

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.search import SearchOptions, run_search
from harness.search.spaces import load_space


def one_study(
    args: argparse.Namespace, pruner: str, seed: int, folder: str
) -> tuple[int, float, float, float]:
    """(epochs trained, wall s, CPU s, best validation IoU) of one study."""
    torch.set_num_threads(1)
    quiet_libraries()
    options = SearchOptions(
        trials=args.trials, space=args.space, data=args.data, seed=seed,
        pruner=pruner, study=f"pruning-{pruner}-{seed}",
        storage=f"sqlite:///{Path(folder) / f'optuna-{pruner}-{seed}.db'}",
        tracking_uri=f"sqlite:///{Path(folder) / f'mlflow-{pruner}-{seed}.db'}",
        promote=False, confirm=False, refit=False, progress_bar=False,
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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--pruners", nargs="+", help="run only these (default: the space's pruner and none)"
    )
    args = parser.parse_args()
    quiet_libraries()
    default_pruner = load_space(args.space).study.pruner
    load_splits(args.data, load_space(args.space).study.image_size)  # fill the cache first
    print(f"machine: {machine()}; each study: 1 torch thread, all at once")

    pruners = args.pruners or (default_pruner, "none")
    results: dict[int, dict[str, tuple[int, float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(pruners) * len(args.seeds), mp_context=context) as pool:
            futures = {
                (seed, p): pool.submit(one_study, args, p, seed, tmp)
                for seed in args.seeds
                for p in pruners
            }  # fmt: skip
            for (seed, pruner), future in futures.items():
                results.setdefault(seed, {})[pruner] = future.result()

    print(f"\n{args.trials} trials of {args.space} on {args.data}")
    print(
        f"{'seed':>4} {'pruner':<10} {'epochs':>7} {'wall s':>8} {'CPU s':>8} {'best val IoU':>13}"
    )
    for seed, by_pruner in results.items():
        for pruner, (epochs, wall, cpu, best) in by_pruner.items():
            print(f"{seed:>4} {pruner:<10} {epochs:>7} {wall:>8.0f} {cpu:>8.0f} {best:>13.4f}")
    if set(pruners) != {default_pruner, "none"}:
        return
    for seed, by_pruner in results.items():
        print(
            f"seed {seed}: " + compare(by_pruner[default_pruner], by_pruner["none"], default_pruner)
        )
    if len(results) > 1:
        mean = {
            p: tuple(statistics.mean(r[p][i] for r in results.values()) for i in range(4))
            for p in pruners
        }  # fmt: skip
        print(
            f"mean of {len(results)} seeds: "
            + compare(mean[default_pruner], mean["none"], default_pruner)
        )
    print("targets: at least 40% fewer epochs, best IoU within 0.01")


def compare(pruned: tuple, unpruned: tuple, name: str) -> str:
    (pe, pw, pc, pb), (ne, nw, nc, nb) = pruned, unpruned
    return (
        f"{name} trains {1 - pe / ne:.0%} fewer epochs, wall time ratio {pw / nw:.2f}, "
        f"CPU time ratio {pc / nc:.2f}, best IoU {pb - nb:+.4f}"
    )


if __name__ == "__main__":
    main()
