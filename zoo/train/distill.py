"""Knowledge distillation (``train.distill``): a finished run or ensemble teaches the model.

The teacher sees the very batches the student trains on (augmented, and mixed with
``train.mixup``): consistent teaching, as Beyer et al. 2022 ("Knowledge distillation: a good
teacher is patient and consistent") found best. Each of its models runs in eval mode, without
gradients, on the student's batch re-normalised and resized to its own preprocessing. Its
probabilities are those ``zoo predict`` computes before the final temperature: a run's softmax,
an ensemble's combination of its members' calibrated probabilities. The loss (Hinton et al. 2015):

    (1 - weight) * loss on the labels + weight * T^2 * KL(teacher_T || student_T)

where ``_T`` softens a distribution with temperature T (T = 1: plain probabilities).

The teacher must be of the student's split (same split id and classes): a teacher trained on
other photos may have seen the student's validation or test photos. It costs one forward pass
of each teacher model per training batch, so fine-tuning takes longer (benchmarks/README.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoo.data.preprocessing import Preprocessing
from zoo.data.splits import Split
from zoo.errors import ZooError
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.models.runtime import Runtime
from zoo.train.recipes import DistillSection


def adapt(x: torch.Tensor, src: Preprocessing, dst: Preprocessing) -> torch.Tensor:
    """A batch normalised for ``src`` as ``dst`` expects it: re-normalised, resized to its size."""
    if (src.mean, src.std) != (dst.mean, dst.std):
        m_src, s_src, m_dst, s_dst = (torch.tensor(v, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
                                      for v in (src.mean, src.std, dst.mean, dst.std))
        x = (x * s_src + m_src - m_dst) / s_dst
    if dst.image_size != src.image_size:
        x = F.interpolate(x, size=(dst.image_size, dst.image_size), mode="bilinear", antialias=True)
    return x


class Teacher:
    """A finished run or ensemble as a function of the student's training batches."""

    def __init__(self, predictor: ModelPredictor, student: Preprocessing) -> None:
        self.ensemble = predictor.kind == "ensemble"
        self.models = predictor.members if self.ensemble else [predictor]
        self.method = predictor.method if self.ensemble else None
        self.student = student
        self.name = predictor.name

    @torch.no_grad()
    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's log-probabilities (B, C) for the student's input batch ``x``."""
        logits = []
        for m in self.models:
            with m.runtime.autocast():
                logits.append(m.model(adapt(x, self.student, m.pre)).float())
        if self.method is None:
            return F.log_softmax(logits[0], 1)
        members = [m.scaler.transform(torch.softmax(z, 1).cpu().numpy())
                   for m, z in zip(self.models, logits)]
        combined = np.clip(self.method.predict_proba(members), 1e-12, 1.0)
        return torch.from_numpy(np.log(combined)).float().to(x.device)

    def describe(self) -> dict:
        """What ``meta.json`` records of the teacher."""
        return {"teacher": self.name, "kind": "ensemble" if self.ensemble else "model",
                "models": [m.name for m in self.models]}


def distillation_loss(logits: torch.Tensor, teacher_log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_T || student_T)``, the mean over the batch (Hinton et al. 2015: the T^2
    keeps the gradients' scale when T changes)."""
    t = temperature
    return F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_log_probs / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def load_teacher(cfg: DistillSection, home: Path, runtime: Runtime, student: Preprocessing,
                 split: Split) -> Teacher:
    """The recipe's teacher, checked: finished, and of the student's split and classes."""
    try:
        predictor = load_predictor(cfg.teacher, home, runtime)
    except ZooError as exc:
        raise ZooError(f"train.distill.teacher '{cfg.teacher}' cannot teach: {exc}") from exc
    meta = predictor.meta
    if meta.get("split_id") != split.id or predictor.classes != split.classes:
        raise ZooError(f"train.distill.teacher '{cfg.teacher}' was trained on split "
                       f"{meta.get('split_id')} (classes {', '.join(predictor.classes)}), but this "
                       f"run's data gives split {split.id} (classes {', '.join(split.classes)}). A "
                       "teacher of another split may have seen this run's validation or test photos: "
                       "train the teacher on the same data and split first.")
    return Teacher(predictor, student)
