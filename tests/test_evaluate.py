"""`zoo evaluate`, TTA, the leaderboard's TTA rows and `--on`, and `zoo report` on tiny real runs."""
from __future__ import annotations

import base64
import json
import math
import re

import numpy as np
import pytest
from helpers_eval import COLOURS, invoke, is_png, private_copy, write_photos
from PIL import Image

from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array
from zoo.data.tta import TTA_VIEWS, tta_views
from zoo.evaluate.metrics import classification_metrics
from zoo.evaluate.predictor import load_predictor
from zoo.store import leaderboard as lb
from zoo.store.runs import load_predictions, read_meta


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


def test_metrics_match_hand_computed_values():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.70, 0.20, 0.10],    # true a, predicted a
                      [0.45, 0.50, 0.05],    # true a, predicted b
                      [0.20, 0.62, 0.18],    # true b, predicted b
                      [0.10, 0.28, 0.62]])   # true b, predicted c (a class absent from y)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        m = classification_metrics(y, probs, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["balanced_accuracy"] == pytest.approx(0.5)             # recall a = b = 1/2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)      # over present classes a, b
    assert m["nll"] == pytest.approx(-(math.log(0.7) + math.log(0.45) + math.log(0.62)
                                       + math.log(0.28)) / 4)
    # 15 bins: 0.7 alone (gap 0.3), 0.5 alone (gap 0.5), two at 0.62 (1 right: gap 0.12)
    assert m["ece"] == pytest.approx(0.3 / 4 + 0.5 / 4 + 0.12 / 2)
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3,
                                                 "support": 2})
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5,
                                                 "support": 2})
    assert m["per_class"]["c"]["support"] == 0
    assert m["confusion"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_tta_views_are_flips_turn_and_wide_crop():
    pre = Preprocessing(8, (0.5,) * 3, (0.5,) * 3, crop_pct=0.8)
    photo = np.random.default_rng(0).integers(0, 256, (10, 14, 3), dtype=np.uint8)
    views = tta_views(photo, pre)
    base = eval_array(photo, pre)
    assert len(views) == len(TTA_VIEWS) == 5
    assert all(v.shape == (8, 8, 3) for v in views)
    np.testing.assert_array_equal(views[0], base)
    np.testing.assert_array_equal(views[1], base[:, ::-1])
    np.testing.assert_array_equal(views[2], base[::-1])
    np.testing.assert_array_equal(views[3], np.rot90(base))
    wide = np.asarray(Image.fromarray(photo).resize((11, 8), Image.Resampling.BICUBIC))[:, 1:9]
    np.testing.assert_array_equal(views[4], wide)  # whole shorter side, not the central 80 %


def test_evaluate_own_split_uses_stored_predictions(zoo_copy):
    res = invoke(["evaluate", "tiny", "--format", "json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    ev = json.loads(res.stdout)
    meta = read_meta(zoo_copy.home / "tiny")
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "nll", "ece"):
        assert ev["metrics"][key] == pytest.approx(meta["metrics"]["test"][key])
    assert ev["metrics"]["ece_uncalibrated"] == pytest.approx(meta["metrics"]["test"]["ece_uncalibrated"])
    assert ev["on"] is None and not ev["tta"]
    assert not (zoo_copy.home / "tiny" / "evaluations").exists()  # nothing new to store
    assert is_png(zoo_copy.home / "tiny" / "plots" / "top_losses.png")
    # the run's own dataset folder means its test split, not every photo in it
    again = json.loads(invoke(["evaluate", "tiny", "--data", str(zoo_copy.data), "--format", "json"]).stdout)
    assert again["metrics"]["n"] == ev["metrics"]["n"] == 3


def test_evaluate_table_shows_scores_calibration_and_classes(zoo_copy):
    res = invoke(["evaluate", "duo"])
    assert res.exit_code == 0, res.stderr
    for text in ("accuracy", "macro-F1", "NLL", "ECE (calibrated)", "ECE (before calibration)",
                 "precision", "recall", "support", *COLOURS):
        assert text in res.stdout


def test_predictor_reproduces_stored_test_probabilities(zoo_copy):
    predictor = load_predictor("tiny")
    stored = load_predictions(predictor.path, "test")
    arrays = [np.asarray(Image.open(zoo_copy.data / i).convert("RGB")) for i in stored["ids"]]
    np.testing.assert_allclose(predictor.predict_arrays(arrays), stored["probs"], atol=1e-5)
    raw = predictor.predict_arrays(arrays, calibrated=False)
    np.testing.assert_allclose(raw, stored["probs_uncalibrated"], atol=1e-5)


def test_external_folder_with_missing_unknown_and_unreadable(zoo_copy, tmp_path):
    ext = tmp_path / "museum set"
    write_photos(ext, {"Azurite": COLOURS["azurite"], "malachite": COLOURS["malachite"],
                       "gold": (230, 200, 40)}, 2, seed=7)
    (ext / "malachite" / "broken.jpg").write_bytes(b"not a photo")
    res = invoke(["evaluate", "tiny", "--data", str(ext), "--format", "json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    ev = json.loads(res.stdout)
    assert ev["on"] == "museum set"
    assert ev["metrics"]["n"] == 4                      # 2 azurite (case-insensitive) + 2 malachite
    assert ev["missing"] == ["cinnabar"]
    assert ev["unknown"] == {"gold": 2}
    assert ev["unreadable"] == [["malachite/broken.jpg", "not an image Pillow can read"]]
    assert ev["metrics"]["per_class"]["cinnabar"]["support"] == 0
    run = zoo_copy.home / "tiny"
    stored = json.loads((run / "evaluations" / "museum_set.json").read_text())
    assert stored["metrics"] == ev["metrics"]
    with np.load(run / "evaluations" / "museum_set.npz") as npz:
        assert npz["probs"].shape == (4, 3) and sorted(npz["labels"].tolist()) == [0, 0, 2, 2]
    assert is_png(run / "plots" / "confusion_matrix_museum_set.png")
    assert is_png(run / "plots" / "top_losses_museum_set.png")

    table = invoke(["evaluate", "tiny", "--data", str(ext)])
    assert "unknown class 'gold': 2 photo(s) skipped" in table.stdout
    assert "broken.jpg: not an image Pillow can read" in table.stdout
    assert "cinnabar" in table.stdout

    board = json.loads(invoke(["leaderboard", "--on", "museum set", "--format", "json"]).stdout)
    assert [r["name"] for r in board] == ["tiny"]
    assert board[0]["test_accuracy"] == pytest.approx(ev["metrics"]["accuracy"])
    assert board[0]["unknown_skipped"] == 2 and board[0]["unreadable"] == 1
    missing = invoke(["leaderboard", "--on", "elsewhere"])
    assert missing.exit_code == 2 and "museum set" in missing.said


def test_external_folder_without_known_class_is_refused(zoo_copy, tmp_path):
    write_photos(tmp_path / "other", {"gold": (230, 200, 40)}, 1)
    res = invoke(["evaluate", "tiny", "--data", str(tmp_path / "other")])
    assert res.exit_code == 2
    assert "None of the class folders" in res.said and "gold" in res.said


def test_tta_row_on_leaderboard_with_same_columns(zoo_copy):
    res = invoke(["evaluate", "tiny", "--tta", "--format", "json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    ev = json.loads(res.stdout)
    assert ev["tta"] and ev["views"] == 5 and ev["val_metrics"]["n"] == 3
    rows = {r["name"]: r for r in json.loads(invoke(["leaderboard", "--format", "json"]).stdout)}
    plain, tta = rows["tiny"], rows["tiny+tta"]
    assert tta.keys() == plain.keys()
    assert tta["kind"] == "tta" and tta["model"] == plain["model"]
    assert tta["test_accuracy"] == pytest.approx(ev["metrics"]["accuracy"])
    assert tta["test_nll"] == pytest.approx(ev["metrics"]["nll"])
    assert tta["val_accuracy"] == pytest.approx(ev["val_metrics"]["accuracy"])
    assert lb.best_run() != "tiny+tta"
    assert (zoo_copy.home / "tiny" / "evaluations" / "test-split-tta.npz").is_file()
    lb.db_path().unlink()
    lb.rebuild()
    assert "tiny+tta" in {r["name"] for r in lb.rows()}


def test_tta_for_ensemble_uses_each_members_views(zoo_copy):
    duo = load_predictor("duo")
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(zoo_copy.data.rglob("*.png"))[:4]]
    members = [m.predict_arrays(arrays, tta=True) for m in duo.members]
    expected = duo.scaler.transform(duo.method.predict_proba(members))
    np.testing.assert_allclose(duo.predict_arrays(arrays, tta=True), expected, atol=1e-6)
    assert not np.allclose(members[0], duo.members[0].predict_arrays(arrays), atol=1e-7)
    res = invoke(["evaluate", "duo", "--tta", "--format", "json"])
    assert res.exit_code == 0, res.stdout + res.stderr
    assert "duo+tta" in {r["name"] for r in lb.rows()}


def test_report_embeds_plots_and_scores(zoo_copy):
    assert invoke(["evaluate", "tiny", "--tta"]).exit_code == 0
    res = invoke(["report", "tiny"])
    assert res.exit_code == 0, res.stderr
    path = zoo_copy.home / "tiny" / "report.html"
    assert res.stdout.strip() == str(path)
    html = path.read_text()
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) >= 5  # learning curves, confusion x2, reliability, top losses x2
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    for text in ("test + TTA", "validation + TTA", "ECE (before calibration)", "Per class",
                 "Config", "custom_cnn", *COLOURS):
        assert text in html
    assert "src='http" not in html and 'src="http' not in html  # self-contained
