"""``zoo export RUN --quantize int8``: a static int8 copy of the ONNX or TFLite export.

Calibrated on up to ``CALIBRATION_PHOTOS`` training photos of the run's split, preprocessed as the
export expects (``zoo predict``'s eval view). Size, CPU latency and test accuracy of the float and the
int8 file are measured and stored in ``export/quantize.<format>.json``; the int8 file is kept only if
it loses at most ``tolerance`` points of test accuracy, unless forced. The test split serves that
report and that rule only: nothing is chosen or tuned by it.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoo.data.cache import decode_array
from zoo.data.preprocessing import Preprocessing
from zoo.data.splits import load_split, splits_dir
from zoo.errors import UnreadableImageError, ZooError
from zoo.evaluate.export import onnx_session, to_input
from zoo.evaluate.export_files import write_manifest
from zoo.evaluate.tflite import quantize_tflite, sidecar, tflite_runner, write_sidecar
from zoo.fileio import atomic_path, write_json
from zoo.store.runs import load_predictions, read_meta, run_dir

MODES = ("int8",)
QUANTIZABLE = ("onnx", "tflite")
TOLERANCE_POINTS = 1.0
CALIBRATION_PHOTOS = 200
LATENCY_RUNS, WARMUP_RUNS = 30, 3
CHUNK = 32


def check_quantize(mode: str | None, fmt: str) -> None:
    """Refuse an unknown ``--quantize`` or a format without int8 before anything is exported."""
    if mode is None:
        return
    if mode not in MODES:
        raise ZooError(f"Unknown --quantize '{mode}': use {', '.join(MODES)}.")
    if fmt not in QUANTIZABLE:
        raise ZooError(f"--quantize {mode} works with --format {' or '.join(QUANTIZABLE)}, not {fmt}.")


def int8_path(path: Path) -> Path:
    """``export/model.onnx`` -> ``export/model.int8.onnx``."""
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def report_path(path: Path) -> Path:
    return path.with_name(f"quantize.{path.suffix.lstrip('.')}.json")


def _decode(root: Path, rel: list[str], pre: Preprocessing) -> tuple[np.ndarray, list[int]]:
    """The export's input for the readable photos among ``rel``, and their positions."""
    arrays, kept = [], []
    for i, name in enumerate(rel):
        try:
            arrays.append(decode_array(root / name, pre.resize_side))
        except UnreadableImageError:
            continue
        kept.append(i)
    return (to_input(arrays, pre).numpy() if arrays else np.empty((0, 3, pre.image_size, pre.image_size),
                                                                   np.float32)), kept


def _data_root(meta: dict, run: str) -> Path:
    root = Path(meta.get("data_root") or "")
    if not meta.get("data_root") or not root.is_dir():
        raise ZooError(f"--quantize calibrates on the training photos of '{run}' and checks its test "
                       f"accuracy, but its photo folder {root} is gone: put the photos back there "
                       "(runs/<run>/meta.json 'data_root') or export without --quantize.")
    return root


def calibration_photos(meta: dict, run: str) -> np.ndarray:
    """Up to ``CALIBRATION_PHOTOS`` training photos of the run's split, evenly spread over the
    sorted list (so every class folder contributes), as the export's input."""
    split_file = splits_dir() / f"{meta.get('dataset')}.json"
    if not split_file.is_file():
        raise ZooError(f"--quantize calibrates on the training photos of '{run}', listed in "
                       f"{split_file}, which is missing. Set ZOO_SPLITS_DIR to the folder that holds it.")
    split = load_split(split_file)
    if split.id != meta.get("split_id"):
        raise ZooError(f"{split_file} is split {split.id}, but '{run}' was trained on split "
                       f"{meta.get('split_id')}: its training photos are unknown. Set ZOO_SPLITS_DIR "
                       "to the split folder the run was trained with.")
    train = split.paths("train")
    chosen = train[::max(1, len(train) // CALIBRATION_PHOTOS)][:CALIBRATION_PHOTOS]
    x, _ = _decode(_data_root(meta, run), chosen, Preprocessing.from_dict(meta["preprocessing"]))
    if not len(x):
        raise ZooError(f"None of the training photos of '{run}' could be read: nothing to calibrate on.")
    return x


def labelled_test_photos(path: Path, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """The run's test photos as the export's input, and their labels."""
    test = load_predictions(path, "test")
    x, kept = _decode(_data_root(meta, path.name), test["ids"].tolist(),
                      Preprocessing.from_dict(meta["preprocessing"]))
    if not kept:
        raise ZooError(f"None of the test photos of '{path.name}' could be read: "
                       "int8 accuracy cannot be checked.")
    return x, test["labels"][kept]


def _runner(fmt: str, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if fmt == "onnx":
        session = onnx_session(path, threads)
        return lambda x: session.run(None, {"image": x})[0]
    return tflite_runner(path, threads)


def measure(fmt: str, path: Path, x: np.ndarray, labels: np.ndarray, threads: int) -> dict:
    """Size, test accuracy and median single-photo CPU latency of an exported file."""
    run = _runner(fmt, path, threads)
    probs = np.concatenate([run(x[i:i + CHUNK]) for i in range(0, len(x), CHUNK)])
    for _ in range(WARMUP_RUNS):
        run(x[:1])
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        run(x[:1])
        times.append(time.perf_counter() - start)
    return {"size_mb": round(path.stat().st_size / 1e6, 3),
            "latency_ms": round(statistics.median(times) * 1e3, 2),
            "accuracy": round(float((probs.argmax(1) == labels).mean()), 4)}


def quantize_onnx(source: Path, target: Path, calibration: np.ndarray) -> None:
    """QDQ static int8 by onnxruntime.quantization: weights per channel, activations per tensor
    (MinMax over ``calibration``); the classes and preprocessing metadata are carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(np.array_split(calibration, max(1, len(calibration) // 8)))

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared))
        quantize_static(str(prepared), str(target), Photos(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    props = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    props["zoo"] = json.dumps({**json.loads(props["zoo"]), "quantization":
                               "int8 (static QDQ, onnxruntime.quantization; float32 input and output)"})
    model = onnx.load(str(target))
    onnx.helper.set_model_props(model, props)
    model.doc_string = onnx.load(str(source)).doc_string
    onnx.save(model, str(target))


_QUANTIZERS = {"onnx": quantize_onnx, "tflite": quantize_tflite}


def quantize_export(run: str, fmt: str, source: Path, tolerance: float = TOLERANCE_POINTS,
                    force: bool = False, home: Path | None = None) -> dict:
    """Write ``export/model.int8.<ext>`` beside the float export ``source`` and the report; returns
    the report. Refused (nothing but the report written, exit 3) when the int8 file loses more than
    ``tolerance`` points of test accuracy and ``force`` is off."""
    path = run_dir(run, home)
    meta = read_meta(path)
    calibration = calibration_photos(meta, run)
    x, labels = labelled_test_photos(path, meta)
    target = int8_path(source)
    try:
        report = _quantize_measured(run, fmt, source, target, calibration, x, labels, tolerance, force)
        if fmt == "tflite":
            write_sidecar(target)
    finally:  # files.json lists what is there now (the report even when the copy was refused)
        written = (target, sidecar(target), report_path(source))
        write_manifest(source.parent, [p.name for p in written if p.exists()])
    return report


def _quantize_measured(run: str, fmt: str, source: Path, target: Path, calibration: np.ndarray,
                       x: np.ndarray, labels: np.ndarray, tolerance: float, force: bool) -> dict:
    """Quantize ``source`` into ``target`` (atomically), measure both, write the report; refuse
    (exit 3, ``target`` not written) beyond ``tolerance`` unless ``force``."""
    threads = os.cpu_count() or 1
    with atomic_path(target) as tmp:
        _QUANTIZERS[fmt](source, tmp, calibration)
        before = measure(fmt, source, x, labels, threads)
        after = measure(fmt, tmp, x, labels, threads)
        drop = round((before["accuracy"] - after["accuracy"]) * 100, 2)
        kept = drop <= tolerance or force
        report = {
            "run": run, "format": fmt, "quantization": "int8", "float": source.name, "int8": target.name,
            "kept": kept, "forced": force and drop > tolerance, "tolerance_points": tolerance,
            "accuracy_drop_points": drop, "before": before, "after": after,
            "calibration_photos": len(calibration), "test_photos": len(labels), "threads": threads,
            "latency": f"median of {LATENCY_RUNS} single-photo runs after {WARMUP_RUNS} warm-up runs, CPU",
            "measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(report_path(source), report)
        if not kept:
            raise ZooError(
                f"The int8 {fmt} file of '{run}' loses {drop:.2f} points of test accuracy "
                f"({before['accuracy']:.4f} -> {after['accuracy']:.4f}), more than --tolerance "
                f"{tolerance:g}: it was not written (report: {report_path(source)}). Keep it anyway "
                "with --force, or allow more with --tolerance.", exit_code=3)
    return report
