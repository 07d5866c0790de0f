"""Probability calibration: temperature scaling (Guo et al. 2017) and expected calibration error.

Everything works on probabilities, not logits, so it applies equally to single models and to
ensembles: log-probabilities are treated as logits (softmax(log p) == p). Fit only on the
validation split; the test split is for reporting.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from zoo.errors import ZooError

T_MIN = 0.05
T_MAX = 20.0
PROB_FLOOR = 1e-12  # probabilities are clipped to this before the log (exported graphs too)


def _check(y: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (labels as int64, probs as float64) after checking shapes and label range."""
    p = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(y)
    if p.ndim != 2:
        raise ValueError(f"probs must be a 2-D (samples x classes) array, got shape {p.shape}")
    if labels.ndim != 1 or labels.shape[0] != p.shape[0]:
        raise ValueError(f"labels shape {labels.shape} does not match probs shape {p.shape}")
    if p.shape[0] == 0:
        raise ZooError("calibration needs at least one sample, got none: "
                       "check that the validation split is not empty")
    labels = labels.astype(np.int64)
    if labels.min() < 0 or labels.max() >= p.shape[1]:
        raise ValueError(f"labels must lie in [0, {p.shape[1] - 1}], "
                         f"got [{labels.min()}, {labels.max()}]")
    return labels, p


def _scaled_log_softmax(probs: np.ndarray, temperature: float) -> np.ndarray:
    """log softmax(log(clip(probs)) / T), computed stably in float64."""
    z = np.log(np.clip(probs, PROB_FLOOR, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _nll(probs: np.ndarray, y: np.ndarray, temperature: float) -> float:
    logp = _scaled_log_softmax(probs, temperature)
    return float(-logp[np.arange(len(y)), y].mean())


class TemperatureScaler:
    """Divides log-probabilities by one scalar temperature T fitted to minimise validation NLL.

    T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones; the argmax
    (and hence accuracy) never changes. ``min_temperature`` bounds what ``fit`` may choose from
    below (1: soften only; a model whose validation photos call for sharpening is often
    over-confident on photos from elsewhere).
    """

    def __init__(self, temperature: float = 1.0, min_temperature: float = T_MIN) -> None:
        self.temperature = float(temperature)
        self.min_temperature = float(min_temperature)

    def fit(self, probs: np.ndarray, y: np.ndarray) -> "TemperatureScaler":
        """Fit T in [T_MIN, T_MAX] (bounded search on log T) on validation probabilities."""
        labels, p = _check(y, probs)
        result = minimize_scalar(
            lambda log_t: _nll(p, labels, math.exp(log_t)),
            bounds=(math.log(T_MIN), math.log(T_MAX)),
            method="bounded",
            options={"xatol": 1e-5},
        )
        self.temperature = max(float(math.exp(result.x)), self.min_temperature)
        return self

    def transform(self, probs: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities, float32, rows summing to 1."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 2:
            raise ValueError(f"probs must be a 2-D (samples x classes) array, got shape {p.shape}")
        return np.exp(_scaled_log_softmax(p, self.temperature)).astype(np.float32)

    def to_dict(self) -> dict:
        floor = {"min_temperature": self.min_temperature} if self.min_temperature > T_MIN else {}
        return {"method": "temperature", "temperature": self.temperature, **floor}

    @classmethod
    def from_dict(cls, d: dict) -> "TemperatureScaler":
        entry = d if isinstance(d, dict) else {}
        t, floor = entry.get("temperature"), entry.get("min_temperature", T_MIN)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (t, floor)):
            raise ZooError(f"invalid calibration entry {d!r}: 'temperature' (and 'min_temperature') "
                           "must be positive numbers; re-run calibration or delete the entry")
        return cls(float(t), float(floor))


def reliability_bins(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict:
    """Top-label reliability statistics over equal-width confidence bins.

    Bins are (lo, hi] (the first also includes 0). Returns numpy arrays: ``edges`` (n_bins+1),
    ``confidence`` and ``accuracy`` (mean per bin, NaN where the bin is empty) and ``count``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    labels, p = _check(y, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(idx, weights=correct, minlength=n_bins) / count
    return {"edges": edges, "confidence": confidence, "accuracy": accuracy, "count": count}


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: sum over bins of (bin share) * |accuracy - mean confidence|."""
    bins = reliability_bins(y, probs, n_bins)
    filled = bins["count"] > 0
    weights = bins["count"][filled] / bins["count"].sum()
    gaps = np.abs(bins["accuracy"][filled] - bins["confidence"][filled])
    return float((weights * gaps).sum())
