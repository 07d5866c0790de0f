"""Cached-feature warm start: training the head on cached pooled features is the same as
training it through the frozen model on the same augmented images."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers_training import random_split

from zoo.data.transforms import to_tensor
from zoo.models.factory import build_model, preprocessing_of
from zoo.models.inference import pooled_features, predict_logits
from zoo.train.batches import FEATURE_VIEW_EPOCH, SplitArrays, epoch_seed
from zoo.train.recipes import Recipe
from zoo.train.trainer import Stage, Trainer

SIZE, CLASSES, N_TRAIN, N_VAL = 32, 3, 20, 6


def _recipe(cached: bool, optimizer: str = "sgd") -> Recipe:
    """A warm-up-only recipe (warm-up is for pretrained backbones; the tests pass the model)."""
    return Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": True,
                  "kwargs": {"drop_rate": 0.0, "widths": [8, 16]}},
        "data": {"image_size": SIZE, "batch_size": 8},
        "train": {"optimizer": optimizer, "epochs": 0, "weight_decay": 0.02,
                  "warmup": {"epochs": 1, "lr": 0.5, "cached_features": cached, "views": 1}},
        "seed": 3,
    })


@pytest.fixture
def setup() -> tuple[nn.Module, SplitArrays, SplitArrays]:
    torch.manual_seed(0)
    model = build_model("custom_cnn", CLASSES, drop_rate=0.0, widths=(8, 16))
    side = preprocessing_of(model, SIZE).resize_side
    return model, random_split(N_TRAIN, side, 1), random_split(N_VAL, side, 2)


@pytest.mark.parametrize("name", ["custom_cnn", "tf_efficientnet_lite0", "mobilenetv3_small_050"])
def test_pooled_features_are_the_classifier_input(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, CLASSES).eval()
    seen: list[torch.Tensor] = []
    model.get_classifier().register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.inference_mode():
        logits = model(x)
        assert len(seen) == 1 and logits.shape == (4, CLASSES)
        feats = pooled_features(model, x)
        from_feats = model.get_classifier()(feats)
    torch.testing.assert_close(feats, seen[0])
    torch.testing.assert_close(from_feats, logits)


def _one_step(trainer: Trainer, stage: Stage) -> float:
    """One optimisation step as a stage's first epoch runs it (optimizer, schedule, modes)."""
    opt = trainer.optimizer_for(stage)
    return trainer.train_epoch(stage, 0, opt, trainer.scheduler_for(opt, stage.n_batches))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_head_step_on_cached_features_equals_step_through_frozen_model(setup, optimizer: str) -> None:
    model, train, val = setup
    pre = preprocessing_of(model, SIZE)
    cached = Trainer(copy.deepcopy(model), pre, _recipe(True, optimizer), train, val)
    direct = Trainer(copy.deepcopy(model), pre, _recipe(False, optimizer), train, val)
    before = copy.deepcopy(direct.model.state_dict())
    head_keys = {k for k in before if k.startswith("classifier.")}

    # The augmented views the cached features were computed from, in the same order.
    seed = epoch_seed(direct.recipe.seed, FEATURE_VIEW_EPOCH)
    views = to_tensor([direct.photos.dataset[seed, i][0] for i in range(len(train))], pre)
    with torch.inference_mode():
        direct.model.eval()
        expected = pooled_features(direct.model, views)
    feats, labels = cached.photos.features(cached.model, views=1)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), train.labels)

    stage_c = cached.head_stage()
    (x_c, y_c), = list(stage_c.batches(0))  # one shuffled batch of all cached features
    order = torch.cdist(x_c, expected).argmin(1)  # which image each feature row came from
    torch.testing.assert_close(x_c, expected[order], rtol=1e-5, atol=1e-6)
    assert sorted(order.tolist()) == list(range(N_TRAIN))
    np.testing.assert_array_equal(y_c.numpy(), train.labels[order.numpy()])

    stage_d = direct.head_stage()  # photos through the model, backbone frozen
    stage_d = dataclasses.replace(stage_d, n_batches=1,
                                  batches=lambda epoch: iter([(views[order], y_c)]))
    cached.model.train(), direct.model.train()  # as a freshly built model: the trainer sets modes
    loss_c, loss_d = _one_step(cached, stage_c), _one_step(direct, stage_d)

    assert loss_c == pytest.approx(loss_d, rel=1e-5)
    after_c, after_d = cached.model.state_dict(), direct.model.state_dict()
    for key in head_keys:
        moved = after_d[key] - before[key]
        assert moved.abs().max() > 1e-3, f"{key} did not train"
        torch.testing.assert_close(after_c[key] - before[key], moved, rtol=1e-4, atol=1e-6)
    for key in before.keys() - head_keys:  # frozen: weights and batch-norm statistics untouched
        torch.testing.assert_close(after_d[key], before[key], rtol=0, atol=0)


def test_cached_validation_logits_equal_full_model(setup) -> None:
    model, train, val = setup
    pre = preprocessing_of(model, SIZE)
    trainer = Trainer(copy.deepcopy(model), pre, _recipe(True), train, val)
    stage = trainer.head_stage()
    with torch.inference_mode():
        cached_logits = stage.val_logits()
    full_logits = predict_logits(trainer.model, val.arrays, pre, batch_size=4)
    torch.testing.assert_close(cached_logits, full_logits, rtol=1e-5, atol=1e-5)
