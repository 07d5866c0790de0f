"""``train.balance``: the class-balanced draw of an epoch (photos and cached features, split
across ranks), balanced loss weights with label smoothing, resumable training, and ``none``
keeping today's shuffled order."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers_training import random_split
from sklearn.utils.class_weight import compute_class_weight

from zoo.errors import ZooError
from zoo.models.factory import build_model, preprocessing_of
from zoo.train.balance import class_weights
from zoo.train.batches import PhotoBatches, SplitArrays, epoch_order, epoch_seed, feature_batches
from zoo.train.recipes import Recipe, load_recipe
from zoo.train.resume import load_state, save_state
from zoo.train.trainer import ResumeState, Trainer

SIZE, CLASSES = 32, 3
LABELS = np.repeat(np.arange(CLASSES), [4, 6, 14])  # 24 photos, 4 to 14 a class


def _split(side: int, seed: int, labels: np.ndarray = LABELS) -> SplitArrays:
    split = random_split(len(labels), side, seed)
    return SplitArrays(split.paths, split.arrays, labels.copy())


def _recipe(balance: str, epochs: int = 1, warmup: dict | None = None) -> Recipe:
    return Recipe.model_validate({
        "model": {"name": "custom_cnn", "pretrained": warmup is not None,
                  "kwargs": {"widths": [8, 16]}},
        "data": {"image_size": SIZE, "batch_size": 4},
        "train": {"epochs": epochs, "lr": 0.01, "balance": balance, "warmup": warmup,
                  "early_stopping": {"patience": 50}},
        "seed": 2,
    })


def _trainer(recipe: Recipe, **callbacks) -> Trainer:
    torch.manual_seed(0)
    model = build_model("custom_cnn", CLASSES, widths=(8, 16))
    pre = preprocessing_of(model, SIZE)
    return Trainer(model, pre, recipe, _split(pre.resize_side, 1), random_split(6, pre.resize_side, 2),
                   **callbacks)


def test_balanced_draw_visits_every_class_about_equally() -> None:
    labels = np.repeat(np.arange(4), [68, 100, 150, 233])
    draws = [epoch_order(labels, 0, epoch, "sampler") for epoch in range(200)]
    assert all(len(d) == len(labels) and d.min() >= 0 and d.max() < len(labels) for d in draws)
    share = np.bincount(labels[np.concatenate(draws)]) / (200 * len(labels))
    np.testing.assert_allclose(share, 0.25, atol=0.01)  # about 27 600 draws of each class
    assert np.bincount(labels[np.concatenate([epoch_order(labels, 0, e) for e in range(200)])]).tolist() \
        == [200 * n for n in (68, 100, 150, 233)]  # unbalanced: every photo once an epoch


def test_balanced_draw_depends_on_seed_and_epoch_alone() -> None:
    same = [epoch_order(LABELS, 3, 5, "sampler") for _ in range(2)]
    np.testing.assert_array_equal(*same)
    for seed, epoch in ((3, 6), (4, 5)):
        assert not np.array_equal(same[0], epoch_order(LABELS, seed, epoch, "sampler"))


@pytest.mark.parametrize("balance", ["none", "loss"])
def test_other_modes_keep_the_seeded_permutation(balance: str) -> None:
    perm = np.random.default_rng(epoch_seed(3, 5)).permutation(len(LABELS))
    np.testing.assert_array_equal(epoch_order(LABELS, 3, 5, balance), perm)
    photos = PhotoBatches(_split(8, 0), preprocessing_of(build_model("custom_cnn", 3), SIZE),
                          _recipe(balance))
    np.testing.assert_array_equal(photos.order(5), np.random.default_rng(epoch_seed(2, 5)).permutation(24))


@pytest.mark.parametrize("world_size", [1, 2, 5])
def test_ranks_share_the_balanced_draw(world_size: int) -> None:
    split, recipe = _split(8, 0), _recipe("sampler")
    pre = preprocessing_of(build_model("custom_cnn", 3), SIZE)
    orders = [PhotoBatches(split, pre, recipe, r, world_size).order(4) for r in range(world_size)]
    per_rank = -(-len(LABELS) // world_size)
    draw = epoch_order(LABELS, recipe.seed, 4, "sampler")
    np.testing.assert_array_equal(np.stack(orders, 1).ravel(), np.resize(draw, per_rank * world_size))


def test_cached_features_follow_the_balanced_draw() -> None:
    x, y = torch.arange(len(LABELS), dtype=torch.float32)[:, None], torch.from_numpy(LABELS)
    draw = epoch_order(LABELS, 7, 2, "sampler")
    batches = list(feature_batches(x, y, 7, 2, "sampler", batch_size=5))
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 4]
    np.testing.assert_array_equal(torch.cat([b[0] for b in batches]).long().ravel().numpy(), draw)
    np.testing.assert_array_equal(torch.cat([b[1] for b in batches]).numpy(), LABELS[draw])
    plain = torch.cat([b[0] for b in feature_batches(x, y, 7, 2)]).long().ravel().numpy()
    np.testing.assert_array_equal(plain, np.random.default_rng(epoch_seed(7, 2)).permutation(len(LABELS)))


def test_loss_weights_are_sklearns_balanced_weights_with_label_smoothing() -> None:
    expected = compute_class_weight("balanced", classes=np.arange(CLASSES), y=LABELS)
    torch.testing.assert_close(class_weights(LABELS, CLASSES), torch.tensor(expected, dtype=torch.float32))
    assert class_weights(np.array([0, 0, 2]), 3).tolist() == [0.5, 0.0, 1.0]  # no photos: weight 0

    trainer = _trainer(_recipe("loss"))
    logits, y = torch.randn(8, CLASSES), torch.tensor([0, 1, 2, 2, 2, 1, 0, 2])
    w, eps = torch.tensor(expected, dtype=torch.float32), trainer.cfg.label_smoothing
    logp = logits.log_softmax(1)
    per_photo = -(1 - eps) * logp[range(8), y] * w[y] - eps / CLASSES * (logp * w).sum(1)
    torch.testing.assert_close(trainer.loss_fn(logits, y), per_photo.sum() / w[y].sum())
    assert _trainer(_recipe("none")).loss_fn.weight is None
    assert _trainer(_recipe("sampler")).loss_fn.weight is None


def test_validation_loss_stays_unweighted() -> None:
    trainer = _trainer(_recipe("loss"))
    stage = trainer.finetune_stage()
    val_loss, _ = trainer.validate(stage)
    with torch.inference_mode():
        trainer.model.eval()
        logits = stage.val_logits()
    assert val_loss == pytest.approx(F.cross_entropy(logits, trainer.val_labels).item(), rel=1e-6)


WARMUP = {"epochs": 1, "lr": 0.01, "cached_features": True, "views": 1}


@pytest.mark.parametrize("balance", ["none", "sampler", "loss"])
@pytest.mark.parametrize("warmup", [None, WARMUP], ids=["photos", "cached-head"])
def test_one_epoch_trains_in_each_mode(balance: str, warmup: dict | None) -> None:
    trainer = _trainer(_recipe(balance, warmup=warmup))
    history = trainer.fit(pretrained=warmup is not None)
    assert [r["stage"] for r in history] == (["warmup", "finetune"] if warmup else ["finetune"])
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in history)


@pytest.mark.parametrize("stop", [(0, 1), (1, 1)], ids=["in-head-stage", "in-fine-tuning"])
def test_resume_with_sampler_ends_where_an_uninterrupted_run_ends(tmp_path: Path, stop) -> None:
    recipe = _recipe("sampler", epochs=3, warmup=dict(WARMUP, epochs=2))

    def save_at_stop(state: ResumeState) -> None:
        if (state.stage, state.epoch) == stop:
            save_state(tmp_path, state)

    straight = _trainer(recipe, on_checkpoint=save_at_stop)
    straight.fit(pretrained=True)
    resumed = _trainer(recipe)
    resumed.fit(pretrained=True, resume=load_state(tmp_path))
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, msg=key)
    losses = [(r["train_loss"], r["val_loss"]) for r in straight.history]
    np.testing.assert_allclose([(r["train_loss"], r["val_loss"]) for r in resumed.history], losses, rtol=1e-5)


def test_balance_is_validated() -> None:
    assert load_recipe("custom_cnn")[0].train.balance == "none"
    assert load_recipe("custom_cnn", ["train.balance=sampler"])[0].train.balance == "sampler"
    with pytest.raises(ZooError, match=r"train\.balance: Input should be 'none', 'sampler' or 'loss' "
                                       r"\(got 'weights'\)"):
        load_recipe("custom_cnn", ["train.balance=weights"])
