"""Load a finished run or ensemble as one object that turns photos into probabilities.

Each model brings its own preprocessing and calibration, so an ensemble can mix models that
want different image sizes and normalisations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from zoo.calibration import TemperatureScaler
from zoo.errors import ZooError
from zoo.registry import Preprocessing, build_model
from zoo.runs import read_meta, run_dir
from zoo.training import predict_logits


class ModelPredictor:
    kind = "model"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta = read_meta(path)
        if self.meta.get("status") != "finished":
            raise ZooError(f"Run '{path.name}' did not finish (status: {self.meta.get('status')}); "
                           f"resume it with `zoo train {self.meta.get('model')} --resume {path.name}`.")
        self.name = self.meta["name"]
        self.classes: list[str] = self.meta["classes"]
        self.pre = Preprocessing.from_dict(self.meta["preprocessing"])
        self.model = build_model(self.meta["model"], len(self.classes), **self.meta.get("model_kwargs", {}))
        try:
            self.model.load_state_dict(load_file(str(path / "model.safetensors")))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ZooError(f"Checkpoint {path / 'model.safetensors'} cannot be loaded: {exc}") from exc
        self.model.eval()
        self.scaler = TemperatureScaler.from_dict(self.meta.get("calibration", {"temperature": 1.0}))

    def predict_arrays(self, arrays: list[np.ndarray], calibrated: bool = True) -> np.ndarray:
        probs = torch.softmax(predict_logits(self.model, arrays, self.pre), 1).numpy()
        return self.scaler.transform(probs) if calibrated else probs

    def predict_proba(self, images: list[Image.Image]) -> np.ndarray:
        return self.predict_arrays([np.asarray(img.convert("RGB")) for img in images])

    def info(self) -> dict:
        test = self.meta.get("metrics", {}).get("test", {})
        val = self.meta.get("metrics", {}).get("val", {})
        return {"name": self.name, "kind": self.kind, "model": self.meta["model"],
                "classes": self.classes, "metrics": {
                    "test_accuracy": test.get("accuracy"), "val_accuracy": val.get("accuracy"),
                    "macro_f1": test.get("macro_f1"), "nll": test.get("nll"), "ece": test.get("ece")}}


class EnsemblePredictor(ModelPredictor):
    """Runs every member on the photos, then combines them with the fitted ensemble method."""

    kind = "ensemble"

    def __init__(self, path: Path) -> None:
        from ensembles import load_method

        self.path = path
        self.meta = read_meta(path)
        self.name = self.meta["name"]
        self.classes = self.meta["classes"]
        self.members = [load_predictor(m, path.parent) for m in self.meta["members"]]
        self.method = load_method(self.meta["ensemble"])
        self.scaler = TemperatureScaler.from_dict(self.meta.get("calibration", {"temperature": 1.0}))

    def predict_arrays(self, arrays: list[np.ndarray], calibrated: bool = True) -> np.ndarray:
        probs = self.method.predict_proba([m.predict_arrays(arrays) for m in self.members])
        return self.scaler.transform(probs) if calibrated else probs


def load_predictor(run: str, home: Path | None = None) -> ModelPredictor:
    path = run_dir(run, home)
    kind = read_meta(path).get("kind", "model")
    return EnsemblePredictor(path) if kind == "ensemble" else ModelPredictor(path)
