"""One trial of ``zoo tune``: a sampled recipe trained on every cross-validation fold of the
train+val photos (or on the fixed train/val split with one fold) and scored by its mean validation
accuracy, NLL breaking ties; pruned after any epoch that falls behind earlier trials.

The test photos are never decoded here: only train and val photos are.
"""
from __future__ import annotations

import itertools
import os
import socket
import statistics
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import optuna
import torch

from zoo.console import Reporter
from zoo.data.cache import DecodeCache
from zoo.data.dataset import DatasetIndex, resolve_data_root, scan_dataset
from zoo.data.pack import PackedPhotos
from zoo.data.preprocessing import Preprocessing
from zoo.data.splits import Split, cross_validation_folds, get_split
from zoo.errors import ZooError
from zoo.models.factory import build_model, preprocessing_of
from zoo.train.batches import SplitArrays
from zoo.train.recipes import Recipe
from zoo.train.run import RANDOM_INIT, create_for_recipe
from zoo.train.trainer import Trainer
from zoo.tune.space import SearchSpace

# score = mean accuracy - NLL_WEIGHT * mean NLL. One validation photo moves a fold's accuracy by
# 1/|val| (0.6 points with 5 folds of the 805 minerals photos), while a typical NLL gap between
# two trials (0.05) moves the score by 0.00005: NLL only decides between equal accuracies.
NLL_WEIGHT = 1e-3


def worker_id() -> str:
    """``host:pid`` of this process, recorded with each trial (abandoned trials are found by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class CrossValidation:
    """The dataset's folds: ``k`` folds of train+val (test photos stay out), or with ``k`` = 1 the
    fixed split itself; and the train and val photos, decoded once per image size."""

    index: DatasetIndex
    split: Split
    folds: list[Split]
    notes: list[str]
    photos: PackedPhotos | None = None  # train and val photos at ``side`` (the decode pack)
    shas: dict[str, str] = field(default_factory=dict)  # their paths' content hashes
    side: int = 0

    @classmethod
    def load(cls, data: str | None, k: int) -> CrossValidation:
        index = scan_dataset(resolve_data_root(data))
        split, notes = get_split(index)
        folds = [split] if k == 1 else cross_validation_folds(split, index, k)
        present = {it.path for it in index.items}
        for n, fold in enumerate(folds, 1):
            if not any(p in present for p in fold.paths("val")):
                raise ZooError(f"Fold {n} of {k} has no validation photos: {index.root} has too few "
                               "train+val photos for that many folds; use fewer --folds.")
        return cls(index, split, folds, notes)

    def decode(self, side: int, rep: Reporter) -> None:
        """Decode every train and val photo at ``side`` into the memory-mapped decode pack (as
        ``zoo train`` does), once per image size."""
        if side == self.side:
            return
        items = [it for it in self.index.items if self.split.assignment.get(it.path) in ("train", "val")]
        done = itertools.count(1)
        self.photos = DecodeCache().pack([self.index.root / it.path for it in items],
                                         [it.sha256 for it in items], side,
                                         on_done=lambda: rep.advance("decode", next(done), len(items)))
        self.shas, self.side = {it.path: it.sha256 for it in items}, side

    def part(self, fold: int, name: str) -> SplitArrays:
        """Fold ``fold``'s train or val photos, as decoded by the last ``decode``."""
        label = {it.path: it.label for it in self.index.items}
        paths = [p for p in self.folds[fold].paths(name) if p in self.shas]
        return SplitArrays(paths, self.photos.subset([self.shas[p] for p in paths]),
                           np.array([self.split.classes.index(label[p]) for p in paths], dtype=np.int64))


def restored_score(history: list[dict]) -> tuple[float, float]:
    """Validation accuracy and loss of the epoch whose weights training kept: the last stage's
    last new best."""
    last_stage = [row for row in history if row["stage"] == history[-1]["stage"]]
    row = [r for r in last_stage if r["best"]][-1]
    return row["val_accuracy"], row["val_loss"]


def epochs_per_fold(recipe: Recipe) -> int:
    """Epochs of one fold at most: the head stage (pretrained recipes) and fine-tuning."""
    warmup = recipe.train.warmup.epochs if recipe.model.pretrained and recipe.train.warmup else 0
    return warmup + recipe.train.epochs


@dataclass
class Objective:
    """Optuna's objective: sample a recipe, train it on every fold, return its score."""

    space: SearchSpace
    cv: CrossValidation
    rep: Reporter

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        recipe = self.space.recipe_for(self.space.sample(trial))
        pre = preprocessing_of(build_model(recipe.model.name, 2, **recipe.model.kwargs), recipe.data.image_size)
        self.cv.decode(pre.resize_side, self.rep)
        steps = itertools.count(1)
        scores = []
        for fold in range(len(self.cv.folds)):
            scores.append(self._fold(trial, recipe, pre, fold, steps))
            trial.set_user_attr("folds", [acc for acc, _ in scores])
        accuracy = statistics.mean(acc for acc, _ in scores)
        nll = statistics.mean(loss for _, loss in scores)
        trial.set_user_attr("accuracy", accuracy)
        trial.set_user_attr("nll", nll)
        return accuracy - NLL_WEIGHT * nll

    def _fold(self, trial: optuna.Trial, recipe: Recipe, pre: Preprocessing, fold: int,
              steps: Iterator[int]) -> tuple[float, float]:
        """Train on one fold, reporting the fold's best accuracy so far after every epoch at step
        "epochs trained in this trial"; raise TrialPruned when the pruner says so."""
        torch.manual_seed(recipe.seed)
        model, source = create_for_recipe(recipe, len(self.cv.split.classes), None)
        best = 0.0
        epochs = epochs_per_fold(recipe) * len(self.cv.folds)

        def on_epoch(row: dict) -> None:
            nonlocal best
            best = max(best, row["val_accuracy"])
            step = next(steps)
            self.rep.advance("epochs", step, epochs)
            trial.report(best, step)
            if trial.should_prune():
                trial.set_user_attr("pruned_at", f"fold {fold + 1}, epoch {row['epoch']} "
                                                 f"(best val acc {best:.3f})")
                raise optuna.TrialPruned()

        trainer = Trainer(model, pre, recipe, self.cv.part(fold, "train"), self.cv.part(fold, "val"),
                          on_epoch=on_epoch, on_batch=lambda stage, i, n: self.rep.advance(stage, i, n))
        return restored_score(trainer.fit(source != RANDOM_INIT))
