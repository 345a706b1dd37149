"""`python -m harness.train`: one training run of the shared trainer, tracked in MLflow."""

import argparse
import sys

from harness.cli import add_compute_flags, add_data_flags, positive_int, probability, run_main
from harness.data import DEFAULT_SPEC, load_splits
from harness.devices import resolve_device
from harness.names import Tag
from harness.runs import log_evaluation, train_tracked
from harness.tracking import DEFAULT_TRACKING_URI, Tracker, check_reachable
from harness.trainer import TrainConfig

DEFAULTS = TrainConfig()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness.train",
        description="Train one UNet with the shared trainer and record it as one MLflow run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_flags(
        parser.add_argument_group("data"),
        default=DEFAULT_SPEC,
        image_size_default=64,
        image_size_help="images are resized to this square size",
    )
    model = parser.add_argument_group("model and training")
    model.add_argument(
        "--depth", type=int, default=DEFAULTS.depth, help="UNet resolution levels, 2 to 6"
    )
    model.add_argument(
        "--base-channels",
        type=positive_int,
        default=DEFAULTS.base_channels,
        help="channels of the first level; doubles per level",
    )
    model.add_argument("--lr", type=float, default=DEFAULTS.lr, help="Adam learning rate")
    model.add_argument("--batch-size", type=positive_int, default=DEFAULTS.batch_size)
    model.add_argument(
        "--patience",
        type=positive_int,
        default=DEFAULTS.patience,
        help="early stopping: epochs without a better validation IoU",
    )
    model.add_argument(
        "--aug-p",
        type=probability,
        default=DEFAULTS.aug_p,
        help="probability of each augmentation; 0 turns augmentation off",
    )
    model.add_argument("--max-epochs", type=positive_int, default=DEFAULTS.max_epochs)
    model.add_argument(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        help="seeds weights, batch order and augmentation",
    )
    add_compute_flags(model)
    tracking = parser.add_argument_group("tracking")
    tracking.add_argument(
        "--tracking-uri",
        default=DEFAULT_TRACKING_URI,
        help="MLflow tracking URI: a database URL or an http(s) server",
    )
    tracking.add_argument("--experiment", default="harness-train", help="MLflow experiment name")
    tracking.add_argument(
        "--run-name", default=None, help="MLflow run name (default: derived from the params)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = TrainConfig(
        depth=args.depth,
        base_channels=args.base_channels,
        lr=args.lr,
        batch_size=args.batch_size,
        patience=args.patience,
        aug_p=args.aug_p,
        max_epochs=args.max_epochs,
        seed=args.seed,
    )
    device = resolve_device(args.device)
    # Everything the user can get wrong is checked before a run exists.
    check_reachable(args.tracking_uri)
    splits = load_splits(args.data, args.image_size, cache_dir=args.cache_dir)
    tracker = Tracker(args.tracking_uri)
    experiment_id = tracker.experiment_id(args.experiment)
    name = args.run_name or f"unet-d{config.depth}-lr{config.lr:g}-bs{config.batch_size}"
    run_id = tracker.start_run(experiment_id, name, tags={Tag.ROLE: "train"})
    tracker.adopt_project_run(run_id)
    print(f"run {run_id} in experiment {args.experiment!r} ({args.tracking_uri})")
    print(
        f"data {splits.spec}: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test at {splits.image_size}px"
    )
    with tracker.run_status(run_id):
        result = train_tracked(
            tracker,
            run_id,
            config,
            splits,
            device,
            hooks=[print_epoch],
            precision=args.precision,
            compile_model=args.compile,
        )
        scores = log_evaluation(tracker, run_id, result.model, splits, device)
    print(f"stopped: {result.stop_reason}; best epoch {result.best_epoch} of {result.epochs_run}")
    print(f"{'split':<6} {'accuracy':>9} {'mean IoU':>9} {'fg IoU':>8}")
    for split, s in scores.items():
        print(f"{split:<6} {s.accuracy:>9.4f} {s.iou:>9.4f} {s.fg_iou:>8.4f}")
    return 0


def print_epoch(result) -> None:
    print(
        f"epoch {result.epoch:>3}  train loss {result.train_loss:.4f}  val loss {result.val_loss:.4f}  "
        f"val IoU {result.val.iou:.4f}  val acc {result.val.accuracy:.4f}  {result.epoch_time_s:.1f}s",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(run_main(main))
