"""TFLite (LiteRT) files: converted from PyTorch by litert-torch, run by the LiteRT interpreter.

The file takes one photo at a time, float32 RGB in [0, 1], NHWC ``1 x image_size x image_size x 3``
(the layout LiteRT and Android bitmaps use; the converter moves the channels inside the graph), and
returns calibrated probabilities ``1 x classes``, like the ONNX export. Classes and preprocessing
travel twice: as the flatbuffer metadata entry ``zoo`` and as a sidecar ``<file>.json`` (easy to read
from Kotlin or Java; written once the file is kept). Both packages are in the optional ``tflite`` extra.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo.errors import ZooError
from zoo.fileio import write_json

INSTALL = "pip install 'mineral-zoo[tflite]'"
METADATA_KEY = "zoo"
SIGNATURE = "serving_default"


def sidecar(path: Path) -> Path:
    """``model.tflite`` -> ``model.tflite.json``: the export info, for apps that cannot read metadata."""
    return path.with_name(path.name + ".json")


def _litert_torch():  # noqa: ANN202 (the module)
    try:
        import litert_torch
    except ImportError as exc:
        raise ZooError(f"TFLite export needs the LiteRT converter (litert-torch): {INSTALL}. "
                       "Or export with --format onnx.") from exc
    litert_torch.config.show_progress = False
    return litert_torch


def _interpreter(path: Path, threads: int | None = None):  # noqa: ANN202 (a LiteRT Interpreter)
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise ZooError("Running a TFLite file needs the LiteRT interpreter (ai-edge-litert): "
                       f"{INSTALL}.") from exc
    with native_output_captured():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


@contextmanager
def native_output_captured() -> Iterator[Callable[[], str]]:
    """Send what the converters' C++ code and progress bars print to a temporary file.

    Yields a function returning the captured text (its tail goes into error messages)."""
    log = tempfile.TemporaryFile(mode="w+b")
    saved = [os.dup(1), os.dup(2)]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)

    def text() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")

    try:
        yield text
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        log.close()


def _tail(text: str, lines: int = 5) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return (" Converter output (last lines): " + " | ".join(kept)) if kept else ""


def tflite_info(info: dict, interpreter) -> dict:  # noqa: ANN001 (a LiteRT Interpreter)
    """``info`` (``export_info``) with the TFLite file's input: NHWC, one photo, its tensor names."""
    runner = interpreter.get_signature_list()[SIGNATURE]
    size = (info["input"]["height"], info["input"]["width"])
    steps = info["preprocessing"]["steps"][:-1] + [
        f"float32 in [0, 1], NHWC 1x{size[0]}x{size[1]}x3 (mean/std are applied inside the graph)"]
    return {**info,
            "input": {**info["input"], "name": runner["inputs"][0], "layout": "NHWC", "batch": 1},
            "output": {**info["output"], "name": runner["outputs"][0]},
            "preprocessing": {**info["preprocessing"], "steps": steps},
            "signature": SIGNATURE}


def write_metadata(path: Path, info: dict) -> None:
    """Store ``info`` as the flatbuffer metadata entry ``zoo`` (replacing one already there)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    raw = path.read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    for b in model.buffers:  # data stored after the flatbuffer (offset, size) would be lost: inline it
        if b.offset > 1:
            b.data, b.offset, b.size = np.frombuffer(raw[b.offset:b.offset + b.size], np.uint8), 0, 0
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_KEY, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or [])
                      if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(builder.Output())


def read_metadata(path: Path) -> dict:
    """The ``zoo`` metadata entry of a TFLite file written by ``zoo export``."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    raise ZooError(f"{path} has no '{METADATA_KEY}' metadata: it was not written by `zoo export`.")


def write_sidecar(path: Path) -> Path:
    """Copy the file's ``zoo`` metadata to ``<file>.json``; returns that path."""
    write_json(sidecar(path), read_metadata(path))
    return sidecar(path)


def export_tflite(module: nn.Module, x: torch.Tensor, path: Path, info: dict) -> None:
    """Convert ``module`` (NCHW in) to a TFLite file with NHWC input, one photo per call."""
    with native_output_captured() as output:
        litert_torch = _litert_torch()  # its import logs from C++ too
        nhwc = litert_torch.to_channel_last_io(module.cpu(), args=[0])
        try:
            litert_torch.convert(nhwc, (x[:1].cpu().permute(0, 2, 3, 1).contiguous(),)).export(str(path))
        except Exception as exc:  # the converter's errors name no user input: report and suggest ONNX
            raise ZooError(f"TFLite conversion of '{info['run']}' ({info['model']}) failed: "
                           f"{type(exc).__name__}: {str(exc)[:300]}.{_tail(output())} "
                           "Try --format onnx.", exit_code=3) from exc
    write_metadata(path, tflite_info(info, _interpreter(path)))


def tflite_runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function from NCHW float32 photos to the file's probabilities, one photo per invoke."""
    interpreter = _interpreter(path, threads)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def run(x: np.ndarray) -> np.ndarray:
        probs = []
        for photo in np.ascontiguousarray(x.transpose(0, 2, 3, 1), dtype=np.float32):
            interpreter.set_tensor(inp["index"], photo[None])
            interpreter.invoke()
            probs.append(interpreter.get_tensor(out["index"])[0].copy())
        return np.stack(probs)

    return run


def run_tflite(path: Path, x: torch.Tensor) -> np.ndarray:
    return tflite_runner(path)(x.cpu().numpy())


def quantize_tflite(source: Path, target: Path, calibration: np.ndarray) -> None:
    """Static int8 (weights per channel, activations per tensor) by ai-edge-quantizer, calibrated
    on ``calibration`` (NCHW photos). Input and output stay float32, so apps feed it as before."""
    try:
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe
    except ImportError as exc:
        raise ZooError(f"TFLite int8 quantisation needs ai-edge-quantizer: {INSTALL}.") from exc
    job = quantizer.Quantizer(str(source), recipe.static_wi8_ai8())
    for io in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        job.update_quantization_recipe(regex=".*", operation_name=io,
                                       algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
    info = read_metadata(source)
    name = info["input"]["name"]
    samples = [{name: photo[None]} for photo in np.ascontiguousarray(calibration.transpose(0, 2, 3, 1))]
    with native_output_captured() as output:
        try:
            job.quantize(job.calibrate({SIGNATURE: samples}, num_threads=os.cpu_count() or 1)) \
               .export_model(str(target), overwrite=True)
        except Exception as exc:  # as in export_tflite
            raise ZooError(f"TFLite int8 quantisation of '{info['run']}' failed: {type(exc).__name__}: "
                           f"{str(exc)[:300]}.{_tail(output())}", exit_code=3) from exc
    write_metadata(target, {**info, "quantization": "int8 (static, ai-edge-quantizer static_wi8_ai8; "
                                                     "float32 input and output)"})
