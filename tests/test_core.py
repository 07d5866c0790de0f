"""Unit tests of the foundation on tiny generated data: splits, registry, weights, training."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import make_dataset
from zoo.data.dataset import scan_dataset
from zoo.data.splits import cross_validation_folds, get_split, make_split
from zoo.errors import WeightsNotFoundError, ZooError
from zoo.models.factory import build_model, check_model_name, preprocessing_of
from zoo.models.inference import pooled_features
from zoo.models.weights import create_pretrained, local_weights
from zoo.train.batches import FEATURE_VIEW_EPOCH, epoch_seed
from zoo.train.recipes import EarlyStopping, load_recipe
from zoo.train.trainer import EarlyStopper


def test_split_is_stratified_deterministic_and_keeps_duplicates_together(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", per_class=10)
    shutil.copy(root / "pyrite" / "000.png", root / "pyrite" / "copy-of-000.png")
    index = scan_dataset(root)
    split = make_split(index)
    assert make_split(scan_dataset(root)).id == split.id
    for cls in index.classes:
        got = {split.assignment[it.path] for it in index.items if it.label == cls}
        assert got == {"train", "val", "test"}
    assert split.assignment["pyrite/000.png"] == split.assignment["pyrite/copy-of-000.png"]
    assert split.groups["pyrite/000.png"] == split.groups["pyrite/copy-of-000.png"]


def test_cross_validation_folds_partition_train_val_and_keep_test(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", per_class=15)
    shutil.copy(root / "pyrite" / "000.png", root / "pyrite" / "copy-of-000.png")
    index = scan_dataset(root)
    split = make_split(index)
    folds = cross_validation_folds(split, index, 3)
    pool = {p for p, s in split.assignment.items() if s != "test"}
    val_sets = [set(f.paths("val")) for f in folds]
    assert set().union(*val_sets) == pool and sum(map(len, val_sets)) == len(pool)  # each once
    for fold in folds:
        assert fold.paths("test") == split.paths("test")
        assert set(fold.paths("train")) == pool - set(fold.paths("val"))
        assert fold.assignment["pyrite/000.png"] == fold.assignment["pyrite/copy-of-000.png"]
        assert {it.label for it in index.items if it.path in fold.paths("val")} == set(index.classes)
    assert [f.assignment for f in cross_validation_folds(split, index, 3)] == [f.assignment for f in folds]
    with pytest.raises(ZooError, match="at least 2 folds"):
        cross_validation_folds(split, index, 1)


def test_split_is_fixed_once_and_reports_new_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZOO_SPLITS_DIR", str(tmp_path / "splits"))
    root = make_dataset(tmp_path / "d", per_class=6)
    first, _ = get_split(scan_dataset(root))
    make_dataset(tmp_path / "extra", per_class=1, seed=9)
    shutil.copy(tmp_path / "extra" / "pyrite" / "000.png", root / "pyrite" / "new.png")
    again, notes = get_split(scan_dataset(root))
    assert again.id == first.id
    assert any("not in split" in n for n in notes)


def test_class_with_too_few_images_is_a_clear_error(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", per_class=6)
    for f in sorted((root / "pyrite").iterdir())[2:]:
        f.unlink()
    with pytest.raises(ZooError, match=r"pyrite \(2\).*at least 3"):
        make_split(scan_dataset(root))


def test_custom_cnn_shares_the_timm_head_api() -> None:
    model = build_model("custom_cnn", 5).eval()
    x = torch.randn(2, 3, 32, 32)
    feats = pooled_features(model, x)
    assert feats.shape == (2, model.num_features)
    assert torch.allclose(model(x), model.get_classifier()(feats))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3)
    assert preprocessing_of(model).image_size == 128


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(ZooError, match="Did you mean.*resnet50"):
        check_model_name("resnet5O")


def test_missing_pretrained_weights_name_all_three_remedies(zoo_env: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        create_pretrained("resnet18", 3)
    message = str(info.value)
    assert "--weights" in message and "ZOO_WEIGHTS_DIR" in message and "hub" in message
    assert "model.pretrained=false" in message


def test_weights_resolve_explicit_then_weights_dir(tmp_path: Path, monkeypatch) -> None:
    source = build_model("custom_cnn", 3)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    (tmp_path / "dir").mkdir()
    save_file(state, str(tmp_path / "dir" / "custom_cnn.safetensors"))
    save_file(state, str(tmp_path / "explicit.safetensors"))
    monkeypatch.setenv("ZOO_WEIGHTS_DIR", str(tmp_path / "dir"))
    assert local_weights("custom_cnn") == tmp_path / "dir" / "custom_cnn.safetensors"
    assert local_weights("custom_cnn", tmp_path / "explicit.safetensors") == tmp_path / "explicit.safetensors"
    model, where = create_pretrained("custom_cnn", 7)  # new 7-class head, backbone from the file
    assert where.endswith("custom_cnn.safetensors")
    assert torch.equal(model.stem[0][0].weight, source.stem[0][0].weight)
    with pytest.raises(ZooError, match="not found"):
        local_weights("custom_cnn", tmp_path / "nope.safetensors")


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    state = {"foo.weight": torch.zeros(3, 3)}
    save_file(state, str(tmp_path / "custom_cnn.safetensors"))
    with pytest.raises(ZooError, match="do not fit"):
        create_pretrained("custom_cnn", 3, weights=tmp_path)


def test_recipe_inheritance_and_overrides() -> None:
    recipe, source = load_recipe("tf_efficientnet_lite0", ["train.lr=1e-4", "data.image_size=64"])
    assert recipe.model.name == "tf_efficientnet_lite0" and recipe.model.pretrained
    assert recipe.train.lr == 1e-4 and recipe.data.image_size == 64
    assert recipe.train.warmup is not None  # inherited from defaults.yaml
    bare, source = load_recipe("convnext_atto")
    assert bare.model.name == "convnext_atto" and "defaults" in source
    with pytest.raises(ZooError, match="train.lr"):
        load_recipe("custom_cnn", ["train.lr=-1"])


def test_early_stopper_patience_and_min_delta() -> None:
    stopper = EarlyStopper(EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01))
    assert stopper.step(1.0)
    assert not stopper.step(0.995)  # not better by min_delta
    assert stopper.step(0.9)
    assert not stopper.step(0.95) and not stopper.should_stop
    assert not stopper.step(0.95) and stopper.should_stop
    up = EarlyStopper(EarlyStopping(monitor="val_accuracy", patience=1))
    assert up.cfg.mode == "max" and up.step(0.5, 1.0) and up.step(0.6, 0.9) and not up.step(0.55, 0.1)
    assert up.step(0.6, 0.8)          # same accuracy, lower validation loss: a new best
    assert not up.step(0.6, 0.85)     # same accuracy, higher loss: not better
    assert up.should_stop


def test_registry_refuses_a_duplicate_name() -> None:
    from zoo.models.registry import register_model

    def custom_cnn(num_classes: int = 7):  # same name as the built-in
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model(custom_cnn)


def test_epoch_seeds_are_those_saved_runs_were_trained_with() -> None:
    assert epoch_seed(3, 4) == 3004  # shuffling and augmentation, any stage
    assert epoch_seed(3, 4, stage=1) == 3104  # dropout in the second stage
    assert epoch_seed(3, FEATURE_VIEW_EPOCH + 1) == 13_001  # the second cached-feature view
