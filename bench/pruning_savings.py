"""Compute saved by pruning: the same seeded study with the default pruner and with none.

    python bench/pruning_savings.py [--trials 50] [--data synthetic] [--seed 0]

Runs `harness.search` twice in one process, side by side (fresh Optuna and MLflow stores in a
temporary folder), and prints total epochs trained, wall time and best validation IoU of each,
with the ratios. Target (issue 3): at least 40% fewer epochs with the best IoU within 0.01.
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import machine

from harness.cli import quiet_libraries
from harness.search import SearchOptions, run_search
from harness.spaces import load_space


def study_epochs(study) -> int:
    """Epochs actually trained: every trial reports its validation IoU once per epoch."""
    return sum(len(t.intermediate_values) for t in study.trials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--space", default="unet")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_libraries()
    default_pruner = load_space(args.space).study.pruner
    print(f"machine: {machine()}")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pruner in (default_pruner, "none"):
            options = SearchOptions(
                trials=args.trials, space=args.space, data=args.data, seed=args.seed,
                pruner=pruner, study=f"pruning-{pruner}",
                storage=f"sqlite:///{Path(tmp) / 'optuna.db'}",
                tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
                promote=False, progress_bar=False,
            )  # fmt: skip
            start = time.perf_counter()
            result = run_search(options)
            results[pruner] = (
                study_epochs(result.study),
                time.perf_counter() - start,
                result.study.best_value,
            )

    print(f"\n{args.trials} trials of {args.space} on {args.data}, seed {args.seed}")
    print(f"{'pruner':<10} {'epochs':>7} {'wall s':>8} {'best val IoU':>13}")
    for pruner, (epochs, wall, best) in results.items():
        print(f"{pruner:<10} {epochs:>7} {wall:>8.0f} {best:>13.4f}")
    (pe, pw, pb), (ne, nw, nb) = results[default_pruner], results["none"]
    print(
        f"epochs saved by {default_pruner}: {1 - pe / ne:.0%} (target >= 40%); wall time ratio {pw / nw:.2f}"
    )
    print(f"best IoU difference: {pb - nb:+.4f} (target within 0.01)")


if __name__ == "__main__":
    main()
