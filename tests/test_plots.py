import math
import warnings

import numpy as np
import pytest
from PIL import Image

from zoo.report.plots import plot_confusion_matrix, plot_learning_curves, plot_reliability, plot_top_losses


def _assert_png(path):
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width > 100 and im.height > 100


def test_learning_curves_with_stage_change_and_missing_values(tmp_path):
    history = [
        {"epoch": 1, "stage": "warmup", "train_loss": 2.0, "val_loss": 1.9, "val_accuracy": 0.3},
        {"epoch": 2, "stage": "warmup", "train_loss": 1.5, "val_loss": None},
        {"epoch": 3, "stage": "finetune", "train_loss": 1.0, "val_loss": 1.1,
         "val_accuracy": math.nan},
        {"epoch": 4, "stage": "finetune", "train_loss": 0.8, "val_loss": 1.0, "val_accuracy": 0.7},
    ]
    out = plot_learning_curves(history, tmp_path / "plots" / "learning_curves.png")
    assert out == tmp_path / "plots" / "learning_curves.png"
    _assert_png(out)


def test_learning_curves_from_csv_strings_with_per_stage_epochs(tmp_path):
    history = [
        {"epoch": "1", "stage": "warmup", "train_loss": "1.2", "val_loss": "", "val_accuracy": ""},
        {"epoch": "1", "stage": "finetune", "train_loss": "0.9", "val_loss": "1.0",
         "val_accuracy": "0.6"},
        {"epoch": "2", "stage": "finetune", "train_loss": "0.7", "val_loss": "0.9",
         "val_accuracy": "0.65"},
    ]
    _assert_png(plot_learning_curves(history, tmp_path / "lc.png"))


def test_learning_curves_without_accuracy(tmp_path):
    history = [{"epoch": e, "stage": "train", "train_loss": 1 / e} for e in range(1, 4)]
    _assert_png(plot_learning_curves(history, tmp_path / "lc.png"))


def test_confusion_matrix_with_zero_row_warns_nothing(tmp_path):
    classes = ["quartz", "pyrite", "amethyst crystal", "calcite"]
    confusion = np.array([[5, 1, 0, 0], [0, 0, 0, 0], [1, 0, 7, 2], [0, 0, 1, 4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        out = plot_confusion_matrix(confusion, classes, tmp_path / "confusion.png")
    _assert_png(out)


def test_confusion_matrix_shape_must_match_classes(tmp_path):
    with pytest.raises(ValueError):
        plot_confusion_matrix(np.zeros((3, 3), dtype=int), ["a", "b"], tmp_path / "c.png")


def test_reliability_diagram(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=200)
    y = rng.integers(0, 4, size=200)
    _assert_png(plot_reliability(y, probs, tmp_path / "reliability.png", n_bins=10))


def test_top_losses_grid(tmp_path):
    images = [Image.new("RGB", (48, 32), (200, 30, 30)), Image.new("L", (32, 32), 128),
              Image.new("RGBA", (40, 40), (0, 0, 255, 128)),
              Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), np.uint8))
              .convert("RGB"), Image.new("RGB", (32, 32))]
    titles = [f"true: quartz\npred: pyrite ({p:.2f})" for p in (0.91, 0.8, 0.7, 0.6, 0.5)]
    _assert_png(plot_top_losses(images, titles, tmp_path / "top_losses.png", ncols=3))


def test_top_losses_rejects_mismatched_titles(tmp_path):
    with pytest.raises(ValueError):
        plot_top_losses([Image.new("RGB", (8, 8))], [], tmp_path / "t.png")
