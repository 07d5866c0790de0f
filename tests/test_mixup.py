"""``train.mixup``: timm's Mixup / CutMix on the fine-tuning batches, validated in the recipe,
reproducible step by step, and resumed exactly."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_training import random_split
from typer.testing import CliRunner

from zoo.cli import app
from zoo.errors import ZooError
from zoo.models.factory import build_model, preprocessing_of
from zoo.train.mixing import BatchMixer
from zoo.train.recipes import MixupSection, Recipe, load_recipe
from zoo.train.resume import load_state, save_state
from zoo.train.trainer import ResumeState, Trainer

SIZE, CLASSES, SMOOTHING = 32, 3, 0.1
BOTH = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}


@pytest.mark.parametrize("sets,expected", [
    (["train.mixup.mixup_alpha=-0.2"], ["train.mixup.mixup_alpha", "greater than or equal to 0"]),
    (["train.mixup={}"], ["train.mixup", "both 0", "train.mixup: null"]),
    (["train.mixup={mixup_alpha: 0, cutmix_alpha: 0}"], ["both 0"]),
    (["train.mixup.cutmix_alpha=1", "train.mixup.prob=0"], ["train.mixup.prob", "greater than 0"]),
    (["train.mixup.cutmix_alpha=1", "train.mixup.prob=1.5"], ["train.mixup.prob", "less than or equal to 1"]),
    (["train.mixup.cutmix_alpha=1", "train.mixup.switch_prob=-1"], ["train.mixup.switch_prob"]),
    (["train.mixup.cutmix_alpha=1", "train.mixup.mode=row"],
     ["train.mixup.mode", "'batch', 'pair' or 'elem'"]),
    (["train.mixup={mixup_alpha:0.2}"],  # YAML reads the key 'mixup_alpha:0.2'
     ["train.mixup.mixup_alpha:0.2", "unknown field", "space after the colon: 'mixup_alpha: 0.2'"]),
])
def test_bad_mixup_is_a_clear_recipe_error(sets: list[str], expected: list[str]) -> None:
    with pytest.raises(ZooError) as err:
        load_recipe("custom_cnn", sets)
    for fragment in expected:
        assert fragment in str(err.value), f"{fragment!r} missing from: {err.value}"


def test_mixup_is_off_by_default_and_set_field_by_field() -> None:
    assert load_recipe("custom_cnn")[0].train.mixup is None
    recipe, _ = load_recipe("custom_cnn", ["train.mixup.mixup_alpha=0.2", "train.mixup.cutmix_alpha=1.0"])
    flow, _ = load_recipe("custom_cnn", ["train.mixup={mixup_alpha: 0.2, cutmix_alpha: 1.0}"])
    assert recipe.train.mixup == flow.train.mixup == MixupSection(mixup_alpha=0.2, cutmix_alpha=1.0)


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_odd_batch_mixes_all_but_its_last_photo(mode: str) -> None:
    mixer = BatchMixer(MixupSection(**BOTH, mode=mode), CLASSES, SMOOTHING)
    x, y = torch.randn(5, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 0, 1])
    numpy_before = np.random.get_state()[1].copy()

    def mixed(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        return mixer(x.clone(), y)

    (xa, ta), (xb, tb) = mixed(1), mixed(1)
    assert torch.equal(xa, xb) and torch.equal(ta, tb)  # torch's seed decides the mix
    assert not torch.equal(xa, mixed(2)[0])
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_before)  # numpy's left as it was
    assert ta.shape == (5, CLASSES)
    torch.testing.assert_close(ta.sum(1), torch.ones(5))
    assert torch.equal(xa[4], x[4]) and not torch.equal(xa[:4], x[:4])
    torch.testing.assert_close(ta[4], torch.tensor([0.0, 1.0, 0.0]) * (1 - SMOOTHING) + SMOOTHING / CLASSES)


def _trainer(epochs: int, mixup: dict | None, **callbacks) -> Trainer:
    recipe = Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": False, "kwargs": {"widths": [8, 16, 32]}},
        "data": {"image_size": SIZE, "batch_size": 4},
        "train": {"epochs": epochs, "lr": 0.01, "warmup": None, "mixup": mixup,
                  "label_smoothing": SMOOTHING,
                  "early_stopping": {"monitor": "val_accuracy", "patience": 50}},
    })
    torch.manual_seed(0)
    model = build_model("custom_cnn", CLASSES, widths=(8, 16, 32))
    pre = preprocessing_of(model, SIZE)
    side = pre.resize_side  # 11 photos in batches of 4: the last batch has 3
    return Trainer(model, pre, recipe, random_split(11, side, 1), random_split(6, side, 2), **callbacks)


def test_mixed_training_is_reproducible_and_differs_from_plain() -> None:
    runs = [_trainer(1, mix) for mix in (BOTH, BOTH, None)]
    for trainer in runs:
        trainer.fit(pretrained=False)
    (a, b, plain) = [t.history[0] for t in runs]
    assert a == {**b, "seconds": a["seconds"]} and np.isfinite(a["train_loss"])
    assert a["train_loss"] != plain["train_loss"]


def test_resume_mixes_as_an_uninterrupted_run(tmp_path: Path) -> None:
    def save_after_first_epoch(state: ResumeState) -> None:
        if state.stage == 0 and state.epoch == 1:
            save_state(tmp_path, state)

    straight = _trainer(3, {**BOTH, "mode": "elem"}, on_checkpoint=save_after_first_epoch)
    straight.fit(pretrained=False)
    resumed = _trainer(3, {**BOTH, "mode": "elem"})
    torch.manual_seed(123)  # a resumed process starts from other random states
    np.random.seed(123)
    resumed.fit(pretrained=False, resume=load_state(tmp_path))
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)
    losses = [[r["train_loss"] for r in t.history] for t in (straight, resumed)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_zoo_train_with_cutmix_trains_one_epoch(zoo_env: Path) -> None:
    result = CliRunner().invoke(app, [
        "train", "custom_cnn", "--quiet", "--name", "mixed", "--set", "data.image_size=32",
        "--set", "data.batch_size=5", "--set", "train.epochs=1", "--set", "train.mixup.cutmix_alpha=1.0"])
    assert result.exit_code == 0, result.output
    meta = json.loads((zoo_env / "mixed" / "meta.json").read_text())
    assert meta["status"] == "finished"
