"""Mixup and CutMix of training batches (``train.mixup``): timm's ``Mixup``, drawn reproducibly.

timm's ``Mixup`` draws from numpy's global generator. Each batch reseeds it (and restores it
after) from torch's generator, which the trainer seeds per (seed, stage, epoch) as it does for
dropout: a step's mix depends only on its epoch and its place in it, so a resumed run mixes as
an uninterrupted one would. Every rank of a data-parallel run draws the same mix for its share.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

from zoo.train.recipes import MixupSection


@contextmanager
def _numpy_seeded(seed: int) -> Iterator[None]:
    """Inside, numpy's global generator starts from ``seed``; after, it is as it was."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


class BatchMixer:
    """Mixes a batch's photos and turns its labels into soft targets, which ``loss`` scores."""

    def __init__(self, cfg: MixupSection, num_classes: int, label_smoothing: float) -> None:
        self.mixup = Mixup(**cfg.model_dump(), label_smoothing=label_smoothing, num_classes=num_classes)
        self.loss = SoftTargetCrossEntropy()

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` mixed in place, and the soft targets. timm pairs photos, so the last photo of an
        odd batch stays unmixed with its own (smoothed) label."""
        even = len(x) - len(x) % 2
        targets = []
        if even:
            with _numpy_seeded(int(torch.randint(2**32, ()))):
                targets.append(self.mixup(x[:even], y[:even])[1])
        targets.append(mixup_target(y[even:], self.mixup.num_classes, smoothing=self.mixup.label_smoothing))
        return x, torch.cat(targets)
