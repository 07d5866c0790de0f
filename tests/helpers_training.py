"""Random in-memory photo splits and a tiny ``Trainer`` for the ``Trainer`` unit tests."""
from __future__ import annotations

import numpy as np
import torch

from zoo.models.factory import build_model, preprocessing_of
from zoo.train.batches import SplitArrays
from zoo.train.recipes import Recipe
from zoo.train.trainer import Trainer

SIZE, CLASSES = 32, 3


def random_split(n: int, side: int, seed: int, classes: int = 3) -> SplitArrays:
    """``n`` random uint8 photos (``side`` x ``side + 5``), labels cycling through ``classes``."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (side, side + 5, 3), dtype=np.uint8) for _ in range(n)]
    return SplitArrays([f"img{i}.png" for i in range(n)], arrays, np.arange(n) % classes)


def tiny_trainer(train: dict, pretrained: bool = False, **callbacks) -> Trainer:
    """A 3-class custom_cnn (widths 8-16-32) on 12 random 32 px training photos and 6 validation
    ones, batches of 4, with the ``train`` section given (early stopping on val accuracy with a
    patience that never stops)."""
    recipe = Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": pretrained, "kwargs": {"widths": [8, 16, 32]}},
        "data": {"image_size": SIZE, "batch_size": 4},
        "train": {"lr": 0.01, "early_stopping": {"monitor": "val_accuracy", "patience": 50}, **train},
    })
    torch.manual_seed(0)
    model = build_model("custom_cnn", CLASSES, widths=(8, 16, 32))
    pre = preprocessing_of(model, SIZE)
    side = pre.resize_side
    return Trainer(model, pre, recipe, random_split(12, side, 1), random_split(6, side, 2), **callbacks)
