"""Training batches for the trainer: photos augmented and shuffled afresh each epoch, and the
pooled features of a frozen backbone, computed once for the head stage.

Every random choice is seeded by ``epoch_seed``: an epoch's order (``epoch_order``: shuffled, or
class-balanced with ``train.balance: sampler``) by its seed, each photo's augmentation by that
seed and the photo's index. So an epoch's batches depend neither on the epochs before it (a
resumed run sees the batches an uninterrupted one would) nor on how many worker processes build
them.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import build_train_transform, eval_array, to_tensor
from zoo.models.inference import CPU, pooled_features
from zoo.models.runtime import Runtime
from zoo.train.balance import balanced_draw
from zoo.train.recipes import Recipe

Batch = tuple[torch.Tensor, torch.Tensor]

HEAD_BATCH_SIZE = 64  # cached features are cheap: the head stage takes them 64 at a time
FEATURE_VIEW_EPOCH = 10_000  # cached-feature view v is augmented as epoch 10 000 + v


def epoch_seed(seed: int, epoch: int, stage: int = 0) -> int:
    """The seed of one epoch of one stage: ``seed * 1000 + 100 * stage + epoch``.

    Dropout seeds with the stage index; shuffling and augmentation use stage 0 in every stage,
    and the views of cached features count as epochs ``FEATURE_VIEW_EPOCH + view``."""
    return seed * 1000 + 100 * stage + epoch


def epoch_order(labels: np.ndarray, seed: int, epoch: int, balance: str = "none") -> np.ndarray:
    """The items ``epoch`` visits, in order: a permutation of all of them, or with ``balance``
    "sampler" as many drawn with replacement, every class equally likely (``balanced_draw``)."""
    rng = np.random.default_rng(epoch_seed(seed, epoch))
    return balanced_draw(rng, labels) if balance == "sampler" else rng.permutation(len(labels))


@dataclass
class SplitArrays:
    """Decoded photos of one split (uint8 arrays at ``Preprocessing.resize_side``)."""

    paths: list[str]  # relative to the data root
    arrays: Sequence[np.ndarray]  # a list, or a memory-mapped PackedPhotos
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.paths)


Key = tuple[int | None, int]  # (augmentation seed of a pass, None for the eval view; photo index)


class PhotoDataset(Dataset):
    """Item ``(seed, i)``: photo ``i`` of a split and its label; the photo augmented with
    randomness drawn from ``(seed, i)`` alone (the same in any process, in any order), or its
    eval view when ``seed`` is None."""

    def __init__(self, split: SplitArrays, pre: Preprocessing, steps: list[dict]) -> None:
        self.split, self.pre = split, pre
        self.aug = build_train_transform(steps, pre.image_size, seed=0)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, key: Key) -> tuple[np.ndarray, int]:
        seed, i = key
        photo, label = self.split.arrays[i], int(self.split.labels[i])
        if seed is None:
            return eval_array(photo, self.pre), label
        rng = np.random.default_rng((seed, i))
        self.aug.set_random_state(rng, random.Random(int(rng.integers(2**63))))
        return self.aug(image=photo)["image"], label


def _collate(items: list[tuple[np.ndarray, int]], pre: Preprocessing, channels_last: bool) -> Batch:
    arrays, labels = zip(*items)
    return to_tensor(list(arrays), pre, channels_last), torch.tensor(labels)


@dataclass
class PhotoBatches:
    """One split's photos as model input: augmented training batches or pooled features.

    Batches are built in this process (``workers=0``) or by worker processes, with identical
    results. With ``world_size`` > 1, training batches hold this ``rank``'s share of each
    epoch's permutation (as torch's DistributedSampler; no process group needed)."""

    split: SplitArrays
    pre: Preprocessing
    recipe: Recipe
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    pin_memory: bool = False  # page-locked batches, for a CUDA model

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not one of world_size {self.world_size} ranks")
        self.dataset = PhotoDataset(self.split, self.pre, self.recipe.augment.get("train", []))

    @property
    def batch_size(self) -> int:
        return self.recipe.data.batch_size

    def __len__(self) -> int:
        """Batches per epoch (the last one counts even when it is skipped for having one photo)."""
        return math.ceil(math.ceil(len(self.split) / self.world_size) / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's photos in ``epoch``: every ``world_size``-th of the epoch's order
        (``epoch_order``), which wraps around so that every rank gets as many."""
        perm = epoch_order(self.split.labels, self.recipe.seed, epoch, self.recipe.train.balance)
        return np.resize(perm, -(-len(perm) // self.world_size) * self.world_size)[self.rank::self.world_size]

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Shuffled, augmented batches of this rank's photos."""
        seed, order, bs = epoch_seed(self.recipe.seed, epoch), self.order(epoch), self.batch_size
        batches = [[(seed, int(i)) for i in order[start:start + bs]] for start in range(0, len(order), bs)]
        return self._load([b for b in batches if len(b) > 1 or b is batches[0]])  # batch norm needs 2

    def _in_order(self, seed: int | None) -> list[list[Key]]:
        n, bs = len(self.split), self.batch_size
        return [[(seed, i) for i in range(start, min(start + bs, n))] for start in range(0, n, bs)]

    def _load(self, batches: list[list[Key]]) -> Iterator[Batch]:
        """The batches of these keys as tensors."""
        return iter(DataLoader(self.dataset, batch_sampler=batches, num_workers=self.workers,
                               collate_fn=partial(_collate, pre=self.pre,
                                                  channels_last=self.recipe.train.channels_last),
                               pin_memory=self.pin_memory))

    @torch.inference_mode()
    def features(self, model: nn.Module, views: int, runtime: Runtime = CPU,
                 on_batch: Callable[[int, int], None] = lambda i, n: None) -> Batch:
        """Pooled features (on ``runtime``'s device) and labels of ``views`` augmented copies of
        every photo, in order."""
        model.eval()
        feats, labels = [], []
        for view in range(views):
            batches = self._in_order(epoch_seed(self.recipe.seed, FEATURE_VIEW_EPOCH + view))
            for x, y in self._load(batches):
                feats.append(pooled_features(model, x, runtime))
                labels.append(y)
                on_batch(len(feats), views * len(batches))
        return torch.cat(feats).clone(), torch.cat(labels).clone()

    @torch.inference_mode()
    def eval_features(self, model: nn.Module, runtime: Runtime = CPU) -> torch.Tensor:
        """Pooled features of every photo as evaluation preprocesses it (no augmentation)."""
        model.eval()
        return torch.cat([pooled_features(model, x, runtime)
                          for x, _ in self._load(self._in_order(None))]).clone()


def feature_batches(x: torch.Tensor, y: torch.Tensor, seed: int, epoch: int, balance: str = "none",
                    batch_size: int = HEAD_BATCH_SIZE) -> Iterator[Batch]:
    """Shuffled batches of cached features, in the order ``epoch`` draws (``epoch_order``)."""
    order = torch.from_numpy(epoch_order(y.cpu().numpy(), seed, epoch, balance))
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        yield x[idx], y[idx]
