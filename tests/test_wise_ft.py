"""``train.wise_ft``: after fine-tuning, the weights are mixed with the warmed-up model's
(WiSE-FT); alpha 0 and 1 give the two endpoints exactly, and a resumed run mixes the same."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers_training import tiny_trainer

from zoo.errors import ZooError
from zoo.train.recipes import load_recipe
from zoo.train.resume import load_state, save_state
from zoo.train.trainer import ResumeState, Trainer, interpolate


def _trainer(alphas: list[float] | None, **callbacks) -> Trainer:
    return tiny_trainer({"epochs": 2, "warmup": {"epochs": 2, "lr": 0.01, "views": 1},
                         "wise_ft": None if alphas is None else {"alphas": alphas}},
                        pretrained=True, **callbacks)


def _fit(alphas: list[float] | None) -> tuple[Trainer, dict[str, torch.Tensor]]:
    """A trained trainer and its weights after the head stage (the warmed-up model)."""
    warmed: dict[str, torch.Tensor] = {}

    def keep_head(state: ResumeState) -> None:
        if state.stage == 1 and state.epoch == 0:
            warmed.update({k: v.clone() for k, v in state.model.items()})

    trainer = _trainer(alphas, on_checkpoint=keep_head)
    trainer.fit(pretrained=True)
    return trainer, warmed


def _assert_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_alpha_one_is_the_fine_tuned_model_and_zero_the_warmed_up_one() -> None:
    plain, warmed = _fit(None)
    one, _ = _fit([1.0])
    zero, _ = _fit([0.0])
    _assert_equal(one.model.state_dict(), plain.model.state_dict())
    _assert_equal(zero.model.state_dict(), warmed)
    assert plain.wise_ is None and one.wise_["alpha"] == 1.0 and zero.wise_["alpha"] == 0.0
    assert not torch.equal(warmed["stem.0.0.weight"], plain.model.state_dict()["stem.0.0.weight"])


def test_the_mix_that_validates_best_is_kept() -> None:
    plain, warmed = _fit(None)
    mixed, _ = _fit([0.0, 0.5, 1.0])
    curve = mixed.wise_["curve"]
    assert [row["alpha"] for row in curve] == [0.0, 0.5, 1.0]
    best = max(curve, key=lambda row: (row["val_accuracy"], -row["val_loss"]))
    assert mixed.wise_["alpha"] == best["alpha"]
    _assert_equal(mixed.model.state_dict(), interpolate(warmed, plain.model.state_dict(), best["alpha"]))


def test_resume_mixes_with_the_same_warmed_up_model(tmp_path: Path) -> None:
    def save_mid_fine_tuning(state: ResumeState) -> None:
        if state.stage == 1 and state.epoch == 1:
            save_state(tmp_path, state)

    straight = _trainer([0.0, 0.3, 0.7, 1.0], on_checkpoint=save_mid_fine_tuning)
    straight.fit(pretrained=True)
    saved = load_state(tmp_path)
    assert saved.anchor and set(saved.anchor) == set(straight.model.state_dict())

    resumed = _trainer([0.0, 0.3, 0.7, 1.0])
    resumed.fit(pretrained=True, resume=saved)
    assert resumed.wise_ == straight.wise_
    _assert_equal(resumed.model.state_dict(), straight.model.state_dict())


@pytest.mark.parametrize("sets, message", [
    (["train.wise_ft.alphas=[0.5, 1.5]"], "distinct numbers from 0 to 1"),
    (["train.wise_ft.alphas=[0.5, 0.5]"], "distinct numbers from 0 to 1"),
    (["train.wise_ft.alphas=[]"], "at least 1"),
    (["train.wise_ft={}", "train.warmup=null"], "needs a train.warmup stage"),
    (["train.wise_ft={}", "train.epochs=0"], "needs a train.warmup stage"),
    (["train.wise_ft={}", "model.pretrained=false"], "needs model.pretrained: true"),
    (["train.wise_ft.alpha=0.5"], "did you mean 'alphas'"),
])
def test_recipe_errors(sets: list[str], message: str) -> None:
    with pytest.raises(ZooError, match=message):
        load_recipe("tf_efficientnet_lite0", sets)


def test_default_alphas() -> None:
    recipe, _ = load_recipe("tf_efficientnet_lite0", ["train.wise_ft={}"])
    assert recipe.train.wise_ft.alphas == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
