"""Estimator API and registry for ensemble methods over member probability arrays.

A method sees only arrays: ``probs`` is a list with one ``(N, C)`` probability array per member
(same member order everywhere), ``y`` holds integer labels. It is fitted on validation arrays
only; test arrays go to ``predict_proba`` for reporting. Adding a method means one subclass
with a ``name``, in a new module of this package (the package imports all its modules):

    class Median(EnsembleMethod):
        name = "median"
        description = "median of the member probabilities"
        def _fit(self, probs, y): return self._predict(probs)
        def _predict(self, probs): return np.median(np.stack(probs), axis=0)
        def describe(self, names=None): return "median of members"
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from zoo.errors import ZooError

EPS = 1e-7  # probability floor for logs and NLL (the zoo's reported NLL uses it too)
_SUM_TOLERANCE = 1e-3

METHODS: dict[str, type["EnsembleMethod"]] = {}  # name -> class, filled by defining subclasses


def method_class(name: Any) -> type["EnsembleMethod"]:
    """The method registered as ``name``; ZooError listing the known ones otherwise."""
    if name not in METHODS:
        known = ", ".join(sorted(METHODS)) or "(none registered)"
        raise ZooError(f"Unknown ensemble method {name!r}. Known methods: {known}.")
    return METHODS[name]


def create_method(name: str, **kwargs: Any) -> "EnsembleMethod":
    """Instantiate the method registered as ``name`` with its parameters."""
    cls = method_class(name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ZooError(f"Invalid parameters for ensemble method {name!r}: {exc}") from exc


def load_method(d: dict) -> "EnsembleMethod":
    """Rebuild a fitted method from ``EnsembleMethod.to_dict`` output (dispatch on d['method'])."""
    if not isinstance(d, dict) or "method" not in d:
        raise ZooError("Saved ensemble parameters have no 'method' field; re-create the ensemble.")
    return method_class(d["method"]).from_dict(d)


def validate_probs(
    probs: Sequence[np.ndarray],
    n_members: int | None = None,
    n_classes: int | None = None,
) -> list[np.ndarray]:
    """Check member probabilities and return them as float64 arrays; raise ZooError if unusable."""
    if isinstance(probs, np.ndarray) or not isinstance(probs, Sequence) or len(probs) == 0:
        raise ZooError("An ensemble needs a non-empty list of member probability arrays.")
    if n_members is not None and len(probs) != n_members:
        raise ZooError(f"Got probabilities of {len(probs)} members, but the ensemble was fitted "
                       f"on {n_members}; pass the members in the same number and order.")
    arrays = [np.asarray(p, dtype=np.float64) for p in probs]
    shape = arrays[0].shape
    if len(shape) != 2 or shape[0] == 0 or shape[1] < 2:
        raise ZooError(f"Member 0 probabilities have shape {shape}; expected (N, C) with N >= 1 "
                       "and C >= 2.")
    for i, p in enumerate(arrays):
        if p.shape != shape:
            raise ZooError(f"Member {i} probabilities have shape {p.shape} but member 0 has "
                           f"{shape}; members must share the same images and classes.")
        if not np.all(np.isfinite(p)):
            raise ZooError(f"Member {i} probabilities contain NaN or infinite values; "
                           "re-evaluate that run.")
        if p.min() < 0 or np.abs(p.sum(axis=1) - 1).max() > _SUM_TOLERANCE:
            raise ZooError(f"Member {i} values are not probabilities (negative or rows not "
                           "summing to 1); pass softmax outputs, not logits.")
    if n_classes is not None and shape[1] != n_classes:
        raise ZooError(f"Member probabilities have {shape[1]} classes, but the ensemble was "
                       f"fitted on {n_classes}.")
    return arrays


def validate_labels(y: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Check labels are integers in [0, n_classes) matching the probability rows."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n_rows:
        raise ZooError(f"Labels have shape {y.shape} but member probabilities have {n_rows} "
                       "rows; labels and probabilities must describe the same images.")
    if y.dtype.kind not in "iu":
        raise ZooError(f"Labels must be integer class indices, got dtype {y.dtype}.")
    if y.min() < 0 or y.max() >= n_classes:
        raise ZooError(f"Labels must lie in [0, {n_classes}); got range "
                       f"[{y.min()}, {y.max()}].")
    return y.astype(np.int64)


def normalise_rows(p: np.ndarray) -> np.ndarray:
    return p / p.sum(axis=1, keepdims=True)


def member_names(names: Sequence[str] | None, n_members: int) -> list[str]:
    """Names for describe(): the given ones, or m0, m1, ..."""
    if names is None:
        return [f"m{i}" for i in range(n_members)]
    if len(names) != n_members:
        raise ZooError(f"Got {len(names)} member names for {n_members} members.")
    return list(names)


class EnsembleMethod(ABC):
    """Scikit-learn style combiner of member probabilities.

    Subclasses implement ``_fit`` (learn from validation arrays, return honest validation
    probabilities), ``_predict`` and ``describe``; methods with parameters or fitted state also
    override ``get_params``, ``_state`` and ``_set_state`` (JSON-friendly plain values).
    A subclass with a ``name`` is registered under it (``--method`` of ``zoo ensemble``).
    """

    name: ClassVar[str] = ""         # registry name; a subclass that sets none is not registered
    description: ClassVar[str] = ""  # one line for ``zoo ensemble --help``
    # True when val_proba() is out-of-fold, so a temperature may be fitted on it. Voting methods
    # say False: their validation probabilities already served to pick members' epochs, fit their
    # temperatures (and the weights), so the ensemble keeps its members' calibration instead.
    out_of_fold: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name"):  # an intermediate class, or one inheriting a name
            return
        if cls.name in METHODS:
            raise ValueError(f"ensemble method {cls.name!r} is already registered by "
                             f"{METHODS[cls.name]}")
        METHODS[cls.name] = cls

    def __init__(self) -> None:
        self.n_members_: int | None = None
        self.n_classes_: int | None = None
        self._val_proba: np.ndarray | None = None

    def fit(self, val_probs: list[np.ndarray], y_val: np.ndarray) -> "EnsembleMethod":
        probs = validate_probs(val_probs)
        y = validate_labels(y_val, probs[0].shape[0], probs[0].shape[1])
        self.n_members_, self.n_classes_ = len(probs), probs[0].shape[1]
        self._val_proba = normalise_rows(self._fit(probs, y))
        return self

    def predict_proba(self, probs: list[np.ndarray]) -> np.ndarray:
        """Combined ``(N, C)`` probabilities; rows sum to 1."""
        self._check_fitted()
        arrays = validate_probs(probs, self.n_members_, self.n_classes_)
        return normalise_rows(self._predict(arrays))

    def val_proba(self) -> np.ndarray:
        """Honest validation probabilities from ``fit`` (out-of-fold where the method learns)."""
        if self._val_proba is None:
            raise ZooError(f"{self.name!r} ensemble has no validation probabilities: they "
                           "exist only right after fit (saved ensembles keep them on disk).")
        return self._val_proba

    def to_dict(self) -> dict:
        self._check_fitted()
        return {"method": self.name, "params": self.get_params(),
                "n_members": self.n_members_, "n_classes": self.n_classes_,
                "state": self._state()}

    @classmethod
    def from_dict(cls, d: dict) -> "EnsembleMethod":
        if d.get("method") != cls.name:
            raise ZooError(f"Saved ensemble method is {d.get('method')!r}, not "
                           f"{cls.name!r}; use ensembles.load_method.")
        try:
            obj = cls(**d["params"])
            obj.n_members_, obj.n_classes_ = int(d["n_members"]), int(d["n_classes"])
            obj._set_state(d["state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ZooError(f"Saved {cls.name!r} ensemble parameters are incomplete or "
                           f"invalid ({exc!r}); re-create the ensemble.") from exc
        return obj

    @abstractmethod
    def describe(self, names: Sequence[str] | None = None) -> str:
        """One line for users; ``names`` are the member run names (default m0, m1, ...)."""

    def get_params(self) -> dict:
        """Constructor parameters (plain JSON values)."""
        return {}

    @abstractmethod
    def _fit(self, probs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        """Learn from validation arrays; return honest validation probabilities."""

    @abstractmethod
    def _predict(self, probs: list[np.ndarray]) -> np.ndarray:
        """Combine validated member arrays into (N, C) scores (rows normalised by the caller)."""

    def _state(self) -> dict:
        return {}

    def _set_state(self, state: dict) -> None:
        pass

    def _check_fitted(self) -> None:
        if self.n_members_ is None:
            raise ZooError(f"{self.name!r} ensemble is not fitted yet; call fit first.")
