"""Training schedule in the spirit of fastai's ``fine_tune``: a list of stages, each described
by data (which module trains, on which batches, whether the backbone is frozen, whether weight
averaging and layer-wise learning rates apply), run by one loop with no per-stage branches.

1. The head stage (warm-up stage; recipe key ``train.warmup``, history label ``warmup``): the
   backbone is frozen, only the new head trains. With ``cached_features`` the frozen backbone's
   pooled features are computed once (a few augmented views per image) and the head trains on
   them in seconds: the same updates as running the frozen model on those views
   (tests/test_warm_start.py), except that the cached path keeps the model's head dropout as a
   regulariser where a frozen model in eval mode would switch it off.
2. Fine-tuning (history label ``finetune``): every layer trains, cosine (or one-cycle) schedule.
   With ``train.distill`` a teacher's probabilities join the labels (``zoo.train.distill``).
   With ``train.wise_ft`` its result is then mixed in weight space with the warmed-up model it
   started from (WiSE-FT), the mix chosen on validation (``trainer.wise_``).

Not to be confused with the head stage: the lr ramp (``train.warmup_steps_pct``, a linear rise
of the learning rate at the start of each stage's schedule) and the decay ramp of the weight
average (``train.ema_decay``).

Each stage stops early on the validation monitor and restores its best weights. After every
epoch the trainer hands a ``ResumeState`` to ``on_checkpoint``; seeds come from ``epoch_seed``
(seed, stage, epoch), so a resumed run ends exactly where an uninterrupted one would.
The test split never enters this module.

Where it runs is given, never assumed: ``runtime`` (device, autocast, fp16 gradient scaler) and
``cluster`` (this process's rank among the data-parallel processes; see ``zoo.train.distributed``).
With several processes each rank trains on its share of the photos through DDP, computes the
cached features of its share and gathers everyone's (every rank then trains the same head), and
scores its share of validation and gathers the logits (every rank takes the same decisions).
``trainer.model`` stays the plain model: the timm head API is there, DDP only wraps its forward.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import group_modules
from timm.optim import param_groups_layer_decay
from timm.utils import ModelEmaV3

from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError
from zoo.models.inference import predict_logits
from zoo.models.runtime import Runtime
from zoo.train.balance import class_weights
from zoo.train.batches import HEAD_BATCH_SIZE, Batch, PhotoBatches, SplitArrays, epoch_seed, feature_batches
from zoo.train.distill import Teacher, distillation_loss
from zoo.train.distributed import Cluster
from zoo.train.mixing import BatchMixer
from zoo.train.recipes import EarlyStopping, Recipe


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

    def step_scores(self, val_loss: float, val_acc: float) -> bool:
        """``step`` with the monitored score of a validation (accuracy: ties told apart by loss)."""
        if self.cfg.monitor == "val_loss":
            return self.step(val_loss)
        return self.step(val_acc, val_loss)

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.cfg.patience


@dataclass
class Stage:
    """One stage of the schedule, described by what it does; the trainer never asks its name."""

    name: str  # the history label: "warmup" (the head stage) or "finetune"
    module: nn.Module  # the module whose parameters the optimizer updates
    epochs: int
    lr: float
    n_batches: int
    batches: Callable[[int], Iterator[Batch]]  # epoch -> training batches
    forward: Callable[[torch.Tensor], torch.Tensor]  # a batch's inputs -> logits
    val_logits: Callable[[], torch.Tensor]
    frozen_backbone: bool = False  # all but ``module`` stays in eval mode (batch-norm stats)
    ema_decay: float = 0.0  # validate and keep a moving average of the weights; 0: off
    layer_decay: float = 1.0  # lr * layer_decay ** (distance from the head); 1: one lr for all
    wise_alphas: tuple[float, ...] = ()  # mix the result with the stage's start weights (WiSE-FT)
    mixup: BatchMixer | None = None  # mixes photos and labels, scored by its soft-target loss
    teacher: Teacher | None = None  # its probabilities join the labels (train.distill)


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
    scaler: dict = field(default_factory=dict)  # fp16 gradient scaler (precision 16-mixed)
    anchor: dict[str, torch.Tensor] = field(default_factory=dict)  # the stage's start (WiSE-FT)


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def interpolate(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor],
                alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * start + alpha * end`` for every floating-point tensor (exactly ``start`` at
    0 and ``end`` at 1); other tensors (batch counts) from the nearer of the two."""
    near = end if alpha >= 0.5 else start
    return {k: (1 - alpha) * start[k] + alpha * v if v.is_floating_point() else near[k].clone()
            for k, v in end.items()}


@dataclass
class Trainer:
    model: nn.Module
    pre: Preprocessing
    recipe: Recipe
    train: SplitArrays
    val: SplitArrays
    runtime: Runtime = Runtime()
    cluster: Cluster = Cluster()
    teacher: Teacher | None = None  # required by train.distill (zoo.train.distill.load_teacher)
    on_epoch: Callable[[dict], None] = lambda row: None
    on_batch: Callable[[str, int, int], None] = lambda stage, i, n: None
    on_checkpoint: Callable[[ResumeState], None] = lambda state: None
    history: list[dict] = field(default_factory=list)
    wise_: dict | None = None  # after fit with train.wise_ft: the chosen alpha and each alpha's scores

    def __post_init__(self) -> None:
        self.cfg = self.recipe.train
        if (self.cfg.distill is None) != (self.teacher is None):
            raise ZooError("train.distill and the Trainer's teacher go together: load the recipe's "
                           "teacher with zoo.train.distill.load_teacher")
        weight = (class_weights(self.train.labels, self.model.num_classes)
                  if self.cfg.balance == "loss" else None)  # validation loss stays unweighted
        self.loss_fn = nn.CrossEntropyLoss(weight, label_smoothing=self.cfg.label_smoothing)
        self.loss_fn.to(self.runtime.device)
        self.val_labels = torch.as_tensor(self.val.labels)
        self.wise_after_head = False  # set by schedule(): WiSE-FT after a head stage
        self.model = self.model.to(self.runtime.device)
        if self.cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.frozen_modules = leading_groups(self.model, self.cfg.frozen_groups)  # fails fast
        self.scaler = self.runtime.grad_scaler()
        rank, world = self.cluster.rank, self.cluster.world_size
        cuda = self.runtime.device.type == "cuda"
        self.loading = dict(workers=self.recipe.data.loader_workers(cuda=cuda), pin_memory=cuda)
        self.photos = PhotoBatches(self.train, self.pre, self.recipe, rank, world, **self.loading)
        self.val_photos = PhotoBatches(self.cluster.shard(self.val), self.pre, self.recipe, **self.loading)

    # ---- the schedule -------------------------------------------------------------------
    def schedule(self, pretrained: bool) -> list[Callable[[], Stage]]:
        """Builders of the stages to run, in order: the head stage (a pretrained backbone and a
        ``train.warmup`` section), then fine-tuning. A stage is built only when it starts."""
        head = pretrained and self.cfg.warmup is not None
        self.wise_after_head = head and self.cfg.wise_ft is not None
        return [build for build, on in ((self.head_stage, head),
                                        (self.finetune_stage, self.cfg.epochs > 0)) if on]

    def fit(self, pretrained: bool, resume: ResumeState | None = None) -> list[dict]:
        """Run the stages; with ``resume``, continue exactly where a saved state left off."""
        if resume is not None:
            self.history = list(resume.history)
            self.model.load_state_dict(resume.model)
        for i, build in enumerate(self.schedule(pretrained)):
            if resume is not None and i < resume.stage:
                continue
            self._run(build(), i, resume if resume is not None and i == resume.stage else None)
        return self.history

    def head_stage(self) -> Stage:
        """The warm-up stage: backbone frozen, only the new head trains (``train.warmup``), on
        cached pooled features when the recipe allows."""
        warm, head = self.cfg.warmup, self.model.get_classifier()
        self._set_trainable(frozen_backbone=True)
        if not warm.cached_features:
            return self._photo_stage("warmup", head, warm.epochs, warm.lr, frozen_backbone=True)
        share = PhotoBatches(self.cluster.shard(self.train), self.pre, self.recipe, **self.loading)
        feats, labels = (self.cluster.gather_rows(t) for t in share.features(
            self.model, warm.views, self.runtime, lambda i, n: self.on_batch("features", i, n)))
        val_feats = self.cluster.gather_rows(self.val_photos.eval_features(self.model, self.runtime))
        drop = nn.Dropout(getattr(self.model, "drop_rate", 0.0) or 0.0)
        return Stage("warmup", head, warm.epochs, warm.lr, math.ceil(len(labels) / HEAD_BATCH_SIZE),
                     batches=lambda epoch: feature_batches(feats, labels, self.recipe.seed, epoch,
                                                           self.cfg.balance),
                     forward=lambda x: head(drop(x)), val_logits=lambda: head(val_feats),
                     frozen_backbone=True)

    def finetune_stage(self) -> Stage:
        """Every layer but the first ``train.frozen_groups`` trains (on mixed batches with
        ``train.mixup``, taught by the teacher with ``train.distill``)."""
        self._set_trainable(frozen_backbone=False)
        alphas = tuple(self.cfg.wise_ft.alphas) if self.wise_after_head else ()
        mix = self.cfg.mixup
        mixup = None if mix is None else BatchMixer(mix, self.model.num_classes, self.cfg.label_smoothing)
        return self._photo_stage("finetune", self.model, self.cfg.epochs, self.cfg.lr, mixup=mixup,
                                 teacher=self.teacher, ema_decay=self.cfg.ema_decay,
                                 layer_decay=self.cfg.layer_decay, wise_alphas=alphas)

    def _photo_stage(self, name: str, module: nn.Module, epochs: int, lr: float, **options) -> Stage:
        """A stage that runs augmented photos through the whole model (in DDP with several
        processes: built after ``_set_trainable``, it syncs the gradients of what trains)."""
        bs, arrays = self.recipe.data.batch_size, self.val_photos.split.arrays
        val_logits = lambda: self.cluster.gather_rows(predict_logits(  # noqa: E731
            self.model, arrays, self.pre, bs, self.cfg.channels_last, self.runtime))
        return Stage(name, module, epochs, lr, len(self.photos), self.photos.train_batches,
                     self.cluster.wrap(self.model, self.runtime.device), val_logits, **options)

    def _set_trainable(self, frozen_backbone: bool) -> None:
        """Gradients for the head alone, or for all but the frozen leading layer groups."""
        head = {id(p) for p in self.model.get_classifier().parameters()}
        fixed = {id(p) for m in self.frozen_modules for p in m.parameters()}
        for p in self.model.parameters():
            p.requires_grad = id(p) in head if frozen_backbone else id(p) not in fixed

    # ---- one stage ------------------------------------------------------------------------
    def _run(self, stage: Stage, index: int, resume: ResumeState | None) -> None:
        opt = self.optimizer_for(stage)
        sched = self.scheduler_for(opt, stage.epochs * stage.n_batches)
        ema = self._ema(stage)
        stopper = EarlyStopper(self.cfg.early_stopping)
        best_state, first = _clone(self.model.state_dict()), 0
        anchor = best_state if stage.wise_alphas else {}
        if resume is not None and resume.epoch > 0:
            best_state, first = self._restore(resume, opt, sched, ema, stopper)
            anchor = resume.anchor
        for epoch in range(first, stage.epochs):
            start = time.perf_counter()
            torch.manual_seed(epoch_seed(self.recipe.seed, epoch, index))  # dropout; resumable
            train_loss = self.train_epoch(stage, epoch, opt, sched, ema)
            if not (stage.frozen_backbone or self.cfg.freeze_bn_stats):
                self.cluster.sync_batch_norm(self.model, *([ema.module] if ema is not None else []))
            with self._weights_of(ema):
                val_loss, val_acc = self.validate(stage)
                improved = stopper.step_scores(val_loss, val_acc)
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
                sched.state_dict(), ema.module.state_dict() if ema is not None else {},
                self.scaler.state_dict(), anchor))
        self.model.load_state_dict(best_state)
        if stage.wise_alphas:
            self.model.load_state_dict(self._wise(stage, anchor, best_state))
        self.on_checkpoint(ResumeState(index + 1, 0, None, 0, None, list(self.history),
                                       self.model.state_dict(), best_state, {}, {}))

    def _restore(self, resume: ResumeState, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, ema: ModelEmaV3 | None,
                 stopper: EarlyStopper) -> tuple[dict[str, torch.Tensor], int]:
        """Load a stage's saved optimisation state; its best weights and the next epoch."""
        opt.load_state_dict(resume.optimizer)
        sched.load_state_dict(resume.scheduler)
        if resume.scaler:
            self.scaler.load_state_dict(resume.scaler)
        if ema is not None:
            ema.module.load_state_dict(resume.ema)
        stopper.best, stopper.bad_epochs = resume.best, resume.bad_epochs
        stopper.best_tiebreak = resume.best_tiebreak
        return resume.best_model, resume.epoch

    def train_epoch(self, stage: Stage, epoch: int, opt: torch.optim.Optimizer,
                    sched: torch.optim.lr_scheduler.LRScheduler,
                    ema: ModelEmaV3 | None = None) -> float:
        """One pass over the stage's batches for ``epoch``; the mean training loss."""
        self._set_modes(stage)
        total, count = 0.0, 0
        for i, batch in enumerate(stage.batches(epoch)):
            loss = self.train_step(stage, batch, opt, sched)
            if ema is not None:
                ema.update(self.model, step=epoch * stage.n_batches + i + 1)
            total += loss * len(batch[1])
            count += len(batch[1])
            self.on_batch(stage.name, i + 1, stage.n_batches)
        total, count = self.cluster.sum(total, count)
        return total / max(count, 1)

    def train_step(self, stage: Stage, batch: Batch, opt: torch.optim.Optimizer,
                   sched: torch.optim.lr_scheduler.LRScheduler) -> float:
        """One optimisation step (modes as ``train_epoch`` sets them); the batch's loss."""
        x, y = (self.runtime.move(t) for t in batch)
        loss_fn = self.loss_fn
        if stage.mixup is not None:
            x, y = stage.mixup(x, y)
            loss_fn = stage.mixup.loss
        with self.runtime.autocast():
            logits = stage.forward(x).float()
            loss = loss_fn(logits, y)
            if stage.teacher is not None:
                d = self.cfg.distill
                taught = distillation_loss(logits, stage.teacher.log_probs(x), d.temperature)
                loss = (1 - d.weight) * loss + d.weight * taught
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()
        sched.step()
        return loss.item()

    def _set_modes(self, stage: Stage) -> None:
        """Train mode for what trains; a frozen backbone, frozen leading layers and (with
        ``freeze_bn_stats``) batch norm keep their running statistics in eval mode."""
        self.model.train(not stage.frozen_backbone)
        stage.module.train()
        for module in self.frozen_modules:
            module.eval()
        if self.cfg.freeze_bn_stats:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    @torch.inference_mode()
    def validate(self, stage: Stage) -> tuple[float, float]:
        """Validation loss and accuracy of the model as it is now."""
        self.model.eval()
        with self.runtime.autocast():
            logits = stage.val_logits().float().cpu()
        loss = F.cross_entropy(logits, self.val_labels).item()
        acc = (logits.argmax(1) == self.val_labels).float().mean().item()
        return loss, acc

    # ---- weight averaging -----------------------------------------------------------------
    def _ema(self, stage: Stage) -> ModelEmaV3 | None:
        """An exponential moving average of the weights (timm), for a stage with ``ema_decay``.
        Its decay ramps up with the step (``1 - (1 + step) ** -0.75``, capped at ``ema_decay``),
        so a short schedule averages its last epoch or two, not the start."""
        if not stage.ema_decay:
            return None
        return ModelEmaV3(self.model, decay=stage.ema_decay, use_warmup=True, warmup_power=0.75)

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

    def _wise(self, stage: Stage, anchor: dict[str, torch.Tensor],
              tuned: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """WiSE-FT: the mix of ``anchor`` (the stage's start) and ``tuned`` whose alpha validates
        best, ranked as early stopping ranks epochs; every alpha's scores go to ``wise_``."""
        stopper, curve, best = EarlyStopper(self.cfg.early_stopping), [], tuned
        for alpha in stage.wise_alphas:
            mixed = interpolate(anchor, tuned, alpha)
            self.model.load_state_dict(mixed)
            loss, acc = self.validate(stage)
            curve.append({"alpha": alpha, "val_loss": loss, "val_accuracy": acc})
            if stopper.step_scores(loss, acc):
                best, chosen = mixed, curve[-1]
        self.wise_ = {"alpha": chosen["alpha"], "curve": curve}
        return best

    # ---- optimisation ---------------------------------------------------------------------
    def optimizer_for(self, stage: Stage) -> torch.optim.Optimizer:
        """No weight decay on biases and norm scales; with ``layer_decay`` < 1 each layer group
        of the stage's module gets ``lr * layer_decay ** (distance from the head)`` (timm)."""
        if stage.layer_decay < 1:
            groups = param_groups_layer_decay(stage.module, self.cfg.weight_decay,
                                              layer_decay=stage.layer_decay)
            for group in groups:
                group["lr"] = stage.lr * group.pop("lr_scale")
        else:
            params = [p for p in stage.module.parameters() if p.requires_grad]
            groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": self.cfg.weight_decay},
                      {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=stage.lr, momentum=self.cfg.momentum, nesterov=True)
        return torch.optim.AdamW(groups, lr=stage.lr)

    def scheduler_for(self, opt: torch.optim.Optimizer,
                      total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """One-cycle, or a linear lr ramp over ``warmup_steps_pct`` of the steps followed by a
        cosine decay (or a constant lr)."""
        if self.cfg.schedule == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                       total_steps=max(total_steps, 1))
        ramp = int(total_steps * self.cfg.warmup_steps_pct)

        def factor(step: int) -> float:
            if step < ramp:
                return (step + 1) / ramp
            if self.cfg.schedule == "constant":
                return 1.0
            return 0.5 * (1 + math.cos(math.pi * (step - ramp) / max(total_steps - ramp, 1)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)


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
