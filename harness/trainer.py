"""The one trainer every run and every trial uses: BCE with logits, Adam, early stopping.

`fit` builds the model from the config (so the seed covers weight initialisation), trains
epoch by epoch, calls the `on_epoch` hooks after each epoch (tracking logs, Optuna pruning;
a hook may raise to stop the run) and returns the model with its best weights restored.
"""

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from harness.augment import augment_batch, build_augmentation
from harness.data import SegmentationSet, take
from harness.devices import resolve_device
from harness.errors import HarnessError
from harness.metrics import Scores, confusion_matrix
from harness.models import MAX_DEPTH, MIN_DEPTH, UNet
from harness.stopping import interruptible

# A constant 0.5 prediction scores ln 2 = 0.69; a mean BCE this high means the weights blew up
# (with BatchNorm the training loss may recover while the running statistics stay wrecked).
DIVERGED_LOSS = 100.0
# constant: Adam's lr throughout; cosine: annealed from lr towards 0 at max_epochs, so that a
# fixed-length training (a refit, with no epoch to select) ends on weights that have settled
LR_SCHEDULES = ("constant", "cosine")
EVAL_BATCH_SIZE = 64  # at 64x64; larger images get proportionally fewer per batch
EVAL_BATCH_PIXELS = EVAL_BATCH_SIZE * 64 * 64


def eval_batch_size(images: np.ndarray) -> int:
    """Images per inference batch: a constant number of pixels, so that evaluating 256x256
    images holds no more activations than evaluating 64x64 ones."""
    return max(1, EVAL_BATCH_PIXELS // (images.shape[1] * images.shape[2]))


class DivergedError(HarnessError):
    """The training loss became NaN, infinite or exploded."""


@dataclass(frozen=True)
class TrainConfig:
    depth: int = 3
    base_channels: int = 16
    lr: float = 1e-3
    batch_size: int = 16
    patience: int = 3
    aug_p: float = 0.2
    max_epochs: int = 20
    seed: int = 0
    lr_schedule: str = "constant"

    def __post_init__(self):
        checks = {
            "depth": MIN_DEPTH <= self.depth <= MAX_DEPTH,
            "base_channels": self.base_channels >= 1,
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "patience": self.patience >= 1,
            "aug_p": 0.0 <= self.aug_p <= 1.0,
            "max_epochs": self.max_epochs >= 1,
            "lr_schedule": self.lr_schedule in LR_SCHEDULES,
        }
        for name, ok in checks.items():
            if not ok:
                raise HarnessError(f"invalid {name}: {getattr(self, name)!r}")


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    train: Scores  # on the augmented training batches, as seen during the epoch
    val: Scores | None  # None when fitting without a validation split (a refit)
    epoch_time_s: float


class StopReason:
    EARLY_STOPPED = "early_stopped"
    MAX_EPOCHS = "max_epochs"


@dataclass
class FitResult:
    model: UNet  # best weights restored
    best_epoch: int
    best_val_iou: float  # nan for a fit without a validation split
    stop_reason: str
    train_time_s: float
    history: list[EpochResult] = field(default_factory=list)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


EpochHook = Callable[[EpochResult], None]


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for `precision` on `device`; None means plain float32.

    `auto` picks bfloat16 where the hardware does it natively (faster at the same IoU, see
    docs/performance.md) and float32 where it would be emulated.
    """
    if precision not in PRECISIONS:
        raise HarnessError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def build_model(depth: int, base_channels: int, device: torch.device) -> UNet:
    # channels_last is measurably faster for these convolutions on CPU and on recent GPUs
    return UNet(depth, base_channels).to(device, memory_format=torch.channels_last)


def to_device(array: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """A host batch on `device`; to a GPU from pinned memory, so the copy does not block."""
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def to_input(images: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) in [0, 1], channels_last, on `device`."""
    images = to_device(images, device).permute(0, 3, 1, 2)
    return images.float().div_(255).contiguous(memory_format=torch.channels_last)


def to_target(masks: torch.Tensor | np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W) in {0, 1} -> float (B, 1, H, W)."""
    return to_device(masks, device).unsqueeze(1).float()


@interruptible
@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: SegmentationSet,
    device: torch.device,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[float, Scores]:
    """Mean BCE loss and scores of `model` on `data`, unaugmented (autocast to `dtype`)."""
    model.eval()
    batch_size = batch_size or eval_batch_size(data.images)
    cm = torch.zeros(2, 2, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(data), batch_size):
        images, masks = data.batch(slice(start, start + batch_size))
        x, y = to_input(images, device), to_target(masks, device)
        with autocast(dtype, device):
            logits = model(x).float()
        loss_sum += nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
        cm += confusion_matrix(logits > 0, y)
    pixels = data.masks.size
    return float(loss_sum) / pixels, Scores.from_confusion(cm)


def inference_batches(images: np.ndarray) -> Iterator[np.ndarray]:
    """Consecutive batches of `images` sized by eval_batch_size, each an in-memory copy."""
    batch_size = eval_batch_size(images)
    for start in range(0, len(images), batch_size):
        yield take(images, slice(start, start + batch_size))


@interruptible
def predict_masks(model: nn.Module, images: np.ndarray, device: torch.device) -> np.ndarray:
    """uint8 (N, H, W, 3) -> uint8 (N, H, W) masks in {0, 1}."""
    model.eval()
    out = []
    with torch.inference_mode():
        for batch in inference_batches(images):
            logits = model(to_input(batch, device))
            out.append((logits[:, 0] > 0).to(torch.uint8).cpu().numpy())
    return np.concatenate(out)


@interruptible
def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: SegmentationSet,
    config: TrainConfig,
    augmentation,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler,
) -> tuple[float, Scores]:
    model.train()
    order = torch.randperm(len(data), generator=generator).numpy()
    cm = torch.zeros(2, 2, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(order), config.batch_size):
        index = order[start : start + config.batch_size]
        images, masks = augment_batch(augmentation, *data.batch(index))
        x, y = to_input(images, device), to_target(masks, device)
        with autocast(dtype, device):
            logits = model(x).float()  # the loss in float32 whatever the autocast dtype
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach() * len(index)
        cm += confusion_matrix(logits.detach() > 0, y)
    return float(loss_sum) / len(data), Scores.from_confusion(cm)


def fit(
    config: TrainConfig,
    train: SegmentationSet,
    val: SegmentationSet | None,
    *,
    device: torch.device | None = None,
    on_epoch: Sequence[EpochHook] = (),
    precision: str = "auto",
    compile_model: bool = False,
) -> FitResult:
    """Train a UNet; stop after `patience` epochs without a better validation IoU.

    Without a validation split (`val=None`, a refit on train + validation) it trains for
    `max_epochs` and keeps the last epoch's weights: there is nothing to select on.
    `compile_model` runs the steps through torch.compile: it costs a compilation before the
    first step, repaid only by long trainings (docs/performance.md has the break-even).
    """
    device = device or resolve_device()
    dtype = autocast_dtype(precision, device)
    # only float16 has too little range for small gradients; bfloat16 and float32 need no scaling
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    torch.manual_seed(config.seed)
    model = build_model(config.depth, config.base_channels, device)
    # the compiled module shares the parameters; `model` stays the plain one to save and restore
    step_model = torch.compile(model) if compile_model else model
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
        if config.lr_schedule == "cosine"
        else None
    )
    augmentation = build_augmentation(config.aug_p, seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)

    best_iou, best_epoch, best_state = -math.inf, 0, None
    history: list[EpochResult] = []
    stop_reason = StopReason.MAX_EPOCHS
    started = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        epoch_start = time.perf_counter()
        train_loss, train_scores = train_one_epoch(
            step_model, optimizer, train, config, augmentation, generator, device, dtype, scaler
        )
        if schedule is not None:
            schedule.step()
        val_loss, val_scores = math.nan, None
        if val is not None:
            val_loss, val_scores = evaluate(step_model, val, device, dtype=dtype)
        for split, loss in (("train", train_loss), ("validation", val_loss)):
            if split == "validation" and val is None:
                continue
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                raise DivergedError(f"training diverged at epoch {epoch}: {split} loss {loss:.4g}")
        result = EpochResult(
            epoch, train_loss, val_loss, train_scores, val_scores, time.perf_counter() - epoch_start
        )
        history.append(result)
        if val_scores is None:
            best_epoch = epoch  # the last epoch's weights are the model
        elif val_scores.iou > best_iou:
            best_iou, best_epoch = val_scores.iou, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for hook in on_epoch:
            hook(result)
        if val is not None and epoch - best_epoch >= config.patience:
            stop_reason = StopReason.EARLY_STOPPED
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(
        model=model,
        best_epoch=best_epoch,
        best_val_iou=best_iou if val is not None else math.nan,
        stop_reason=stop_reason,
        train_time_s=time.perf_counter() - started,
        history=history,
    )
