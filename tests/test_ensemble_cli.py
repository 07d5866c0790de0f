"""`zoo ensemble` on fabricated run folders: fitted on validation only, refusals name the member."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from zoo.cli import app
from zoo.models.factory import build_model, count_params
from zoo.store.leaderboard import record
from zoo.store.runs import save_predictions, save_weights, write_meta

CLASSES = ["biotite", "pyrite", "quartz"]
TINY = {"widths": [4, 8]}
PRE = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bicubic", "crop_pct": 0.875}


def _fake_run(home: Path, name: str, accuracy: float, seed: int, **meta_over) -> None:
    """A finished run (a tiny untrained checkpoint) whose stored predictions are right with
    probability ``accuracy``."""
    rng = np.random.default_rng(seed)
    model = build_model("custom_cnn", len(CLASSES), **TINY)
    save_weights(home / name / "model.safetensors", model)
    meta = {"name": name, "kind": "model", "status": "finished", "model": "custom_cnn",
            "model_kwargs": TINY, "preprocessing": PRE, "classes": CLASSES, "split_id": "split-a",
            "dataset": "d", "params": count_params(model), "fit_seconds": 1.0,
            "infer_img_per_s": 100.0, "metrics": {"val": {"accuracy": accuracy},
                                                  "test": {"accuracy": accuracy}}} | meta_over
    for split, n in (("val", 60), ("test", 60)):
        labels = np.arange(n) % len(CLASSES)
        right = rng.random(n) < accuracy
        guess = np.where(right, labels, (labels + 1) % len(CLASSES))
        probs = np.full((n, len(CLASSES)), 0.1)
        probs[np.arange(n), guess] = 0.8
        save_predictions(home / name, split, [f"{split}/{i}.jpg" for i in range(n)], labels, probs)
    write_meta(home / name, meta)
    record(meta, home)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    _fake_run(tmp_path, "good", 0.95, 1)
    _fake_run(tmp_path, "okay", 0.7, 2)
    _fake_run(tmp_path, "poor", 0.5, 3)
    return tmp_path


def test_weighted_ensemble_is_ranked_with_weights_shown(home: Path) -> None:
    result = CliRunner().invoke(app, ["ensemble", "--members", "good,okay,poor", "--method",
                                      "weighted", "--name", "w"])
    assert result.exit_code == 0, result.output
    assert "weights:" in result.output and "good=" in result.output
    meta = json.loads((home / "w" / "meta.json").read_text())
    weights = meta["ensemble"]["state"]["weights"]
    assert weights[0] > weights[2]  # the better member weighs more
    board = json.loads(CliRunner().invoke(app, ["leaderboard", "--format", "json"]).stdout)
    row = next(r for r in board if r["name"] == "w")
    assert row["kind"] == "ensemble" and row["members"] == "good,okay,poor"
    assert (home / "w" / "predictions" / "test.npz").is_file()
    assert meta["calibration"]["temperature"] == 1.0  # voting keeps the members' calibration


def test_stacking_is_calibrated_on_out_of_fold_probabilities(home: Path) -> None:
    result = CliRunner().invoke(app, ["ensemble", "--members", "good,okay", "--method", "stack",
                                      "--name", "s"])
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "s" / "meta.json").read_text())
    assert meta["calibration"]["temperature"] != 1.0 and "out-of-fold" in result.output


def test_top_k_picks_the_best_models_on_validation(home: Path) -> None:
    for name, val_acc in (("good", 0.9), ("okay", 0.8), ("poor", 0.5)):
        meta = json.loads((home / name / "meta.json").read_text())
        meta["metrics"] = {"val": {"accuracy": val_acc}, "test": {"accuracy": 0.1}}
        record(meta, home)
    result = CliRunner().invoke(app, ["ensemble", "--top", "2", "--name", "t"])
    assert result.exit_code == 0, result.output
    assert json.loads((home / "t" / "meta.json").read_text())["members"] == ["good", "okay"]


@pytest.mark.parametrize("change, message", [
    ({"classes": ["a", "b", "c"]}, "classes"),
    ({"model_kwargs": {"widths": [4, 16]}}, "does not fit"),
    ({"split_id": "split-b"}, "split"),
    ({"status": "running"}, "did not finish"),
])
def test_mismatched_members_are_refused_by_name(home: Path, change: dict, message: str) -> None:
    _fake_run(home, "odd", 0.9, 4, **change)
    result = CliRunner().invoke(app, ["ensemble", "--members", "good,odd"])
    assert result.exit_code == 2
    assert "'odd'" in result.output and message in result.output


def test_member_without_predictions_is_refused(home: Path) -> None:
    (home / "okay" / "predictions" / "val.npz").unlink()
    result = CliRunner().invoke(app, ["ensemble", "--members", "good,okay"])
    assert result.exit_code == 2 and "okay" in result.output and "predictions" in result.output


def test_the_leaderboard_shows_ece_before_and_after_the_temperature(home: Path) -> None:
    result = CliRunner().invoke(app, ["ensemble", "--members", "good,okay", "--method", "soft", "--name", "s"])
    assert result.exit_code == 0, result.output
    meta = json.loads((home / "s" / "meta.json").read_text())
    board = {r["name"]: r for r in json.loads(CliRunner().invoke(app, ["leaderboard", "--format", "json"]).stdout)}
    assert board["s"]["ece_uncalibrated"] == pytest.approx(meta["metrics"]["test"]["ece_uncalibrated"])
    assert board["s"]["ece"] == pytest.approx(meta["metrics"]["test"]["ece"])
    table = CliRunner().invoke(app, ["leaderboard", "--format", "markdown"]).stdout
    assert "| ECE | ECE raw |" in table
