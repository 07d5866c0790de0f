"""Ensemble methods over member probability arrays (pure numpy / scikit-learn).

Importing this package registers the built-in methods: soft, weighted, stack.
"""
from .base import (
    METHODS,
    EnsembleMethod,
    create_method,
    load_method,
    register_method,
    validate_labels,
    validate_probs,
)
from .stacking import Stacking
from .voting import SoftVoting, WeightedVoting

__all__ = [
    "METHODS",
    "EnsembleMethod",
    "SoftVoting",
    "Stacking",
    "WeightedVoting",
    "create_method",
    "load_method",
    "register_method",
    "validate_labels",
    "validate_probs",
]
