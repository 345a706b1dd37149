"""`python -m harness.train`: one training run of the shared trainer, tracked in MLflow."""

import dataclasses
import sys
from dataclasses import dataclass

from harness.cli import (
    cache_dir_option,
    compile_option,
    data_option,
    device_option,
    image_size_option,
    option,
    options_from,
    parser_for,
    positive_int,
    precision_option,
    probability,
    run_main,
    tracking_uri_option,
)
from harness.data import DEFAULT_SPEC, load_splits
from harness.devices import resolve_device
from harness.names import TRAIN_EXPERIMENT, Role, Tag
from harness.runs import log_evaluation, train_tracked
from harness.tracking import Tracker, check_reachable
from harness.trainer import LR_SCHEDULES, TrainConfig

DEFAULTS = TrainConfig()
DATA, MODEL, TRACKING = "data", "model and training", "tracking"  # the help's groups


@dataclass(frozen=True)
class TrainOptions:
    data: str = data_option(DEFAULT_SPEC, group=DATA)
    image_size: int = image_size_option(64, "images are resized to this square size", group=DATA)
    cache_dir: str | None = cache_dir_option(group=DATA)
    # TrainConfig's fields, by the same names
    depth: int = option(
        "--depth",
        type=int,
        default=DEFAULTS.depth,
        group=MODEL,
        help="UNet resolution levels, 2 to 6",
    )
    base_channels: int = option(
        "--base-channels",
        type=positive_int,
        default=DEFAULTS.base_channels,
        group=MODEL,
        help="channels of the first level; doubles per level",
    )
    lr: float = option(
        "--lr", type=float, default=DEFAULTS.lr, group=MODEL, help="Adam learning rate"
    )
    batch_size: int = option(
        "--batch-size", type=positive_int, default=DEFAULTS.batch_size, group=MODEL
    )
    patience: int = option(
        "--patience",
        type=positive_int,
        default=DEFAULTS.patience,
        group=MODEL,
        help="early stopping: epochs without a better validation IoU",
    )
    aug_p: float = option(
        "--aug-p",
        type=probability,
        default=DEFAULTS.aug_p,
        group=MODEL,
        help="probability of each augmentation; 0 turns augmentation off",
    )
    max_epochs: int = option(
        "--max-epochs", type=positive_int, default=DEFAULTS.max_epochs, group=MODEL
    )
    lr_schedule: str = option(
        "--lr-schedule",
        default=DEFAULTS.lr_schedule,
        choices=LR_SCHEDULES,
        group=MODEL,
        help="constant, or cosine: annealed towards 0 at --max-epochs",
    )
    seed: int = option(
        "--seed",
        type=int,
        default=DEFAULTS.seed,
        group=MODEL,
        help="seeds weights, batch order and augmentation",
    )
    device: str = device_option(group=MODEL)
    precision: str = precision_option(group=MODEL)
    compile_model: bool = compile_option(group=MODEL)
    tracking_uri: str = tracking_uri_option(group=TRACKING)
    experiment: str = option(
        "--experiment", default=TRAIN_EXPERIMENT, group=TRACKING, help="MLflow experiment name"
    )
    run_name: str | None = option(
        "--run-name", group=TRACKING, help="MLflow run name (default: derived from the params)"
    )

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        )


def build_parser():
    return parser_for(
        "python -m harness.train",
        "Train one UNet with the shared trainer and record it as one MLflow run.",
        TrainOptions,
    )


def main(argv: list[str] | None = None) -> int:
    args = options_from(TrainOptions, build_parser().parse_args(argv))
    config = args.config
    device = resolve_device(args.device)
    # Everything the user can get wrong is checked before a run exists.
    check_reachable(args.tracking_uri)
    splits = load_splits(args.data, args.image_size, cache_dir=args.cache_dir)
    tracker = Tracker(args.tracking_uri)
    experiment_id = tracker.experiment_id(args.experiment)
    name = args.run_name or f"unet-d{config.depth}-lr{config.lr:g}-bs{config.batch_size}"
    run_id = tracker.start_run(experiment_id, name, tags={Tag.ROLE: Role.TRAIN})
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
            compile_model=args.compile_model,
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
