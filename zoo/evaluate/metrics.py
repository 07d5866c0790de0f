"""Classification metrics, from scikit-learn where it has them."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from ensembles import EPS
from zoo.evaluate.calibration import expected_calibration_error


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, NLL, ECE, per-class scores and the confusion matrix.

    Classes absent from ``y_true`` are still columns of ``probs``; macro averages run over the
    classes present so that an external test set without some class is scored fairly.
    """
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(1)
    present = sorted(set(y_true.tolist()))
    prec, rec, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    clipped = np.clip(probs, EPS, 1.0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "nll": float(log_loss(y_true, clipped / clipped.sum(1, keepdims=True), labels=labels)),
        "ece": float(expected_calibration_error(y_true, probs)),
        "n": int(len(y_true)),
        "per_class": {c: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for c, p, r, f, s in zip(classes, prec, rec, f1, support)},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }
