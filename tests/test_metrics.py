import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, jaccard_score

from harness.metrics import (
    Scores,
    confusion_matrix,
    foreground_iou,
    mean_iou,
    paired_bootstrap,
    per_image_iou,
    pixel_accuracy,
)


@pytest.mark.parametrize("seed", range(5))
def test_scores_match_scikit_learn_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    truth = rng.random((4, 16, 16)) < rng.uniform(0.1, 0.9)
    pred = rng.random((4, 16, 16)) < rng.uniform(0.1, 0.9)

    # accumulate over batches, as the trainer does
    cm = sum(
        confusion_matrix(torch.from_numpy(p), torch.from_numpy(t)) for p, t in zip(pred, truth)
    )

    y_true, y_pred = truth.ravel(), pred.ravel()
    assert pixel_accuracy(cm) == pytest.approx(accuracy_score(y_true, y_pred))
    assert mean_iou(cm) == pytest.approx(jaccard_score(y_true, y_pred, average="macro"))
    assert foreground_iou(cm) == pytest.approx(jaccard_score(y_true, y_pred, average="binary"))


def test_confusion_rows_are_truth_and_columns_prediction():
    truth = torch.tensor([1, 1, 1, 0])
    pred = torch.tensor([1, 0, 0, 0])
    assert confusion_matrix(pred, truth).tolist() == [[1, 0], [2, 1]]


def test_all_background_prediction_scores_half_mean_iou_at_best():
    truth = torch.zeros(100, dtype=torch.long)
    truth[:30] = 1
    scores = Scores.from_confusion(confusion_matrix(torch.zeros(100), truth))
    assert scores.accuracy == pytest.approx(0.7)
    assert scores.fg_iou == 0.0
    assert scores.iou == pytest.approx(0.35)


def test_perfect_prediction_scores_one():
    truth = torch.tensor([0, 1, 1, 0])
    scores = Scores.from_confusion(confusion_matrix(truth, truth))
    assert (scores.accuracy, scores.iou, scores.fg_iou) == (1.0, 1.0, 1.0)


def test_per_image_iou_scores_each_image_alone():
    target = np.zeros((3, 2, 2), np.uint8)
    target[0, 0] = 1  # top row foreground
    pred = target.copy()
    pred[1, 0, 0] = 1  # one false positive on an empty image
    # image 0 perfect; image 1: fg 0/1, bg 3/4; image 2: nothing to find, nothing found
    np.testing.assert_allclose(per_image_iou(pred, target), [1.0, 0.375, 1.0])


def test_paired_bootstrap_interval_brackets_noise_and_clears_a_real_difference():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.9, 200)
    noise = paired_bootstrap(base + rng.normal(0, 0.05, 200), base)
    assert noise.low < 0 < noise.high and noise.level == 0.9
    better = base + 0.02 + rng.normal(0, 0.05, 200)
    shifted = paired_bootstrap(better, base)
    assert 0 < shifted.low < 0.02 < shifted.high
    assert paired_bootstrap(better, base) == shifted  # seeded: one decision for one set of scores
