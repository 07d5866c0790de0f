"""Ensemble methods over member probability arrays (pure numpy / scikit-learn).

Importing this package imports every module in it, which registers the methods they define
(built in: soft, weighted, stack): a new method is one ``EnsembleMethod`` subclass with a
``name``, in a new module here.
"""
import importlib
import pkgutil

from .base import (
    EPS,
    METHODS,
    EnsembleMethod,
    create_method,
    load_method,
    method_class,
    validate_labels,
    validate_probs,
)
from .stacking import Stacking
from .voting import SoftVoting, WeightedVoting

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "EPS",
    "METHODS",
    "EnsembleMethod",
    "SoftVoting",
    "Stacking",
    "WeightedVoting",
    "create_method",
    "load_method",
    "method_class",
    "validate_labels",
    "validate_probs",
]
