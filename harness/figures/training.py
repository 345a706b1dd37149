"""Figures logged with runs: learning curves and prediction grids."""

import numpy as np
from matplotlib.figure import Figure

from harness.figures.style import integer_ticks, plt


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
