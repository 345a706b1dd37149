"""What the search-efficiency target is up against: learning curves, seed noise and pruning.

    python bench/learning_curves.py [--configs 40] [--repeats 3] [--seed 0] [--jobs 2]
                                    [--data synthetic] [--out docs] [--from-json FILE]
                                    [--permutations 400]

Trains `--configs` configurations drawn from the default space by the random sampler (as the
first trials of a search are) for the full `max_epochs`, early stopping off, and records the
validation IoU of every epoch; then trains the best three again with `--repeats` other
seeds. Prints:
- how well the IoU after k epochs ranks the configurations by their final value (Spearman),
  which is what a pruner bets on at its rungs;
- how much one configuration's value moves with the training seed, against the 0.01 tolerance
  of the target;
- replayed searches: the recorded curves in `--permutations` random orders, each run through
  a real Optuna study with each pruner (early stopping applied from each trial's patience),
  and the epochs each needs to reach within 0.01 of the best value in the table.
Writes the curves to `learning_curves.json` in --out; `--from-json` replays them again.
"""

import argparse
import dataclasses
import json
import multiprocessing
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import optuna
import torch
from common import machine
from scipy.stats import spearmanr
from search_efficiency import TOLERANCE  # --tolerance replays with another

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.search.spaces import load_space
from harness.search.studies import make_pruner, make_sampler
from harness.trainer import fit

# pruner settings replayed: (name, pruner, warm-up epochs, what a trial reports each epoch:
# its best epoch so far, as the harness does, or the latest epoch's IoU, as it did before)
PRUNERS = [
    ("none", "none", 0, "best"),
    ("asha", "asha", 0, "best"),
    ("asha-w1", "asha", 1, "best"),
    ("asha-latest", "asha", 0, "latest"),
    ("asha-w1-latest", "asha", 1, "latest"),
    ("asha-w2-latest", "asha", 2, "latest"),
    ("median", "median", 0, "best"),
    ("median-latest", "median", 0, "latest"),
    ("median-w1-latest", "median", 1, "latest"),
    ("hyperband", "hyperband", 0, "best"),
    ("hyperband-latest", "hyperband", 0, "latest"),
]


def draw_configs(space_name: str, count: int, seed: int) -> list[dict]:
    """The parameters of a random search's first `count` trials."""
    space = load_space(space_name)
    study = optuna.create_study(
        sampler=make_sampler(dataclasses.replace(space.study, sampler="random"), seed)
    )
    configs = []
    for _ in range(count):
        trial = study.ask()
        space.suggest(trial, seed=seed, max_epochs=space.study.max_epochs)
        configs.append(trial.params)
        study.tell(trial, 0.0)
    return configs


def curve(args: argparse.Namespace, params: dict, seed: int) -> list[float]:
    """Validation IoU after each epoch, early stopping off."""
    torch.set_num_threads(1)
    quiet_libraries()
    space = load_space(args.space)
    splits = load_splits(args.data, space.study.image_size)
    max_epochs = space.study.epochs(len(splits.train))
    config = space.suggest(optuna.trial.FixedTrial(params), seed=seed, max_epochs=max_epochs)
    config = dataclasses.replace(config, patience=max_epochs)
    result = fit(config, splits.train, splits.val, device=torch.device("cpu"))
    return [epoch.val.iou for epoch in result.history]


def train_all(args: argparse.Namespace) -> dict:
    space = load_space(args.space)
    load_splits(args.data, space.study.image_size)  # fill the cache before the workers read it
    configs = draw_configs(args.space, args.configs, args.seed)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
        # the training seed a search would give trial i
        curves = list(
            pool.map(curve, [args] * len(configs), configs,
                     [args.seed + i for i in range(len(configs))])
        )  # fmt: skip
        finals = [max(c) for c in curves]
        top = sorted(range(len(configs)), key=finals.__getitem__, reverse=True)[:3]
        jobs = [(i, 1000 + 100 * r + i) for i in top for r in range(args.repeats)]
        repeats = list(pool.map(curve, [args] * len(jobs), [configs[i] for i, _ in jobs],
                                [s for _, s in jobs]))  # fmt: skip
    return {
        "machine": machine(),
        "space": args.space,
        "data": args.data,
        "configs": configs,
        "curves": curves,
        "repeats": [{"config": i, "seed": s, "curve": c} for (i, s), c in zip(jobs, repeats)],
    }


def stopped(curve: list[float], patience: int) -> list[float]:
    """The part of `curve` the trainer would run before early stopping with `patience`."""
    best, best_epoch = -np.inf, 0
    for epoch, value in enumerate(curve, start=1):
        if value > best:
            best, best_epoch = value, epoch
        if epoch - best_epoch >= patience:
            return curve[:epoch]
    return curve


def replay(configs, curves, order, settings, reports, threshold, train_images) -> int | None:
    """Epochs a search over `order` spends until a completed trial reaches `threshold`."""
    pruner = make_pruner(settings.pruner, settings, len(curves[0]), train_images)
    # Hyperband picks each trial's bracket from a hash of the study name: fixed, so that
    # replays repeat
    study = optuna.create_study(study_name="replay", direction=settings.direction, pruner=pruner)
    spent = 0
    for index in order:
        trial = study.ask()
        ran = stopped(curves[index], configs[index]["patience"])
        pruned = False
        for epoch, value in enumerate(ran, start=1):
            spent += 1
            trial.report(value if reports == "latest" else max(ran[:epoch]), epoch)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, max(ran))
        if max(ran) >= threshold:
            return spent
    return None


def report(saved: dict, permutations: int, tolerance: float) -> None:
    configs, curves = saved["configs"], saved["curves"]
    max_epochs = len(curves[0])
    finals = np.array([max(stopped(c, p["patience"])) for c, p in zip(curves, configs)])
    print(f"{len(curves)} configurations, {max_epochs} epochs each, on {saved['data']}")
    print(f"value (best epoch, early stopping applied): max {finals.max():.4f}, "
          f"median {np.median(finals):.4f}, min {finals.min():.4f}")  # fmt: skip
    threshold = finals.max() - tolerance
    print(f"within {tolerance} of the best: {(finals >= threshold).sum()} of {len(finals)}")
    full = np.array([max(c) for c in curves])
    for k in range(1, max_epochs):
        at_k = [c[k - 1] for c in curves]
        rho = spearmanr(at_k, full).statistic
        best_at_k = np.argsort(at_k)[-len(at_k) // 3 :]
        kept = full[best_at_k].max()
        print(f"  IoU after epoch {k} ranks the final values with Spearman {rho:+.2f}; "
              f"its top third holds the best final {kept:.4f} (overall {full.max():.4f})")  # fmt: skip
    print("seed noise (best IoU of one configuration, other training seeds):")
    by_config: dict[int, list[float]] = {}
    for repeat in saved["repeats"]:
        by_config.setdefault(repeat["config"], []).append(max(repeat["curve"]))
    for index, values in by_config.items():
        values = [full[index], *values]
        print(f"  config {index} {configs[index]}: {' '.join(f'{v:.4f}' for v in values)}; "
              f"range {max(values) - min(values):.4f}, sd {statistics.stdev(values):.4f}")  # fmt: skip
    print(
        f"replayed searches ({permutations} orders of the table; epochs to reach {threshold:.4f}):"
    )
    rng = np.random.default_rng(0)
    orders = [rng.permutation(len(curves)) for _ in range(permutations)]
    baseline = None
    study_settings = load_space(saved["space"]).study
    # the rungs may be placed by images seen (`rung_images`), as in the search
    train_images = len(load_splits(saved["data"], study_settings.image_size).train)
    budget = sum(len(stopped(c, p["patience"])) for c, p in zip(curves, configs))
    for name, pruner, warmup, reports in PRUNERS:
        settings = dataclasses.replace(study_settings, pruner=pruner, pruner_warmup_epochs=warmup)
        spent = [
            replay(configs, curves, o, settings, reports, threshold, train_images) for o in orders
        ]
        mean = statistics.mean(s if s is not None else budget for s in spent)
        baseline = baseline or mean
        missed = sum(s is None for s in spent)
        print(f"  {name:<16} mean {mean:6.1f} epochs ({mean / baseline:.2f} of no pruning); "
              f"never got there in {missed} of {permutations} (charged every epoch)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--space", default="unet")
    parser.add_argument("--permutations", type=int, default=400)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE)
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--from-json", type=Path, help="replay saved curves, train nothing")
    args = parser.parse_args()
    quiet_libraries()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
    else:
        print(f"machine: {machine()}")
        saved = train_all(args)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "learning_curves.json").write_text(json.dumps(saved, indent=1))
    report(saved, args.permutations, args.tolerance)


if __name__ == "__main__":
    main()
