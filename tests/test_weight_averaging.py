"""``train.ema_decay``: fine-tuning validates and keeps an exponential moving average of the
weights, and a resumed run continues the same average."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from helpers_training import tiny_trainer

from zoo.train.resume import load_state, save_state
from zoo.train.trainer import ResumeState, Trainer

DECAY = 0.6


def _trainer(epochs: int, **callbacks) -> Trainer:
    return tiny_trainer({"epochs": epochs, "warmup": None, "ema_decay": DECAY}, **callbacks)


def test_one_epoch_keeps_the_moving_average_of_the_step_weights() -> None:
    steps: list[dict[str, torch.Tensor]] = []  # the trained weights after each step
    trainer = _trainer(1)
    trainer.on_batch = lambda stage, i, n: steps.append(
        {k: v.clone() for k, v in trainer.model.state_dict().items()})
    trainer.fit(pretrained=False)
    assert len(steps) == 3  # 12 photos, batches of 4

    expected = steps[0]  # the first update copies the weights (warm-up decay 0)
    for step, weights in enumerate(steps[1:], start=1):
        decay = min(DECAY, 1 - (1 + step) ** -0.75)
        expected = {k: v + (1 - decay) * (weights[k] - v) if v.is_floating_point() else weights[k]
                    for k, v in expected.items()}
    final = trainer.model.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, msg=key)
    assert not torch.equal(final["stem.0.0.weight"], steps[-1]["stem.0.0.weight"])


def test_resume_continues_the_same_average(tmp_path: Path) -> None:
    def save_after_first_epoch(state: ResumeState) -> None:
        if state.stage == 0 and state.epoch == 1:
            save_state(tmp_path, state)

    straight = _trainer(3, on_checkpoint=save_after_first_epoch)
    straight.fit(pretrained=False)
    saved = load_state(tmp_path)
    assert saved.ema and set(saved.ema) == set(straight.model.state_dict())

    resumed = _trainer(3)
    resumed.fit(pretrained=False, resume=saved)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)

    def scores(trainer: Trainer) -> list[tuple[float, float]]:  # of the averaged weights, each epoch
        return [(r["val_loss"], r["val_accuracy"]) for r in trainer.history]

    np.testing.assert_allclose(scores(resumed), scores(straight), rtol=1e-5)
