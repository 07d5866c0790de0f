"""Training schedule in the spirit of fastai's ``fine_tune``, composed of two obvious stages:

1. ``warmup``: backbone frozen, only the new head trains. With ``cached_features`` the frozen
   backbone's pooled features are computed once (a few augmented views per image) and the head
   trains on them in seconds: the same updates as running the frozen model on those views
   (tests/test_warm_start.py), except that the cached path keeps the model's head dropout as a
   regulariser where a frozen model in eval mode would switch it off.
2. ``finetune``: every layer trains, cosine (or one-cycle) schedule.

Each stage stops early on the validation monitor and restores its best weights. After every
epoch the trainer hands a ``ResumeState`` to ``on_checkpoint``; seeds are derived from
(seed, stage, epoch), so a resumed run ends exactly where an uninterrupted one would.
The test split never enters this module.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import group_modules
from timm.optim import param_groups_layer_decay
from timm.utils import ModelEmaV3

from zoo.errors import ZooError
from zoo.train.recipes import EarlyStopping, Recipe
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import build_train_transform, eval_array, to_tensor
from zoo.models.inference import pooled_features, predict_logits

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SplitArrays:
    """Decoded photos of one split (uint8 arrays at ``Preprocessing.resize_side``)."""

    ids: list[str]
    arrays: list[np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class EarlyStopper:
    """Patience on one monitored value; equal values are told apart by a second one (val loss)."""

    cfg: EarlyStopping
    best: float | None = None
    bad_epochs: int = 0
    best_tiebreak: float | None = None

    def step(self, value: float, tiebreak: float | None = None) -> bool:
        """Record one epoch; True when it is a new best (or ties the best with a lower tiebreak)."""
        sign = 1.0 if self.cfg.mode == "min" else -1.0
        better = self.best is None or sign * (self.best - value) > self.cfg.min_delta
        tie = (not better and value == self.best and tiebreak is not None
               and self.best_tiebreak is not None and tiebreak < self.best_tiebreak)
        if better or tie:
            self.best, self.best_tiebreak, self.bad_epochs = value, tiebreak, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.cfg.patience


@dataclass
class Stage:
    """One stage: what trains, for how long, on which batches, and how it is validated."""

    name: str
    module: nn.Module
    epochs: int
    lr: float
    n_batches: int
    batches: Callable[[int], Iterator[Batch]]
    forward: Callable[[torch.Tensor], torch.Tensor]
    val_logits: Callable[[], torch.Tensor]


@dataclass
class ResumeState:
    """Everything needed to continue training after the last finished epoch."""

    stage: int          # index of the stage to continue (or start)
    epoch: int          # next epoch within that stage
    best: float | None  # early stopping: best monitored value so far in the stage
    bad_epochs: int
    best_tiebreak: float | None
    history: list[dict]
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizer: dict
    scheduler: dict
    ema: dict[str, torch.Tensor] = field(default_factory=dict)  # averaged weights, when on


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


@dataclass
class Trainer:
    model: nn.Module
    pre: Preprocessing
    recipe: Recipe
    train: SplitArrays
    val: SplitArrays
    on_epoch: Callable[[dict], None] = lambda row: None
    on_batch: Callable[[str, int, int], None] = lambda stage, i, n: None
    on_checkpoint: Callable[[ResumeState], None] = lambda state: None
    history: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg = self.recipe.train
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=self.cfg.label_smoothing)
        self.val_labels = torch.as_tensor(self.val.labels)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.frozen_modules = leading_groups(self.model, self.cfg.frozen_groups)  # fails fast

    # ---- the schedule -------------------------------------------------------------------
    def stage_names(self, pretrained: bool) -> list[str]:
        warm = pretrained and self.cfg.warmup is not None
        return [n for n, on in (("warmup", warm), ("finetune", self.cfg.epochs > 0)) if on]

    def fit(self, pretrained: bool, resume: ResumeState | None = None) -> list[dict]:
        """Run the stages; with ``resume``, continue exactly where a saved state left off."""
        if resume is not None:
            self.history = list(resume.history)
            self.model.load_state_dict(resume.model)
        for i, name in enumerate(self.stage_names(pretrained)):
            if resume is not None and i < resume.stage:
                continue
            stage = self._warmup_stage() if name == "warmup" else self._finetune_stage()
            self._run(stage, i, resume if resume is not None and i == resume.stage else None)
        return self.history

    def _warmup_stage(self) -> Stage:
        warm = self.cfg.warmup
        head = self.model.get_classifier()
        if warm.cached_features:
            feats, labels = self._features(views=warm.views)
            val_feats = self._val_features()
            drop = nn.Dropout(getattr(self.model, "drop_rate", 0.0) or 0.0)
            forward = lambda x: head(drop(x))  # noqa: E731
            batches = lambda epoch: self._tensor_batches(feats, labels, epoch, 64)  # noqa: E731
            n_batches = math.ceil(len(labels) / 64)
            val_logits = lambda: head(val_feats)  # noqa: E731
        else:
            forward, batches, n_batches, val_logits = self._image_pipeline(frozen=True)
        return Stage("warmup", head, warm.epochs, warm.lr, n_batches, batches, forward, val_logits)

    def _finetune_stage(self) -> Stage:
        forward, batches, n_batches, val_logits = self._image_pipeline(frozen=False)
        return Stage("finetune", self.model, self.cfg.epochs, self.cfg.lr, n_batches, batches,
                     forward, val_logits)

    # ---- one stage ------------------------------------------------------------------------
    def _run(self, stage: Stage, index: int, resume: ResumeState | None) -> None:
        opt = self._optimizer(stage)
        sched = self._scheduler(opt, stage.epochs * stage.n_batches)
        ema = self._ema(stage)
        stopper = EarlyStopper(self.cfg.early_stopping)
        best_state, first = _clone(self.model.state_dict()), 0
        if resume is not None and resume.epoch > 0:
            opt.load_state_dict(resume.optimizer)
            sched.load_state_dict(resume.scheduler)
            if ema is not None:
                ema.module.load_state_dict(resume.ema)
            stopper.best, stopper.bad_epochs = resume.best, resume.bad_epochs
            stopper.best_tiebreak = resume.best_tiebreak
            best_state, first = resume.best_model, resume.epoch
        for epoch in range(first, stage.epochs):
            start = time.perf_counter()
            torch.manual_seed(self.recipe.seed * 1000 + 100 * index + epoch)  # dropout; resumable
            train_loss = self._train_epoch(stage, epoch, opt, sched, ema)
            with self._weights_of(ema):
                val_loss, val_acc = self._validate(stage)
                by_loss = self.cfg.early_stopping.monitor == "val_loss"
                improved = stopper.step(val_loss, None) if by_loss else stopper.step(val_acc, val_loss)
                if improved:
                    best_state = _clone(self.model.state_dict())
            row = {"epoch": len(self.history) + 1, "stage": stage.name, "train_loss": train_loss,
                   "val_loss": val_loss, "val_accuracy": val_acc, "lr": opt.param_groups[0]["lr"],
                   "seconds": time.perf_counter() - start, "best": improved}
            self.history.append(row)
            self.on_epoch(row)
            if stopper.should_stop or epoch + 1 == stage.epochs:
                break
            self.on_checkpoint(ResumeState(
                index, epoch + 1, stopper.best, stopper.bad_epochs, stopper.best_tiebreak,
                list(self.history), self.model.state_dict(), best_state, opt.state_dict(),
                sched.state_dict(), ema.module.state_dict() if ema is not None else {}))
        self.model.load_state_dict(best_state)
        self.on_checkpoint(ResumeState(index + 1, 0, None, 0, None, list(self.history),
                                       self.model.state_dict(), best_state, {}, {}))

    def _train_epoch(self, stage: Stage, epoch: int, opt: torch.optim.Optimizer,
                     sched: torch.optim.lr_scheduler.LRScheduler,
                     ema: ModelEmaV3 | None = None) -> float:
        stage.module.train()
        if stage.name == "warmup":
            self.model.eval()  # frozen backbone keeps its batch-norm statistics
            stage.module.train()
        for module in self.frozen_modules:
            module.eval()  # so do frozen leading layers while the rest fine-tunes
        if self.cfg.freeze_bn_stats:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        total, count = 0.0, 0
        for i, (x, y) in enumerate(stage.batches(epoch)):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cfg.bf16):
                loss = self.loss_fn(stage.forward(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(self.model, step=epoch * stage.n_batches + i + 1)
            total += loss.item() * len(y)
            count += len(y)
            self.on_batch(stage.name, i + 1, stage.n_batches)
        return total / max(count, 1)

    @torch.inference_mode()
    def _validate(self, stage: Stage) -> tuple[float, float]:
        self.model.eval()
        logits = stage.val_logits().float()
        loss = F.cross_entropy(logits, self.val_labels).item()
        acc = (logits.argmax(1) == self.val_labels).float().mean().item()
        return loss, acc

    # ---- weight averaging -----------------------------------------------------------------
    def _ema(self, stage: Stage) -> ModelEmaV3 | None:
        """An exponential moving average of the fine-tuned weights (timm), when ``ema_decay`` > 0.
        With warm-up its decay grows with the step (``1 - (1 + step) ** -0.75``, capped at
        ``ema_decay``), so a short schedule averages its last epoch or two, not the start."""
        if stage.name != "finetune" or not self.cfg.ema_decay:
            return None
        return ModelEmaV3(self.model, decay=self.cfg.ema_decay, use_warmup=True, warmup_power=0.75)

    @contextmanager
    def _weights_of(self, ema: ModelEmaV3 | None) -> Iterator[None]:
        """Inside, the model holds the averaged weights (validated, kept as best); after, its own."""
        if ema is None:
            yield
            return
        own = _clone(self.model.state_dict())
        self.model.load_state_dict(ema.module.state_dict())
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    # ---- optimisation ---------------------------------------------------------------------
    def _optimizer(self, stage: Stage) -> torch.optim.Optimizer:
        """No weight decay on biases and norm scales; with ``layer_decay`` < 1 the fine-tuning
        stage gives each layer group ``lr * layer_decay ** (distance from the head)`` (timm)."""
        if stage.name == "finetune" and self.cfg.layer_decay < 1:
            groups = param_groups_layer_decay(self.model, self.cfg.weight_decay,
                                              layer_decay=self.cfg.layer_decay)
            for group in groups:
                group["lr"] = stage.lr * group.pop("lr_scale")
        else:
            params = [p for p in stage.module.parameters() if p.requires_grad]
            groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.cfg.weight_decay},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=stage.lr, momentum=self.cfg.momentum, nesterov=True)
        return torch.optim.AdamW(groups, lr=stage.lr)

    def _scheduler(self, opt: torch.optim.Optimizer, total: int):
        if self.cfg.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                       total_steps=max(total, 1))
        warm = int(total * self.cfg.warmup_steps_pct)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if self.cfg.schedule == "constant":
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)

    # ---- data -----------------------------------------------------------------------------
    def _image_pipeline(self, frozen: bool):
        bs = self.recipe.data.batch_size
        head = {id(p) for p in self.model.get_classifier().parameters()}
        fixed = {id(p) for m in self.frozen_modules for p in m.parameters()}
        for p in self.model.parameters():
            p.requires_grad = id(p) in head if frozen else id(p) not in fixed
        batches = lambda epoch: self._image_batches(epoch, bs)  # noqa: E731
        val_logits = lambda: predict_logits(self.model, self.val.arrays, self.pre, bs,  # noqa: E731
                                            self.cfg.channels_last)
        return self.model, batches, math.ceil(len(self.train) / bs), val_logits

    def _augment(self, epoch: int):
        return build_train_transform(self.recipe.augment.get("train", []), self.pre.image_size,
                                     seed=self.recipe.seed * 1000 + epoch)

    def _image_batches(self, epoch: int, bs: int) -> Iterator[Batch]:
        rng = np.random.default_rng(self.recipe.seed * 1000 + epoch)
        order = rng.permutation(len(self.train))
        aug = self._augment(epoch)
        for start in range(0, len(order), bs):
            idx = order[start:start + bs]
            if len(idx) < 2 and start:  # batch norm cannot train on one image
                continue
            arrays = [aug(image=self.train.arrays[i])["image"] for i in idx]
            yield (to_tensor(arrays, self.pre, self.cfg.channels_last),
                   torch.as_tensor(self.train.labels[idx]))

    def _tensor_batches(self, x: torch.Tensor, y: torch.Tensor, epoch: int, bs: int) -> Iterator[Batch]:
        order = torch.from_numpy(np.random.default_rng(self.recipe.seed * 1000 + epoch)
                                 .permutation(len(y)))
        for start in range(0, len(y), bs):
            idx = order[start:start + bs]
            yield x[idx], y[idx]

    @torch.inference_mode()
    def _features(self, views: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features of ``views`` augmented copies of every training image."""
        self.model.eval()
        feats, labels = [], []
        for view in range(views):
            aug = self._augment(10_000 + view)
            for start in range(0, len(self.train), self.recipe.data.batch_size):
                idx = range(start, min(start + self.recipe.data.batch_size, len(self.train)))
                arrays = [aug(image=self.train.arrays[i])["image"] for i in idx]
                feats.append(pooled_features(self.model, to_tensor(arrays, self.pre,
                                                                   self.cfg.channels_last)))
                labels.append(torch.as_tensor(self.train.labels[list(idx)]))
                self.on_batch("features", len(feats), views * math.ceil(
                    len(self.train) / self.recipe.data.batch_size))
        return torch.cat(feats).clone(), torch.cat(labels).clone()

    @torch.inference_mode()
    def _val_features(self) -> torch.Tensor:
        self.model.eval()
        out = []
        for start in range(0, len(self.val), self.recipe.data.batch_size):
            arrays = [eval_array(a, self.pre) for a in self.val.arrays[start:start + self.recipe.data.batch_size]]
            out.append(pooled_features(self.model, to_tensor(arrays, self.pre, self.cfg.channels_last)))
        return torch.cat(out).clone()


def leading_groups(model: nn.Module, n: int) -> list[nn.Module]:
    """The modules of the model's first ``n`` layer groups (timm ``group_matcher`` order)."""
    if n == 0:
        return []
    if not hasattr(model, "group_matcher"):
        raise ZooError(f"train.frozen_groups={n}: {type(model).__name__} does not define layer "
                       "groups (group_matcher); set train.frozen_groups=0 to fine-tune every layer.")
    groups = list(group_modules(model, model.group_matcher(coarse=True)).values())
    if n >= len(groups) - 1:
        raise ZooError(f"train.frozen_groups={n} would freeze the whole backbone: "
                       f"{type(model).__name__} has {len(groups) - 1} layer groups before its "
                       f"head; use fewer, or train.epochs=0 for a head-only model.")
    return [model.get_submodule(name) for group in groups[:n] for name in group]
