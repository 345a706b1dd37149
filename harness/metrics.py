"""Segmentation scores from an accumulated 2x2 confusion matrix (background = 0, foreground = 1).

Scores are dataset-level: the confusion matrix is summed over every pixel of every batch
first, and the ratios are taken once at the end (not averaged per image).
"""

from dataclasses import dataclass

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
