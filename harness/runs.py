"""One tracked training: the shared trainer wired to an MLflow run.

Used by `harness.train` (one run) and `harness.search` (one child run per trial).
"""

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from harness.data import SegmentationSet, Splits
from harness.figures import style, training
from harness.metrics import Scores, per_image_iou
from harness.names import FigureName, Param, Tag, predictions_figure
from harness.tracking import Tracker, epoch_metrics, fit_metrics, split_metrics
from harness.trainer import (
    EpochHook,
    FitResult,
    TrainConfig,
    autocast_dtype,
    build_model,
    evaluate,
    fit,
    predict_masks,
)

PREVIEW_SAMPLES = 6


def run_params(
    config: TrainConfig, splits: Splits, dtype: torch.dtype | None, compiled: bool = False
) -> dict[str, object]:
    return {
        **asdict(config),
        Param.IMAGE_SIZE: splits.image_size,
        Param.DATASET: splits.spec,
        Param.PRECISION: str(dtype or torch.float32).removeprefix("torch."),
        Param.COMPILED: compiled,
    }


def train_tracked(
    tracker: Tracker,
    run_id: str,
    config: TrainConfig,
    splits: Splits,
    device: torch.device,
    hooks: Sequence[EpochHook] = (),
    precision: str = "auto",
    compile_model: bool = False,
    refit: bool = False,
) -> FitResult:
    """Fit with per-epoch metrics (step = epoch) logged before the other `hooks` run.

    `refit` trains on train + validation for `config.max_epochs` epochs, with nothing held out
    to select on (see trainer.fit).
    """
    tracker.log(
        run_id,
        params=run_params(config, splits, autocast_dtype(precision, device), compile_model),
        tags={Tag.DATASET_FINGERPRINT: splits.fingerprint},
    )
    tracker.log_dataset_inputs(run_id, splits)

    def log_epoch(result) -> None:
        tracker.log(run_id, epoch_metrics(result), step=result.epoch)

    train, val = (
        (concatenate(splits.train, splits.val), None) if refit else (splits.train, splits.val)
    )
    result = fit(
        config,
        train,
        val,
        device=device,
        on_epoch=[log_epoch, *hooks],
        precision=precision,
        compile_model=compile_model,
    )
    tracker.log(run_id, fit_metrics(result), tags={Tag.STOP_REASON: result.stop_reason})
    tracker.log_checkpoint(run_id, result.model)
    figure = training.learning_curves(result.history)
    tracker.log_figure(run_id, figure, FigureName.LEARNING_CURVES)
    style.close(figure)
    return result


def concatenate(*sets: SegmentationSet) -> SegmentationSet:
    return SegmentationSet(
        images=np.concatenate([s.images for s in sets]),
        masks=np.concatenate([s.masks for s in sets]),
        species=np.concatenate([s.species for s in sets]),
        names=tuple(name for s in sets for name in s.names),
    )


def load_run_model(tracker: Tracker, run_id: str, device: torch.device) -> torch.nn.Module:
    """The UNet a run trained: its params and its checkpoint (read with weights_only=True)."""
    run = tracker.client.get_run(run_id)
    depth = int(run.data.params[Param.DEPTH])
    base_channels = int(run.data.params[Param.BASE_CHANNELS])
    return tracker.load_checkpoint_into(run_id, build_model(depth, base_channels, device))


def run_dtype(run) -> torch.dtype | None:
    """The autocast dtype a run trained under (its `precision` param; None for float32)."""
    name = run.data.params.get(Param.PRECISION, "float32")
    return None if name == "float32" else getattr(torch, name)


def evaluate_splits(
    model: torch.nn.Module,
    splits: Splits,
    device: torch.device,
    dtype: torch.dtype | None = None,
    names=("train", "val", "test"),
) -> dict[str, Scores]:
    """The report's table: scores of the restored weights on whole, unaugmented splits, under
    the training's autocast `dtype` so that the validation IoU is the best epoch's own."""
    return {name: evaluate(model, getattr(splits, name), device, dtype=dtype)[1] for name in names}


def log_evaluation(
    tracker: Tracker,
    run_id: str,
    model: torch.nn.Module,
    splits: Splits,
    device: torch.device,
    names=("train", "val", "test"),
) -> dict[str, Scores]:
    """Score the final model on the splits `names` and log the table, each test image's score
    and a preview grid (validation images, or test images for a model trained on them)."""
    scores = evaluate_splits(
        model, splits, device, run_dtype(tracker.client.get_run(run_id)), names
    )
    tracker.log(run_id, split_metrics(scores))
    test = splits.test
    tracker.log_per_image(
        run_id, test.names, per_image_iou(predict_masks(model, test.images, device), test.masks)
    )
    shown = "val" if "val" in names else "test"
    images = getattr(splits, shown)
    preview = images.subset(np.arange(min(PREVIEW_SAMPLES, len(images))))
    figure = training.prediction_grid(
        preview.images, preview.masks, predict_masks(model, preview.images, device), preview.names
    )
    tracker.log_figure(run_id, figure, predictions_figure(shown))
    style.close(figure)
    return scores
