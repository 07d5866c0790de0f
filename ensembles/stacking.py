"""Stacking: a multinomial logistic regression on the members' log-probabilities.

Validation probabilities reported by ``val_proba`` are out-of-fold (each row predicted by a
meta-learner that never saw it); the final meta-learner is then fitted on all validation rows.
Prediction is computed here from the stored coefficients, so a JSON round trip is exact.
scikit-learn is imported only for fitting: registering the method (``zoo --help``) stays fast.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from zoo.errors import ZooError

from .base import EPS, EnsembleMethod, member_names

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

MAX_FOLDS = 5


def stack_features(probs: list[np.ndarray]) -> np.ndarray:
    """(N, M*C) matrix of concatenated log(clip(probs))."""
    return np.log(np.clip(np.concatenate(probs, axis=1), EPS, 1.0))


def _choose_folds(y: np.ndarray) -> int:
    """min(5, smallest class count), ignoring classes with a single validation example."""
    counts = np.bincount(y)
    usable = counts[counts >= 2]
    if len(usable) < 2:
        raise ZooError(
            "Stacking needs at least two classes with 2 or more validation images each "
            f"(validation class counts: {counts[counts > 0].tolist()}); use --method soft or "
            "weighted, or a larger validation split.")
    return int(min(MAX_FOLDS, usable.min()))


def _floor_and_place(p: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """Put meta-learner columns (a subset of classes) into C columns, floor at EPS, renormalise."""
    out = np.zeros((p.shape[0], n_classes))
    out[:, classes] = p
    out = np.maximum(out, EPS)
    return out / out.sum(axis=1, keepdims=True)


class Stacking(EnsembleMethod):
    """Logistic-regression meta-learner over member log-probabilities (out-of-fold validation)."""

    name = "stack"
    description = "logistic regression on validation probabilities, scored out-of-fold"
    out_of_fold = True

    def __init__(self, C: float = 1.0, max_iter: int = 1000) -> None:
        super().__init__()
        if float(C) <= 0 or int(max_iter) < 1:
            raise ZooError(f"stack ensemble needs C > 0 and max_iter >= 1, got C={C}, "
                           f"max_iter={max_iter}.")
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.n_splits_: int | None = None
        self.coef_: np.ndarray | None = None
        self.intercept_: np.ndarray | None = None
        self.classes_: np.ndarray | None = None

    def get_params(self) -> dict:
        return {"C": self.C, "max_iter": self.max_iter}

    def _learner(self) -> LogisticRegression:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def _fit(self, probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        X = stack_features(probs)
        self.n_splits_ = _choose_folds(y)
        cv = StratifiedKFold(n_splits=self.n_splits_, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            # Singleton classes cannot be in every training fold; their rows get EPS for them.
            warnings.filterwarnings("ignore", message=".*least populated class.*")
            warnings.filterwarnings("ignore", message=".*Number of classes in training fold.*")
            oof = cross_val_predict(self._learner(), X, y, cv=cv, method="predict_proba")
        meta = self._learner().fit(X, y)
        self.coef_, self.intercept_ = meta.coef_, meta.intercept_
        self.classes_ = meta.classes_.astype(np.int64)
        return _floor_and_place(oof, self.classes_, self.n_classes_)

    def _predict(self, probs: list[np.ndarray]) -> np.ndarray:
        logits = stack_features(probs) @ self.coef_.T + self.intercept_
        if self.coef_.shape[0] == 1:  # binary LogisticRegression: P(classes_[1]) = sigmoid(z)
            logits = np.hstack([np.zeros_like(logits), logits])
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return _floor_and_place(p / p.sum(axis=1, keepdims=True), self.classes_, self.n_classes_)

    def _state(self) -> dict:
        return {"coef": self.coef_.tolist(), "intercept": self.intercept_.tolist(),
                "classes": self.classes_.tolist(), "n_splits": self.n_splits_}

    def _set_state(self, state: dict) -> None:
        coef = np.asarray(state["coef"], dtype=np.float64)
        intercept = np.asarray(state["intercept"], dtype=np.float64)
        classes = np.asarray(state["classes"], dtype=np.int64)
        n_rows = 1 if len(classes) == 2 else len(classes)
        if (coef.shape != (n_rows, self.n_members_ * self.n_classes_)
                or intercept.shape != (n_rows,) or classes.max() >= self.n_classes_):
            raise ValueError("coefficients do not match the members and classes")
        self.coef_, self.intercept_, self.classes_ = coef, intercept, classes
        self.n_splits_ = int(state["n_splits"])

    def describe(self, names: Sequence[str] | None = None) -> str:
        members = " ".join(member_names(names, self.n_members_ or 0))
        return (f"logistic regression (C={self.C:g}) on log-probabilities of {members}; "
                f"{self.n_splits_}-fold out-of-fold validation")
