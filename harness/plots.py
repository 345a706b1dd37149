"""Figures logged with runs: learning curves and prediction grids (matplotlib, no display)."""

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

# Log axes get ticks at these multiples of each power of ten while the range spans at most
# this many decades, and at powers of ten alone beyond it.
LOG_SUBS = (1.0, 2.0, 5.0)
LOG_SUBS_MAX_DECADES = 2.5


def integer_ticks(axis) -> None:
    """Whole-number ticks on an axis of epochs, trials or another count."""
    axis.set_major_locator(MaxNLocator(integer=True))


def readable_log_ticks(figure: Figure) -> None:
    """Plain-number labels (0.005, 0.01, 0.02) at a few ticks on every log-scaled axis.

    On a range shorter than a decade or two, matplotlib labels the minor ticks too, as
    2x10^-2, 3x10^-2, ..., and at a figure's normal size those labels overprint.
    """
    for ax in figure.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            low, high = sorted(axis.get_view_interval())
            decades = np.log10(high / low) if low > 0 else np.inf
            subs = LOG_SUBS if decades <= LOG_SUBS_MAX_DECADES else (1.0,)
            axis.set_major_locator(LogLocator(subs=subs))
            axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.set_minor_formatter(NullFormatter())


def learning_curves(history) -> Figure:
    """Loss and mean IoU per epoch, train against validation, from `trainer.EpochResult`s."""
    epochs = [r.epoch for r in history]
    fig, (loss_ax, iou_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r.train_loss for r in history], "o-", label="train")
    iou_ax.plot(epochs, [r.train.iou for r in history], "o-", label="train")
    if all(r.val is not None for r in history):  # a refit has no validation split
        loss_ax.plot(epochs, [r.val_loss for r in history], "o-", label="validation")
        iou_ax.plot(epochs, [r.val.iou for r in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="BCE loss", title="Loss")
    iou_ax.set(xlabel="epoch", ylabel="mean IoU", title="Mean IoU")
    for ax in (loss_ax, iou_ax):
        ax.grid(alpha=0.3)
        ax.legend()
        integer_ticks(ax.xaxis)
    fig.tight_layout()
    return fig


def prediction_grid(
    images: np.ndarray, truths: np.ndarray, predictions: np.ndarray, titles=None
) -> Figure:
    """One row per sample: image, true mask, predicted mask."""
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(6, 2 * rows), squeeze=False)
    for row in range(rows):
        label = f" ({titles[row]})" if titles is not None else ""
        panels = [
            (images[row], f"image{label}"),
            (truths[row], "truth"),
            (predictions[row], "prediction"),
        ]
        for ax, (picture, title) in zip(axes[row], panels):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1 if picture.ndim == 2 else None)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
