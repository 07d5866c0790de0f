"""Partial fine-tuning (``train.frozen_groups``): the first layer groups keep their weights and
batch-norm statistics while the rest of the network trains."""
from __future__ import annotations

import pytest
import torch
from helpers_training import random_split

from zoo.errors import ZooError
from zoo.models.factory import build_model, preprocessing_of
from zoo.train.recipes import Recipe
from zoo.train.trainer import Trainer, leading_groups

SIZE, CLASSES = 32, 3


def _recipe(frozen_groups: int, freeze_bn_stats: bool = False) -> Recipe:
    return Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": False, "kwargs": {"widths": [8, 16, 32]}},
        "data": {"image_size": SIZE, "batch_size": 8},
        "train": {"epochs": 1, "lr": 0.05, "warmup": None, "frozen_groups": frozen_groups,
                  "freeze_bn_stats": freeze_bn_stats},
    })


def _trained(frozen_groups: int, freeze_bn_stats: bool = False) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = build_model("custom_cnn", CLASSES, widths=(8, 16, 32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    side = preprocessing_of(model, SIZE).resize_side
    trainer = Trainer(model, preprocessing_of(model, SIZE), _recipe(frozen_groups, freeze_bn_stats),
                      random_split(16, side, 1), random_split(6, side, 2))
    trainer.fit(pretrained=False)
    return before, trainer.model.state_dict()


def test_frozen_groups_keep_weights_and_batchnorm_statistics() -> None:
    before, after = _trained(frozen_groups=2)  # the stem and the first stage
    frozen = [k for k in before if k.startswith(("stem.", "stages.0."))]
    trained = [k for k in before if k.startswith(("stages.2.", "classifier."))
               and before[k].is_floating_point()]
    assert frozen and trained
    for key in frozen:  # weights, biases and running statistics alike
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert all(not torch.equal(after[k], before[k]) for k in trained)


def test_no_frozen_groups_trains_every_layer() -> None:
    before, after = _trained(frozen_groups=0)
    assert not torch.equal(after["stem.0.0.weight"], before["stem.0.0.weight"])


def test_freeze_bn_stats_keeps_running_statistics_but_trains_scales() -> None:
    before, after = _trained(frozen_groups=0, freeze_bn_stats=True)
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    scales = [k for k in before if k.startswith("stages.2.") and k.endswith(".1.weight")]
    assert stats and scales
    for key in stats:
        torch.testing.assert_close(after[key], before[key], rtol=0, atol=0, msg=key)
    assert all(not torch.equal(after[k], before[k]) for k in scales)
    assert not torch.equal(after["stem.0.0.weight"], before["stem.0.0.weight"])


def test_leading_groups_follow_timm_group_order() -> None:
    model = build_model("tf_efficientnet_lite0", CLASSES)
    names = {n for n, m in model.named_modules() if any(m is g for g in leading_groups(model, 2))}
    assert {"conv_stem", "bn1", "blocks.0.0.conv_dw"} <= names
    assert not any(n.startswith(("blocks.1", "conv_head", "classifier")) for n in names)


def test_freezing_the_whole_backbone_is_a_clear_error() -> None:
    model = build_model("custom_cnn", CLASSES, widths=(8, 16, 32))
    with pytest.raises(ZooError, match="whole backbone.*4 layer groups"):
        leading_groups(model, 4)


def test_layer_decay_gives_earlier_layer_groups_smaller_learning_rates() -> None:
    recipe = Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": False, "kwargs": {"widths": [8, 16, 32]}},
        "data": {"image_size": SIZE, "batch_size": 8},
        "train": {"epochs": 1, "lr": 0.01, "warmup": None, "layer_decay": 0.5},
    })
    model = build_model("custom_cnn", CLASSES, widths=(8, 16, 32))
    side = preprocessing_of(model, SIZE).resize_side
    trainer = Trainer(model, preprocessing_of(model, SIZE), recipe, random_split(8, side, 1),
                      random_split(4, side, 2))
    opt = trainer.optimizer_for(trainer.finetune_stage())
    lr = {name: g["lr"] for name, p in model.named_parameters()
          for g in opt.param_groups if any(p is q for q in g["params"])}
    assert len(lr) == len(list(model.parameters()))  # every parameter trains
    head = [v for k, v in lr.items() if k.startswith("classifier")]
    assert head and all(v == pytest.approx(0.01) for v in head)
    assert lr["stem.0.0.weight"] < lr["stages.2.conv1.0.weight"] < 0.01
