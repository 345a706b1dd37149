"""The species classifier on encoder features, and its scores: pure functions of arrays."""

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from harness.data import SPECIES
from harness.names import species_metric

# Inverse regularisation strengths tried; the one with the best validation balanced accuracy
# is kept. Strong regularisation matters: a few hundred images, hundreds of features.
C_GRID = (0.0001, 0.001, 0.01, 0.1, 1.0)


@dataclass(frozen=True)
class SpeciesScores:
    accuracy: float
    balanced_accuracy: float  # mean of the per-class accuracies of the classes present
    per_class: dict[str, float]  # class name -> accuracy (recall) on that class
    confusion: np.ndarray  # rows = true class, columns = predicted, in SPECIES order

    def metrics(self, split: str) -> dict[str, float]:
        return {
            species_metric(split, "accuracy"): self.accuracy,
            species_metric(split, "balanced_accuracy"): self.balanced_accuracy,
            **{species_metric(split, "accuracy", name): v for name, v in self.per_class.items()},
        }


def fit_classifier(
    train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray
) -> tuple[Pipeline, float]:
    """Standardised logistic regression with balanced class weights, fitted on the training
    split; C is the one of C_GRID with the best validation balanced accuracy."""
    best = None
    for c in C_GRID:
        classifier = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, class_weight="balanced", max_iter=5000),
        ).fit(train_x, train_y)
        score = species_scores(val_y, classifier.predict(val_x)).balanced_accuracy
        if best is None or score > best[0]:
            best = (score, c, classifier)
    return best[2], best[1]


def species_scores(truth: np.ndarray, predicted: np.ndarray) -> SpeciesScores:
    cm = confusion_matrix(truth, predicted, labels=list(range(len(SPECIES))))
    per_class = {
        name: float(cm[k, k] / cm[k].sum()) for k, name in enumerate(SPECIES) if cm[k].sum()
    }
    return SpeciesScores(
        accuracy=float(np.trace(cm) / cm.sum()),
        balanced_accuracy=float(np.mean(list(per_class.values()))),
        per_class=per_class,
        confusion=cm,
    )
