"""Training batches for the trainer: photos augmented and shuffled afresh each epoch, and the
pooled features of a frozen backbone, computed once for the head stage.

Every random choice is seeded by ``epoch_seed``, so an epoch's batches do not depend on the
epochs before it and a resumed run sees the batches an uninterrupted one would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import build_train_transform, eval_array, to_tensor
from zoo.models.inference import CPU, pooled_features
from zoo.models.runtime import Runtime
from zoo.train.recipes import Recipe

Batch = tuple[torch.Tensor, torch.Tensor]

HEAD_BATCH_SIZE = 64  # cached features are cheap: the head stage takes them 64 at a time
FEATURE_VIEW_EPOCH = 10_000  # cached-feature view v is augmented as epoch 10 000 + v


def epoch_seed(seed: int, epoch: int, stage: int = 0) -> int:
    """The seed of one epoch of one stage: ``seed * 1000 + 100 * stage + epoch``.

    Dropout seeds with the stage index; shuffling and augmentation use stage 0 in every stage,
    and the views of cached features count as epochs ``FEATURE_VIEW_EPOCH + view``."""
    return seed * 1000 + 100 * stage + epoch


@dataclass
class SplitArrays:
    """Decoded photos of one split (uint8 arrays at ``Preprocessing.resize_side``)."""

    paths: list[str]  # relative to the data root
    arrays: list[np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class PhotoBatches:
    """One split's photos as model input: augmented training batches or pooled features. With
    ``world_size`` processes, each epoch's shuffled order is padded (as torch's
    ``DistributedSampler`` pads) to equal shares and process ``rank`` takes every
    ``world_size``-th photo: every rank runs the same number of steps."""

    split: SplitArrays
    pre: Preprocessing
    recipe: Recipe
    rank: int = 0
    world_size: int = 1

    @property
    def batch_size(self) -> int:
        return self.recipe.data.batch_size

    def __len__(self) -> int:
        """Batches per epoch (the last one counts even when it is skipped for having one photo)."""
        return math.ceil(math.ceil(len(self.split) / self.world_size) / self.batch_size)

    def augment(self, epoch: int) -> Callable:
        """The recipe's training augmentation, seeded for ``epoch``."""
        return build_train_transform(self.recipe.augment.get("train", []), self.pre.image_size,
                                     seed=epoch_seed(self.recipe.seed, epoch))

    def _tensor(self, arrays: list[np.ndarray]) -> torch.Tensor:
        return to_tensor(arrays, self.pre, self.recipe.train.channels_last)

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Shuffled, augmented batches of every photo."""
        order = np.random.default_rng(epoch_seed(self.recipe.seed, epoch)).permutation(len(self.split))
        share = math.ceil(len(order) / self.world_size)
        order = np.resize(order, share * self.world_size)[self.rank::self.world_size]
        aug = self.augment(epoch)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            if len(idx) < 2 and start:  # batch norm cannot train on one image
                continue
            yield (self._tensor([aug(image=self.split.arrays[i])["image"] for i in idx]),
                   torch.as_tensor(self.split.labels[idx]))

    @torch.inference_mode()
    def features(self, model: nn.Module, views: int, runtime: Runtime = CPU,
                 on_batch: Callable[[int, int], None] = lambda i, n: None) -> Batch:
        """Pooled features (on ``runtime``'s device) and labels of ``views`` augmented copies of
        every photo, in order."""
        model.eval()
        feats, labels = [], []
        for view in range(views):
            aug = self.augment(FEATURE_VIEW_EPOCH + view)
            for start in range(0, len(self.split), self.batch_size):
                idx = range(start, min(start + self.batch_size, len(self.split)))
                arrays = [aug(image=self.split.arrays[i])["image"] for i in idx]
                feats.append(pooled_features(model, self._tensor(arrays), runtime))
                labels.append(torch.as_tensor(self.split.labels[list(idx)]))
                on_batch(len(feats), views * len(self))
        return torch.cat(feats).clone(), torch.cat(labels).clone()

    @torch.inference_mode()
    def eval_features(self, model: nn.Module, runtime: Runtime = CPU) -> torch.Tensor:
        """Pooled features of every photo as evaluation preprocesses it (no augmentation)."""
        model.eval()
        out = []
        for start in range(0, len(self.split), self.batch_size):
            arrays = [eval_array(a, self.pre) for a in self.split.arrays[start:start + self.batch_size]]
            out.append(pooled_features(model, self._tensor(arrays), runtime))
        return torch.cat(out).clone()


def feature_batches(x: torch.Tensor, y: torch.Tensor, seed: int, epoch: int,
                    batch_size: int = HEAD_BATCH_SIZE) -> Iterator[Batch]:
    """Shuffled batches of cached features, in the order ``epoch`` draws."""
    order = torch.from_numpy(np.random.default_rng(epoch_seed(seed, epoch)).permutation(len(y)))
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
