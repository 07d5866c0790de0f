"""Class balance (recipe ``train.balance``): the training photos' class counts turned into
sampling probabilities (``sampler``) or cross-entropy class weights (``loss``)."""
from __future__ import annotations

import numpy as np
import torch


def balanced_draw(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """``len(labels)`` indices drawn with replacement, each with probability proportional to
    1 / (items of its class): every class is drawn equally often on average."""
    weights = 1.0 / np.bincount(labels)[labels]
    return rng.choice(len(labels), len(labels), p=weights / weights.sum())


def class_weights(labels: np.ndarray, classes: int) -> torch.Tensor:
    """scikit-learn's "balanced" weights n / (K * n_c) of ``classes`` (K) classes; 0 for a
    class without photos (never a target, it takes no share of label smoothing)."""
    counts = np.bincount(labels, minlength=classes)
    weights = np.where(counts > 0, len(labels) / (classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)
