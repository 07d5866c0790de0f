"""`zoo export --format tflite` and `--quantize int8`: LiteRT parity with PyTorch, classes and
preprocessing in the file, a clear message without the optional converter, and the int8 copy's
report, refusal beyond the tolerance and --force."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
from helpers_eval import invoke, private_copy
from test_export import real_inputs

from zoo.errors import ZooError
from zoo.evaluate.quantize import quantize_export
from zoo.store.runs import read_meta

pytest.importorskip("onnxruntime")  # the optional `export` extra
TFLITE = pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None,
    reason="the optional `tflite` extra is not installed: pip install 'mineral-zoo[tflite]'")


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


def test_missing_converter_is_a_clear_exit_2(zoo_copy, monkeypatch):
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if the extra were not installed
    res = invoke(["export", "tiny", "--format", "tflite"])
    assert res.exit_code == 2, res.said
    assert "pip install 'mineral-zoo[tflite]'" in res.said and "--format onnx" in res.said
    assert not list((zoo_copy.home / "tiny" / "export").glob("*"))


@pytest.mark.parametrize("args, said", [
    (["--format", "torchscript", "--quantize", "int8"], "works with --format onnx or tflite"),
    (["--format", "onnx", "--quantize", "int4"], "Unknown --quantize 'int4': use int8"),
])
def test_quantize_refuses_what_it_cannot_do(zoo_copy, args, said):
    res = invoke(["export", "tiny", *args])
    assert res.exit_code == 2 and said in res.said
    assert not (zoo_copy.home / "tiny" / "export").exists()


def test_onnx_int8_is_measured_and_carries_classes(zoo_copy):
    onnx = pytest.importorskip("onnx")
    res = invoke(["export", "tiny", "--format", "onnx", "--quantize", "int8", "--tolerance", "100"])
    assert res.exit_code == 0, res.said
    export = zoo_copy.home / "tiny" / "export"
    assert "quantized" in res.said and "test accuracy" in res.said and "report:" in res.said
    report = json.loads((export / "quantize.onnx.json").read_text())
    assert report["kept"] and not report["forced"] and report["int8"] == "model.int8.onnx"
    assert report["test_photos"] == 3 and report["calibration_photos"] == 12
    for side in ("before", "after"):
        assert set(report[side]) == {"size_mb", "latency_ms", "accuracy"}
    props = {p.key: p.value for p in onnx.load(str(export / "model.int8.onnx")).metadata_props}
    assert json.loads(props["classes"]) == read_meta(zoo_copy.home / "tiny")["classes"]
    assert json.loads(props["zoo"])["quantization"].startswith("int8")
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(export / "model.int8.onnx")).graph.node)
    assert invoke(["export", "tiny", "--check"]).exit_code == 0  # files.json lists the int8 files


def test_int8_beyond_tolerance_is_refused_unless_forced(zoo_copy):
    assert invoke(["export", "tiny", "--format", "onnx"]).exit_code == 0
    export = zoo_copy.home / "tiny" / "export"
    # A tolerance of -101 points demands a gain above 100 points: the rule fires whatever int8 does.
    with pytest.raises(ZooError) as refused:
        quantize_export("tiny", "onnx", export / "model.onnx", tolerance=-101.0)
    assert refused.value.exit_code == 3
    assert "it was not written" in str(refused.value) and "--force" in str(refused.value)
    assert not (export / "model.int8.onnx").exists()
    report = json.loads((export / "quantize.onnx.json").read_text())
    assert not report["kept"] and report["tolerance_points"] == -101.0
    assert invoke(["export", "tiny", "--check"]).exit_code == 0  # the report is listed, no int8 file
    forced = quantize_export("tiny", "onnx", export / "model.onnx", tolerance=-101.0, force=True)
    assert forced["kept"] and forced["forced"] and (export / "model.int8.onnx").is_file()


def test_int8_needs_the_training_photos(zoo_copy):
    meta = read_meta(zoo_copy.home / "tiny")
    (zoo_copy.splits / f"{meta['dataset']}.json").rename(zoo_copy.splits / "elsewhere.json")
    try:
        res = invoke(["export", "tiny", "--format", "onnx", "--quantize", "int8"])
    finally:
        (zoo_copy.splits / "elsewhere.json").rename(zoo_copy.splits / f"{meta['dataset']}.json")
    assert res.exit_code == 2 and "training photos" in res.said and "ZOO_SPLITS_DIR" in res.said
    assert not (zoo_copy.home / "tiny" / "export" / "model.int8.onnx").exists()


@TFLITE
def test_tflite_matches_pytorch_carries_classes_and_quantizes(zoo_copy):
    from ai_edge_litert.interpreter import Interpreter

    from zoo.evaluate.tflite import read_metadata

    res = invoke(["export", "tiny", "--format", "tflite", "--quantize", "int8", "--tolerance", "100"])
    assert res.exit_code == 0, res.said
    assert "parity with PyTorch on 3 test photos" in res.said
    export = zoo_copy.home / "tiny" / "export"
    info = read_metadata(export / "model.tflite")
    assert info["classes"] == read_meta(zoo_copy.home / "tiny")["classes"]
    assert info["input"]["layout"] == "NHWC" and info["input"]["height"] == 32
    assert json.loads((export / "model.tflite.json").read_text()) == info
    assert invoke(["export", "tiny", "--check"]).exit_code == 0  # model, int8 copy, sidecars, report
    interpreter = Interpreter(model_path=str(export / "model.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["shape"].tolist() == [1, 32, 32, 3]
    x, expected = real_inputs(zoo_copy)
    got = []
    for photo in x.transpose(0, 2, 3, 1):
        interpreter.set_tensor(inp["index"], np.ascontiguousarray(photo[None]))
        interpreter.invoke()
        got.append(interpreter.get_tensor(out["index"])[0])
    assert np.abs(np.stack(got) - expected).max() <= 1e-4
    report = json.loads((export / "quantize.tflite.json").read_text())
    assert report["kept"] and report["int8"] == "model.int8.tflite"
    assert read_metadata(export / "model.int8.tflite")["quantization"].startswith("int8")
    assert (export / "model.int8.tflite.json").is_file()
