"""Trust in predictions (zoo.evaluate.trust): selective prediction thresholds fitted on validation
only, the unknown-mineral (OOD) score and threshold, and the statuses in every output."""
from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers_eval import invoke, private_copy
from PIL import Image, ImageDraw

from zoo.data.preprocessing import Preprocessing
from zoo.evaluate.predictor import load_predictor
from zoo.evaluate.trust import (
    OOD_METHODS,
    OodScorer,
    Trust,
    auroc,
    candidates,
    fit_confidence_threshold,
    fit_trust,
    fpr_at_tpr,
    quantile_threshold,
    risk_coverage,
    selective_stats,
)
from zoo.models.factory import build_model
from zoo.serve.app import create_app
from zoo.store.runs import load_predictions, read_meta, save_predictions, write_meta
from zoo.train.batches import SplitArrays
from zoo.train.run import PreparedData, finish_run
from zoo.train.recipes import TrustSection

CLASSES = ["azurite", "cinnabar", "malachite"]


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


# ---- the fitting rules ----------------------------------------------------------------------
def test_threshold_is_the_largest_coverage_that_keeps_the_target_precision():
    conf = np.array([0.99, 0.98, 0.97, 0.95, 0.90, 0.80, 0.70, 0.60])
    correct = np.array([1, 1, 1, 1, 0, 1, 0, 0], bool)
    assert fit_confidence_threshold(conf, correct, 1.0, level=0) == 0.95
    assert fit_confidence_threshold(conf, correct, 0.8, level=0) == 0.80   # 5 of 6 right
    at = selective_stats(conf, correct, 0.80)
    assert at["coverage"] == pytest.approx(0.75) and at["precision"] == pytest.approx(5 / 6)
    assert fit_confidence_threshold(conf[4:], correct[4:], 0.95) is None
    # ties: a threshold takes every photo of its confidence, so a tie with an error is refused
    assert fit_confidence_threshold(np.array([0.9, 0.9, 0.8]), np.array([1, 0, 1], bool), 0.9, 0) is None
    curve = risk_coverage(conf, correct)
    assert curve["risk"][0] == 0 and curve["risk"][-1] == pytest.approx(3 / 8)
    assert curve["aurc"] == pytest.approx(np.mean(curve["risk"]))


def test_threshold_holds_the_target_with_the_chosen_confidence():
    """The default asks the Clopper-Pearson lower bound of the precision to reach the target:
    a few right answers prove little, many prove more; a higher level answers fewer."""
    assert fit_confidence_threshold(np.linspace(1, 0.5, 10), np.ones(10, bool), 0.95) is None
    conf = np.linspace(1, 0.5, 100)
    correct = np.ones(100, bool)
    correct[[60, 80, 90]] = False
    answered = [selective_stats(conf, correct, fit_confidence_threshold(conf, correct, 0.95, level))
                ["answered"] for level in (0, 0.9, 0.99)]
    assert answered == [100, 80, 0]   # 97 of 100; 79 of 80 (bound 0.952); 60 of 60 is not enough


def test_uniform_probabilities_are_unsure_everywhere():
    rng = np.random.default_rng(0)
    probs = np.full((60, 3), 1 / 3)
    labels = rng.integers(0, 3, 60)
    ood = rng.normal(size=60)
    trust = fit_trust(probs, labels, ood, ood={"method": "energy"})
    assert trust["confidence_threshold"] is None
    judge = Trust.from_meta(trust)
    verdicts = judge.judge(probs, np.zeros(60), CLASSES)
    assert {v["status"] for v in verdicts} == {"unsure"}
    assert all(len(v["candidates"]) == 3 for v in verdicts)
    # even under a threshold fitted elsewhere, a tie for the top class is never confident
    assert Trust(0.95, 0.2).judge(probs[:1], None, CLASSES)[0]["status"] == "unsure"


def test_statuses_candidates_and_the_ood_threshold():
    trust = Trust(0.95, 0.9, ood_threshold=1.0, ood_method="knn")
    probs = np.array([[0.96, 0.03, 0.01], [0.6, 0.3, 0.1], [0.5, 0.48, 0.02], [0.99, 0.005, 0.005]])
    v = trust.judge(probs, np.array([0.1, 0.1, 0.1, 1.5]), CLASSES)
    assert [x["status"] for x in v] == ["confident", "unsure", "unsure", "unknown"]
    assert v[0]["candidates"] == ["azurite"]
    assert v[1]["candidates"] == ["azurite", "cinnabar", "malachite"]
    assert v[2]["candidates"] == ["azurite", "cinnabar"]
    assert v[3]["candidates"] == ["azurite", "cinnabar"]  # still the nearest classes
    assert v[3]["ood_score"] == pytest.approx(1.5) and v[0]["confidence"] == pytest.approx(0.96)
    assert candidates(probs[1], CLASSES, "unsure", 0.5) == ["azurite", "cinnabar"]
    assert quantile_threshold(np.arange(100), 0.95) == 94
    assert auroc(np.zeros(5), np.ones(5)) == 1.0 and fpr_at_tpr(np.arange(100), np.array([10, 200])) == 0.5


@pytest.mark.parametrize("method", OOD_METHODS)
def test_every_ood_score_ranks_far_features_above_the_training_ones(method, tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    y = np.repeat(np.arange(3), 40)
    feats = centres[y] + rng.normal(size=(120, 16))
    w = centres / np.linalg.norm(centres, axis=1, keepdims=True)
    scorer = OodScorer.fit(method, feats, y, 3, temperature=1.5)
    near_f = centres[y[:30]] + rng.normal(size=(30, 16))
    far_f = -centres[y[:30]] * 0.1 + rng.normal(size=(30, 16)) * 0.3 + rng.normal(size=16) * 6
    near, far = scorer.score(near_f @ w.T, near_f), scorer.score(far_f @ w.T, far_f)
    assert auroc(near, far) > 0.9, method
    scorer.write_to(tmp_path)
    again = OodScorer.load(tmp_path, scorer.params())
    np.testing.assert_allclose(again.score(far_f @ w.T, far_f), far, rtol=1e-5, atol=1e-6)


# ---- fitted on validation only --------------------------------------------------------------
def _parts(seed: int, n: int, side: int = 40) -> SplitArrays:
    rng = np.random.default_rng(seed)
    colours = np.array([(40, 60, 200), (210, 40, 40), (40, 190, 70)])
    labels = np.arange(n) % 3
    arrays = [np.clip(colours[c] + rng.integers(-50, 50, (side, side + 4, 3)), 0, 255).astype(np.uint8)
              for c in labels]
    return SplitArrays([f"img{seed}-{i}.png" for i in range(n)], arrays, labels)


def _finish(tmp_path: Path, name: str, test_labels: np.ndarray | None = None,
            zero: bool = False) -> dict:
    torch.manual_seed(0)
    model = build_model("custom_cnn", 3, widths=[8, 16])
    if zero:  # every output the same: uniform probabilities, identical features
        for p in model.parameters():
            torch.nn.init.zeros_(p)
    pre = Preprocessing(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    parts = {"train": _parts(0, 24), "val": _parts(1, 15), "test": _parts(2, 15)}
    if test_labels is not None:
        parts["test"] = SplitArrays(parts["test"].paths, parts["test"].arrays, test_labels)
    path = tmp_path / name
    path.mkdir()
    meta = {"name": name, "kind": "model", "status": "running", "model": "custom_cnn",
            "model_kwargs": {"widths": [8, 16]}, "classes": CLASSES, "preprocessing": pre.to_dict(),
            "seed": 0, "fit_seconds": 1.0}
    finish_run(path, meta, model, pre, PreparedData(None, None, [], parts), [], 8,
               trust=TrustSection(ood_score="knn", knn_k=3))
    return read_meta(path)


def test_thresholds_never_see_the_test_labels(tmp_path):
    base = _finish(tmp_path, "a")
    flipped = _finish(tmp_path, "b", test_labels=np.zeros(15, np.int64))
    assert base["trust"] == flipped["trust"]
    assert base["metrics"]["test"]["confusion"] != flipped["metrics"]["test"]["confusion"]
    assert base["trust"]["fitted_on"] == "validation (15 photos)"
    assert (tmp_path / "a" / "ood.safetensors").is_file()
    assert "ood" in load_predictions(tmp_path / "a", "test")


def test_a_model_with_uniform_outputs_is_unsure_on_every_photo(tmp_path, monkeypatch):
    meta = _finish(tmp_path, "flat", zero=True)
    assert meta["trust"]["confidence_threshold"] is None
    predictor = load_predictor("flat", tmp_path)
    probs, ood = predictor.outputs(_parts(5, 9).arrays)
    np.testing.assert_allclose(probs, 1 / 3, atol=1e-6)
    assert {v["status"] for v in predictor.judge(probs, ood)} == {"unsure"}


def test_ensemble_thresholds_never_see_the_test_labels(zoo_copy):
    home = zoo_copy.home
    for member in ("tiny", "tiny2"):
        pred = load_predictions(home / member, "test")
        extra = {k: v for k, v in pred.items() if k not in ("ids", "labels", "probs")}
        save_predictions(home / member, "test", pred["ids"].tolist(), (pred["labels"] + 1) % 3,
                         pred["probs"], **extra)
    res = invoke(["ensemble", "--members", "tiny,tiny2", "--name", "duo-flipped"])
    assert res.exit_code == 0, res.said
    assert read_meta(home / "duo-flipped")["trust"] == read_meta(home / "duo")["trust"]
    assert read_meta(home / "duo")["trust"]["ood"]["method"] == "members"


# ---- the OOD score on a tiny trained model --------------------------------------------------
def _synthetic_ood(side: int = 48) -> list[np.ndarray]:
    text = Image.new("RGB", (side * 3, side * 3), "white")
    draw = ImageDraw.Draw(text)
    for i in range(8):
        draw.text((2, 2 + 16 * i), "quartz pyrite 0123", fill="black")
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8),       # noise
            np.full((side, side, 3), (150, 120, 90), np.uint8),          # a flat colour
            np.asarray(text)]                                             # a text rendering


def test_the_ood_score_ranks_a_synthetic_image_above_known_photos(zoo_copy):
    """On the tiny runs (1 epoch, near-uniform probabilities: random-CNN features) the flat colour
    is the synthetic image that stands out; noise and text look like the noisy class photos to
    such features, so they are not asserted here (benchmarks/open_set.py measures real models)."""
    known = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(zoo_copy.data.rglob("*.png"))]
    flat = _synthetic_ood()[1:2]
    for run in ("tiny", "duo"):
        predictor = load_predictor(run)
        _, known_scores = predictor.outputs(known)
        probs, ood_scores = predictor.outputs(flat)
        assert ood_scores.min() > known_scores.max(), (run, ood_scores, np.sort(known_scores)[-5:])
        assert predictor.judge(probs, ood_scores)[0]["status"] == "unknown"


# ---- outputs --------------------------------------------------------------------------------
def _write(folder: Path, arrays: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(arrays):
        paths.append(folder / f"x{i}.png")
        Image.fromarray(a).save(paths[-1])
    return paths


def test_predict_json_and_csv_carry_status_confidence_and_ood_score(zoo_copy, tmp_path):
    odd = _write(tmp_path / "odd", _synthetic_ood())
    known = sorted(zoo_copy.data.rglob("*.png"))[:2]
    res = invoke(["predict", "duo", *map(str, known + odd), "--format", "json"])
    assert res.exit_code == 0, res.said
    rows = json.loads(res.stdout)
    for row in rows:
        assert row["status"] in ("confident", "unsure", "unknown")
        assert 0 <= row["confidence"] <= 1 and isinstance(row["ood_score"], float)
        assert row["confidence"] == pytest.approx(row["predictions"][0]["probability"])
        assert 1 <= len(row["candidates"]) <= 3
    assert rows[3]["status"] == "unknown"  # the flat colour
    res = invoke(["predict", "tiny", *map(str, odd), "--format", "csv"])
    table = list(csv.DictReader(io.StringIO(res.stdout)))
    assert table[1]["status"] == "unknown" and len(table) == 3
    assert all(float(r["ood_score"]) and r["candidates"] for r in table)
    res = invoke(["predict", "tiny", str(odd[1])])
    assert "unknown" in res.stdout and "does not look like any of the 3 minerals" in res.said


def test_old_runs_without_thresholds_still_predict(zoo_copy):
    meta = read_meta(zoo_copy.home / "tiny")
    del meta["trust"]
    write_meta(zoo_copy.home / "tiny", meta)
    (zoo_copy.home / "tiny" / "ood.safetensors").unlink()
    photo = str(sorted(zoo_copy.data.rglob("*.png"))[0])
    res = invoke(["predict", "tiny", photo, "--format", "json"])
    assert res.exit_code == 0, res.said
    row = json.loads(res.stdout)[0]
    assert "status" not in row and "ood_score" not in row and "confidence" in row
    assert "no fitted trust thresholds" in res.stderr
    res = invoke(["predict", "tiny", photo, "--format", "csv"])
    assert res.stdout.splitlines()[0] == "path,top1,prob1,top2,prob2,top3,prob3,confidence"
    ev = invoke(["evaluate", "tiny"])
    assert ev.exit_code == 0 and "no fitted trust thresholds" in ev.said
    # an ensemble of members without OOD statistics: statuses, but never 'unknown'
    shutil.rmtree(zoo_copy.home / "duo")
    assert invoke(["ensemble", "--members", "tiny,tiny2", "--name", "duo"]).exit_code == 0
    duo = read_meta(zoo_copy.home / "duo")["trust"]
    assert "ood" not in duo and "confidence_threshold" in duo


def test_damaged_trust_is_refused(zoo_copy):
    meta = read_meta(zoo_copy.home / "tiny")
    meta["trust"]["ood"]["threshold"] = "high"
    write_meta(zoo_copy.home / "tiny", meta)
    res = invoke(["predict", "tiny", str(sorted(zoo_copy.data.rglob("*.png"))[0])])
    assert res.exit_code == 2 and "trust.ood.threshold" in res.said


def test_api_returns_the_new_fields_and_documents_them(zoo_copy):
    predictor = load_predictor("duo")
    with TestClient(create_app(predictor)) as client:
        schema = client.get("/openapi.json").json()
        props = schema["components"]["schemas"]["PredictResponse"]["properties"]
        assert {"status", "confidence", "ood_score", "candidates", "message", "predictions"} <= set(props)
        assert set(props["status"]["anyOf"][0]["enum"]) == {"confident", "unsure", "unknown"}
        buf = io.BytesIO()
        Image.fromarray(_synthetic_ood()[1]).save(buf, format="PNG")
        res = client.post("/api/predict", files={"file": ("flat.png", buf.getvalue(), "image/png")})
        assert res.status_code == 200, res.text
        body = res.json()
        assert body["status"] == "unknown" and "3 minerals this model knows" in body["message"]
        assert isinstance(body["ood_score"], float) and len(body["predictions"]) == 3
        info = client.get("/api/model").json()
        assert info["trust"]["ood_method"] == "members" and info["classes"] == CLASSES


def test_evaluate_prints_the_risk_coverage_curve_and_writes_its_plot(zoo_copy, tmp_path):
    res = invoke(["evaluate", "tiny"])
    assert res.exit_code == 0, res.said
    assert "area under the risk-coverage curve" in res.said and "coverage at the threshold" in res.said
    assert "risk-coverage (most confident first)" in res.said
    assert (zoo_copy.home / "tiny" / "plots" / "risk_coverage.png").is_file()
    # an external folder with a class the model does not know: its photos are judged too
    ext = tmp_path / "museum"
    for cls in ("azurite", "malachite"):
        shutil.copytree(zoo_copy.data / cls, ext / cls)
    _write(ext / "gneiss", _synthetic_ood())
    res = invoke(["evaluate", "tiny", "--data", str(ext), "--format", "json"])
    out = json.loads(res.stdout)
    assert out["metrics"]["selective"]["n"] == 12
    assert out["open_set"]["photos"] == 3 and out["open_set"]["statuses"]["unknown"] >= 1
    assert sum(out["open_set"]["statuses"].values()) == 3 and 0 <= out["open_set"]["auroc"] <= 1
    assert (zoo_copy.home / "tiny" / "plots" / "risk_coverage_museum.png").is_file()
    report = invoke(["report", "tiny"])
    assert report.exit_code == 0
    html = (zoo_copy.home / "tiny" / "report.html").read_text()
    assert "<h2>Trust</h2>" in html and "risk coverage" in html and "gneiss" in html
