"""``zoo export``: a trained run as ONNX, TorchScript or TFLite, verified against PyTorch before it is kept.

The exported graph takes float32 RGB in [0, 1], NCHW, ``image_size`` square (the photo's shorter
side resized to ``resize_side``, then centre-cropped) and returns calibrated probabilities:
normalisation and temperature scaling are inside the graph. Classes and preprocessing travel in
the file (ONNX ``metadata_props``; TorchScript ``_extra_files['meta.json']``). TFLite
(``zoo.evaluate.tflite``) takes one photo, NHWC, and carries them as metadata and a sidecar JSON.
Ensembles are refused: export each member instead.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from zoo import __version__
from zoo.data.cache import decode_array
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array
from zoo.errors import UnreadableImageError, ZooError
from zoo.evaluate.calibration import PROB_FLOOR
from zoo.evaluate.export_files import write_manifest
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.evaluate.trust import export_trust
from zoo.evaluate.tflite import export_tflite, run_tflite, sidecar, write_sidecar
from zoo.fileio import atomic_path
from zoo.models.runtime import Runtime
from zoo.store.runs import load_predictions, read_meta, run_dir

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "tflite": "model.tflite"}
TOLERANCE = 1e-4
PARITY_IMAGES = 16
OPSET = 17


class Deployable(nn.Module):
    """[0, 1] NCHW photos -> calibrated probabilities: normalise, model, temperature scaling.

    Mirrors ``TemperatureScaler.transform``: softmax(log(clip(p, eps)) / T).
    """

    def __init__(self, model: nn.Module, pre: Preprocessing, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature = float(temperature)
        self.log_eps = math.log(PROB_FLOOR)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(self.model((x - self.mean) / self.std).float(), dim=1)
        return torch.softmax(torch.clamp(logp, min=self.log_eps) / self.temperature, dim=1)


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    parity_images: str
    tolerance: float = TOLERANCE
    info: dict = field(default_factory=dict)  # export_info: what the file takes and returns


def export_info(predictor: ModelPredictor, fmt: str) -> dict:
    """Everything a deployment needs to feed the file and read its output."""
    pre, meta = predictor.pre, predictor.meta
    return {
        "format": fmt, "run": predictor.name, "model": meta["model"], "classes": predictor.classes,
        "input": {"name": "image", "dtype": "float32", "layout": "NCHW", "channels": "RGB",
                  "range": [0.0, 1.0], "height": pre.image_size, "width": pre.image_size},
        "preprocessing": {
            **pre.to_dict(), "resize_side": pre.resize_side, "normalisation": "inside the graph",
            "steps": ["decode as RGB with EXIF orientation applied",
                      f"resize the shorter side to {pre.resize_side} px ({pre.interpolation})",
                      f"centre-crop {pre.image_size}x{pre.image_size}",
                      "float32 in [0, 1], NCHW (mean/std are applied inside the graph)"]},
        "output": {"name": "probabilities", "calibrated": True,
                   "temperature": predictor.scaler.temperature},
        "trust": export_trust(meta),  # thresholds for the output (zoo.evaluate.trust)
        "split_id": meta.get("split_id"),
        "test_accuracy": meta.get("metrics", {}).get("test", {}).get("accuracy"),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "zoo_version": __version__,
    }


def parity_arrays(predictor: ModelPredictor) -> tuple[list[np.ndarray], str]:
    """Up to 16 test photos of the run, decoded; synthetic photos when they are not available."""
    root = predictor.meta.get("data_root")
    arrays = []
    if root and Path(root).is_dir():
        ids = load_predictions(predictor.path, "test")["ids"].tolist()
        for rel in ids:
            try:
                arrays.append(decode_array(Path(root) / rel, predictor.pre.resize_side))
            except UnreadableImageError:
                continue
            if len(arrays) == PARITY_IMAGES:
                break
    if arrays:
        return arrays, f"{len(arrays)} test photos"
    rng = np.random.default_rng(0)
    side = predictor.pre.resize_side
    arrays = [rng.integers(0, 256, (side, side + 9, 3), dtype=np.uint8) for _ in range(8)]
    return arrays, f"{len(arrays)} synthetic images (test photos not found)"


def to_input(arrays: list[np.ndarray], pre: Preprocessing) -> torch.Tensor:
    """The exported graph's input: eval view of each photo as float32 [0, 1] NCHW."""
    views = np.stack([eval_array(a, pre) for a in arrays])
    return torch.from_numpy(views).permute(0, 3, 1, 2).float().div(255.0).contiguous()


@contextmanager
def _quiet_warnings() -> Iterator[None]:
    """The exporters warn about deprecations and traced constants that do not apply here."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning, torch.jit.TracerWarning):
            warnings.filterwarnings("ignore", category=category)
        yield


def _export_onnx(module: nn.Module, x: torch.Tensor, path: Path, info: dict) -> None:
    try:
        import onnx
    except ImportError as exc:
        raise ZooError("ONNX export needs the onnx and onnxruntime packages: "
                       "pip install 'mineral-zoo[export]'.") from exc
    with _quiet_warnings():
        torch.onnx.export(module, (x[:2],), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["probabilities"],
                          dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}})
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {
        "classes": json.dumps(info["classes"]),
        "preprocessing": json.dumps({"input": info["input"], **info["preprocessing"]}),
        "trust": json.dumps(info["trust"]),
        "zoo": json.dumps(info)})
    model.doc_string = (f"mineral-zoo run {info['run']} ({info['model']}): float32 RGB [0, 1] NCHW "
                        f"{info['input']['height']}x{info['input']['width']} -> calibrated "
                        "probabilities over metadata 'classes'.")
    onnx.save(model, str(path))


def onnx_session(path: Path, threads: int = 0):  # noqa: ANN201 (an onnxruntime InferenceSession)
    """A CPU session for an exported file; ``threads`` 0 lets onnxruntime choose."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ZooError("Running an ONNX file needs onnxruntime: "
                       "pip install 'mineral-zoo[export]'.") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path, x: torch.Tensor) -> np.ndarray:
    return onnx_session(path).run(None, {"image": x.cpu().numpy()})[0]


def _export_torchscript(module: nn.Module, x: torch.Tensor, path: Path, info: dict) -> None:
    with _quiet_warnings():
        traced = torch.jit.trace(module, x[:2])
        torch.jit.save(traced, str(path), _extra_files={"meta.json": json.dumps(info)})


def _run_torchscript(path: Path, x: torch.Tensor) -> np.ndarray:
    with _quiet_warnings(), torch.inference_mode():
        return torch.jit.load(str(path))(x).cpu().numpy()


_EXPORTERS = {"onnx": (_export_onnx, _run_onnx), "torchscript": (_export_torchscript, _run_torchscript),
              "tflite": (export_tflite, run_tflite)}


def export_run(run: str, fmt: str = "onnx", home: Path | None = None,
               runtime: Runtime = Runtime()) -> ExportResult:
    """Write runs/<run>/export/<file>; kept only if it matches PyTorch within ``TOLERANCE``.

    The model is traced, and its PyTorch reference computed, on ``runtime``'s device (fp32; a
    TorchScript file traced on a GPU expects its input there)."""
    if fmt not in FORMATS:
        raise ZooError(f"Unknown export --format '{fmt}': use {', '.join(FORMATS)}.")
    path = run_dir(run, home)
    meta = read_meta(path)
    if meta.get("kind") == "ensemble":
        members = meta.get("members", [])
        raise ZooError(f"'{run}' is an ensemble ({meta.get('description', meta.get('model'))}); "
                       "export works on single models. Export each member "
                       f"(e.g. `zoo export {members[0] if members else 'RUN'} --format {fmt}`) and "
                       f"combine their probabilities as runs/{run}/meta.json 'ensemble' describes.")
    predictor = load_predictor(run, home, runtime)
    arrays, source = parity_arrays(predictor)
    x = runtime.move(to_input(arrays, predictor.pre))
    expected = predictor.predict_arrays(arrays)
    module = Deployable(predictor.model, predictor.pre, predictor.scaler.temperature).eval()
    write, run_file = _EXPORTERS[fmt]
    target = path / "export" / FORMATS[fmt]
    info = export_info(predictor, fmt)
    with atomic_path(target) as tmp:
        write(module, x, tmp, info)
        diff = float(np.abs(run_file(tmp, x) - expected).max())
        if not diff <= TOLERANCE:
            raise ZooError(f"The {fmt} export of '{run}' differs from PyTorch by {diff:.2e} "
                           f"(limit {TOLERANCE:.0e}) on {source}; nothing was written. This model "
                           "may use an operation the exporter does not support: try the other "
                           "--format.", exit_code=3)
    written = [target]
    if fmt == "tflite":
        written.append(write_sidecar(target))
    write_manifest(target.parent, [p.name for p in written])
    return ExportResult(target, diff, source, info=info)
