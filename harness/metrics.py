"""Segmentation scores from an accumulated 2x2 confusion matrix (background = 0, foreground = 1).

Scores are dataset-level: the confusion matrix is summed over every pixel of every batch
first, and the ratios are taken once at the end (not averaged per image).
"""

from dataclasses import dataclass

import numpy as np
import torch

NUM_CLASSES = 2


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Counts (int64, 2x2) with rows = true class, columns = predicted class; stays on the device."""
    index = target.reshape(-1).long() * NUM_CLASSES + pred.reshape(-1).long()
    return torch.bincount(index, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def pixel_accuracy(cm: torch.Tensor) -> float:
    total = cm.sum()
    return float(cm.diagonal().sum() / total) if total else 0.0


def class_iou(cm: torch.Tensor) -> torch.Tensor:
    """IoU per class; a class absent from both truth and prediction scores 1 (nothing to get wrong)."""
    cm = cm.double()
    intersection = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def mean_iou(cm: torch.Tensor) -> float:
    return float(class_iou(cm).mean())


def foreground_iou(cm: torch.Tensor) -> float:
    return float(class_iou(cm)[1])


@dataclass(frozen=True)
class Scores:
    accuracy: float
    iou: float  # mean over background and foreground
    fg_iou: float  # foreground only

    @classmethod
    def from_confusion(cls, cm: torch.Tensor) -> "Scores":
        cm = cm.cpu()
        return cls(pixel_accuracy(cm), mean_iou(cm), foreground_iou(cm))


def per_image_iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Mean IoU of each image on its own: (N, H, W) 0/1 masks -> float64 (N,).

    The registry compares models image by image with these (a paired bootstrap); the
    dataset-level `Scores` stay the reported figures.
    """
    pred = pred.reshape(len(pred), -1).astype(bool)
    target = target.reshape(len(target), -1).astype(bool)
    ious = []
    for p, t in ((pred, target), (~pred, ~target)):  # foreground, background
        intersection = (p & t).sum(axis=1)
        union = (p | t).sum(axis=1)
        # a class absent from both truth and prediction scores 1, as in class_iou
        ious.append(np.where(union > 0, intersection / np.maximum(union, 1), 1.0))
    return (ious[0] + ious[1]) / 2


@dataclass(frozen=True)
class PairedDifference:
    """Mean of `a - b` over paired samples, with a bootstrap interval."""

    mean: float
    low: float
    high: float
    level: float


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, level: float = 0.9, resamples: int = 2000, seed: int = 0
) -> PairedDifference:
    """Percentile bootstrap of the mean paired difference `a - b` (resampling the pairs).

    Seeded, so the same scores always give the same interval and the same decision.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError("paired_bootstrap needs two equally long, non-empty score vectors")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(float(diff.mean()), float(low), float(high), level)
