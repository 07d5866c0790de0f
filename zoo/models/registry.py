"""The zoo's model registry, a leaf module (imports nothing of zoo), as timm's ``_registry.py``.

A new architecture is one decorated function in a file of ``zoo/models/architectures/`` (see
``custom_cnn.py``); importing ``zoo.models`` registers them all. A second function with the same
name is an error, as in torchvision's ``register_model``.
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

ModelFn = Callable[..., nn.Module]
_MODELS: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Decorator: make ``fn(num_classes=..., **kwargs)`` buildable by its name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"A model named '{fn.__name__}' is already registered "
                         f"(by {_MODELS[fn.__name__].__module__}).")
    _MODELS[fn.__name__] = fn
    return fn


def zoo_model_names() -> list[str]:
    return sorted(_MODELS)


def is_zoo_model(name: str) -> bool:
    return name in _MODELS


def model_fn(name: str) -> ModelFn:
    return _MODELS[name]
