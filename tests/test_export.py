"""`zoo export`: ONNX and TorchScript files that carry their classes and preprocessing and match
PyTorch on real photos."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_eval import invoke, private_copy

from zoo.data.cache import decode_array
from zoo.evaluate import export as zoo_export
from zoo.evaluate.predictor import load_predictor
from zoo.store.runs import load_predictions, read_meta, write_meta

onnx = pytest.importorskip("onnx")  # the optional `export` extra
ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


def real_inputs(zoo) -> tuple[np.ndarray, np.ndarray]:
    """The tiny run's test photos as the exported graph's input, and PyTorch's probabilities."""
    predictor = load_predictor("tiny")
    ids = load_predictions(predictor.path, "test")["ids"].tolist()
    arrays = [decode_array(zoo.data / i, predictor.pre.resize_side) for i in ids]
    return zoo_export.to_input(arrays, predictor.pre).numpy(), predictor.predict_arrays(arrays)


def test_onnx_matches_pytorch_and_carries_classes(zoo_copy):
    res = invoke(["export", "tiny", "--format", "onnx"])
    assert res.exit_code == 0, res.said
    assert "parity with PyTorch on 3 test photos" in res.said
    path = zoo_copy.home / "tiny" / "export" / "model.onnx"
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    meta = read_meta(zoo_copy.home / "tiny")
    assert json.loads(props["classes"]) == meta["classes"]
    pre = json.loads(props["preprocessing"])
    assert pre["input"] == {"name": "image", "dtype": "float32", "layout": "NCHW", "channels": "RGB",
                            "range": [0.0, 1.0], "height": 32, "width": 32}
    assert pre["mean"] == meta["preprocessing"]["mean"] and pre["resize_side"] == 37
    x, expected = real_inputs(zoo_copy)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x})[0]
    assert got.shape == (3, 3)
    assert np.abs(got - expected).max() <= 1e-4
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_with_meta_and_matches(zoo_copy):
    res = invoke(["export", "tiny", "--format", "torchscript"])
    assert res.exit_code == 0, res.said
    path = zoo_copy.home / "tiny" / "export" / "model.torchscript.pt"
    extra = {"meta.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    info = json.loads(extra["meta.json"])
    assert info["classes"] == read_meta(zoo_copy.home / "tiny")["classes"]
    assert info["output"]["calibrated"] and info["input"]["layout"] == "NCHW"
    x, expected = real_inputs(zoo_copy)
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    assert np.abs(got - expected).max() <= 1e-4


def test_synthetic_parity_images_when_photos_are_gone(zoo_copy):
    meta = read_meta(zoo_copy.home / "tiny")
    meta["data_root"] = str(zoo_copy.home / "moved-away")
    write_meta(zoo_copy.home / "tiny", meta)
    result = zoo_export.export_run("tiny", "onnx")
    assert result.parity_images.startswith("8 synthetic images")
    assert result.max_abs_diff <= 1e-4 and result.path.is_file()


def test_failed_parity_check_keeps_nothing(zoo_copy, monkeypatch):
    monkeypatch.setattr(zoo_export, "TOLERANCE", -1.0)
    res = invoke(["export", "tiny", "--format", "onnx"])
    assert res.exit_code == 3
    assert "differs from PyTorch" in res.said and "nothing was written" in res.said
    assert not list((zoo_copy.home / "tiny" / "export").glob("*"))


def test_ensemble_and_unknown_format_are_refused(zoo_copy):
    res = invoke(["export", "duo", "--format", "onnx"])
    assert res.exit_code == 2
    assert "is an ensemble" in res.said and "zoo export tiny --format onnx" in res.said
    res = invoke(["export", "tiny", "--format", "coreml"])
    assert res.exit_code == 2 and "onnx, torchscript, tflite or web" in res.said
    assert not (zoo_copy.home / "tiny" / "export").exists()


@pytest.mark.parametrize("batch", [1, 5])
def test_deployable_mirrors_temperature_scaling(zoo_copy, batch):
    predictor = load_predictor("tiny")
    module = zoo_export.Deployable(predictor.model, predictor.pre, predictor.scaler.temperature)
    arrays = [np.random.default_rng(i).integers(0, 256, (40, 50, 3), dtype=np.uint8) for i in range(batch)]
    with torch.inference_mode():
        got = module.eval()(zoo_export.to_input(arrays, predictor.pre)).numpy()
    np.testing.assert_allclose(got, predictor.predict_arrays(arrays), atol=1e-6)
