"""Voting ensembles: plain mean and greedy-selected weights (Caruana et al., 2004)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zoo.errors import ZooError

from .base import EPS, EnsembleMethod, member_names


def _weighted_mean(probs: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    return np.tensordot(weights, np.stack(probs), axes=1)


class SoftVoting(EnsembleMethod):
    """Mean of the member probabilities."""

    name = "soft"
    description = "mean of probabilities"

    def _fit(self, probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        return self._predict(probs)

    def _predict(self, probs: list[np.ndarray]) -> np.ndarray:
        return np.mean(np.stack(probs), axis=0)

    def describe(self, names: Sequence[str] | None = None) -> str:
        return f"mean of {self.n_members_} members: " + " ".join(
            member_names(names, self.n_members_ or 0))


class WeightedVoting(EnsembleMethod):
    """Weighted mean with weights from greedy ensemble selection with replacement.

    Starting from an empty bag (or the ``sorted_init`` individually best members), each of
    ``n_iter`` rounds adds the member whose addition gives the lowest validation NLL of the
    averaged probabilities; ties go to the lowest member index. Weights are counts / total.
    """

    name = "weighted"
    description = "greedy ensemble selection (Caruana 2004) on validation NLL"

    def __init__(self, n_iter: int = 50, sorted_init: int = 0) -> None:
        super().__init__()
        if int(n_iter) < 1 or int(sorted_init) < 0:
            raise ZooError(f"weighted ensemble needs n_iter >= 1 and sorted_init >= 0, got "
                           f"n_iter={n_iter}, sorted_init={sorted_init}.")
        self.n_iter = int(n_iter)
        self.sorted_init = int(sorted_init)
        self.weights_: np.ndarray | None = None

    def get_params(self) -> dict:
        return {"n_iter": self.n_iter, "sorted_init": self.sorted_init}

    def _fit(self, probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        # Only each row's true-class probability matters for the NLL of an average.
        true_p = np.stack([p[np.arange(len(y)), y] for p in probs])  # (M, N)
        counts = np.zeros(len(probs), dtype=np.int64)
        single_nll = -np.log(np.clip(true_p, EPS, 1.0)).mean(axis=1)
        counts[np.argsort(single_nll, kind="stable")[: self.sorted_init]] = 1
        bag_sum = counts @ true_p
        for _ in range(self.n_iter):
            candidate = (bag_sum[None, :] + true_p) / (counts.sum() + 1)
            nll = -np.log(np.clip(candidate, EPS, 1.0)).mean(axis=1)
            best = int(np.argmin(nll))
            counts[best] += 1
            bag_sum += true_p[best]
        self.weights_ = counts / counts.sum()
        return self._predict(probs)

    def _predict(self, probs: list[np.ndarray]) -> np.ndarray:
        return _weighted_mean(probs, self.weights_)

    def _state(self) -> dict:
        return {"weights": [float(w) for w in self.weights_]}

    def _set_state(self, state: dict) -> None:
        weights = np.asarray(state["weights"], dtype=np.float64)
        if weights.shape != (self.n_members_,) or weights.min() < 0 or weights.sum() <= 0:
            raise ValueError(f"weights {state['weights']} do not fit {self.n_members_} members")
        self.weights_ = weights

    def describe(self, names: Sequence[str] | None = None) -> str:
        labels = member_names(names, self.n_members_ or 0)
        return "weights: " + " ".join(f"{n}={w:.2f}" for n, w in zip(labels, self.weights_))
