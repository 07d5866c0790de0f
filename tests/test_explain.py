"""Grad-CAM explanations: the maps, `zoo predict --explain`, the serve API's `?explain=true` and
the top-losses grid, on the tiny trained runs of helpers_eval."""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from helpers_eval import invoke, is_png, private_copy
from PIL import Image

from zoo.data.cache import decode_array
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array
from zoo.evaluate.explain import crop_box, grad_cam, weighted_heatmaps
from zoo.evaluate.predictor import load_predictor
from zoo.models.architectures.custom_cnn import CustomCNN
from zoo.report.evaluation import GAP, _explained_thumbnail
from zoo.report.heatmaps import overlay
from zoo.serve import create_app


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


@pytest.fixture
def wide_photo(zoo_copy, tmp_path):
    """A 60x40 training photo saved as a JPEG whose EXIF says "turn 90°": shown 40x60."""
    src = Image.open(sorted(zoo_copy.data.rglob("*.png"))[0]).resize((60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    path = tmp_path / "inbox" / "rock.jpg"
    path.parent.mkdir()
    src.save(path, exif=exif)
    return path


def test_grad_cam_of_a_pooled_linear_head_is_cam_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = CustomCNN(num_classes=3, widths=(8, 16)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():  # callers inside inference mode still get gradients here
        maps = grad_cam(model, x, torch.tensor([0, 2]))
    features = model.forward_features(x).detach()
    for i, target in enumerate((0, 2)):
        cam = torch.relu(torch.einsum("c,chw->hw", model.classifier.weight[target].detach(), features[i]))
        assert torch.allclose(maps[i], cam / cam.max(), atol=1e-5)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_the_map_covers_the_centre_crop_the_model_saw():
    pre = Preprocessing(32, (0.5,) * 3, (0.5,) * 3, crop_pct=0.8)  # resize_side 40
    array = np.arange(40 * 60 * 3, dtype=np.uint32).reshape(40, 60, 3).astype(np.uint8)
    top, left, bottom, right = crop_box((40, 60), pre)
    assert np.array_equal(array[top:bottom, left:right], eval_array(array, pre))
    top, left, bottom, right = crop_box((80, 120), pre)  # decoded larger: the same box, scaled
    assert (top, left, bottom, right) == (8, 28, 72, 92)


def test_ensemble_maps_average_where_members_looked():
    nan = np.nan
    a = np.array([[nan, 1.0], [0.0, 0.5]], np.float32)
    b = np.array([[nan, nan], [1.0, 0.5]], np.float32)
    (mean,) = weighted_heatmaps([[a], [b]], np.array([0.75, 0.25]))
    assert np.isnan(mean[0, 0])
    assert mean[0, 1] == pytest.approx(1.0) and mean[1, 0] == pytest.approx(0.25)
    assert mean[1, 1] == pytest.approx(0.5)


def test_overlay_darkens_what_the_model_did_not_see():
    photo = Image.new("RGB", (40, 20), (200, 200, 200))
    heat = np.full((10, 20), np.nan, np.float32)
    heat[:, 5:15] = 1.0
    out = np.asarray(overlay(photo, heat))
    assert out.shape == (20, 40, 3)
    assert (out[:, :8] == 70).all()                   # unseen: 35% brightness
    assert out[10, 20, 0] > out[10, 20, 2]            # seen and hot: red over grey


def test_predict_explain_writes_a_heatmap_of_the_photo_size(zoo_copy, wide_photo):
    res = invoke(["predict", "tiny", str(wide_photo), "--explain"])
    assert res.exit_code == 0, res.said
    sha = hashlib.sha256(wide_photo.read_bytes()).hexdigest()
    path = zoo_copy.home / "tiny" / "explanations" / f"rock-{sha[:8]}.png"
    assert f"heatmap {path}" in res.said
    assert is_png(path)
    with Image.open(path) as img:
        assert img.size == (40, 60)  # the photo as displayed (EXIF-rotated), not as stored


def test_predict_explain_json_and_csv_name_the_heatmaps(zoo_copy, wide_photo, tmp_path):
    res = invoke(["predict", "duo", str(wide_photo), "--format", "json",
                  "--explain-dir", str(tmp_path / "maps")])
    assert res.exit_code == 0, res.said
    (row,) = json.loads(res.stdout)
    assert Path(row["heatmap"]).parent == tmp_path / "maps" and is_png(Path(row["heatmap"]))
    res = invoke(["predict", "tiny", str(wide_photo), "--format", "csv", "--explain"])
    assert res.exit_code == 0, res.said
    header, values = list(csv.reader(io.StringIO(res.stdout)))
    assert header[-1] == "heatmap" and Path(values[-1]).parent == zoo_copy.home / "tiny" / "explanations"
    assert is_png(Path(values[-1]))


def test_predict_explain_never_overwrites_a_photo(zoo_copy, wide_photo):
    sha = hashlib.sha256(wide_photo.read_bytes()).hexdigest()
    other = wide_photo.parent / f"rock-{sha[:8]}.png"
    Image.new("RGB", (32, 32), (40, 60, 200)).save(other)
    before = other.read_bytes()
    res = invoke(["predict", "tiny", str(wide_photo.parent), "--explain-dir", str(wide_photo.parent)])
    assert res.exit_code == 2
    assert "would overwrite the photo" in res.said and "--explain-dir" in res.said
    assert other.read_bytes() == before


def test_api_returns_the_overlay_on_request(zoo_copy, wide_photo):
    with TestClient(create_app(load_predictor("tiny"))) as client:
        files = {"file": ("rock.jpg", wide_photo.read_bytes(), "image/jpeg")}
        plain = client.post("/api/predict", files=files).json()
        explained = client.post("/api/predict?explain=true", files=files).json()
        schema = client.get("/openapi.json").json()
    assert "heatmap" not in plain and explained["predictions"] == plain["predictions"]
    prefix = "data:image/png;base64,"
    assert explained["heatmap"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(explained["heatmap"][len(prefix):]))) as img:
        decoded = decode_array(wide_photo, load_predictor("tiny").decode_side)
        assert img.format == "PNG" and img.size == decoded.shape[1::-1]
    params = schema["paths"]["/api/predict"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["explain"] and "heatmap" in params[0]["description"]


def test_top_losses_show_each_photo_beside_its_heatmap(zoo_copy, wide_photo):
    pair = np.asarray(_explained_thumbnail(load_predictor("tiny"), wide_photo, 0))
    assert pair.shape == (60, 2 * 40 + GAP, 3)
    assert not np.array_equal(pair[:, :40], pair[:, 40 + GAP:])
