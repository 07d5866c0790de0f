"""Load a finished run or ensemble as one object that turns photos into probabilities.

Each model brings its own preprocessing and calibration, so an ensemble can mix models that
want different image sizes and normalisations. ``tta=True`` averages the probabilities of the
views in ``zoo.data.tta`` (each model builds them with its own preprocessing). Every model runs
on the ``Runtime`` given (default: the CPU in fp32); an ensemble's members share it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zoo.data.preprocessing import Preprocessing
from zoo.data.tta import TTA_VIEWS, tta_views
from zoo.errors import ZooError
from zoo.evaluate.calibration import TemperatureScaler
from zoo.evaluate.explain import model_heatmaps, weighted_heatmaps
from zoo.evaluate.trust import OodScorer, Trust, combine_member_scores
from zoo.models.factory import build_model
from zoo.models.inference import predict_logits, predict_outputs, view_logits, view_outputs
from zoo.models.runtime import Runtime
from zoo.store.checkpoints import verify_checkpoint
from zoo.store.runs import load_weights, read_meta, run_dir

TTA_CHUNK = 32  # photos per TTA batch (x5 views)


class ModelPredictor:
    kind = "model"

    def __init__(self, path: Path, runtime: Runtime = Runtime()) -> None:
        self.path = path
        self.runtime = runtime
        self.meta = read_meta(path)
        if self.meta.get("status") != "finished":
            raise ZooError(f"Run '{path.name}' did not finish (status: {self.meta.get('status')}); "
                           f"resume it with `zoo train {self.meta.get('model')} --resume {path.name}`.")
        self.name = self.meta["name"]
        self.classes: list[str] = self.meta["classes"]
        self.pre = Preprocessing.from_dict(self.meta["preprocessing"])
        verify_checkpoint(path, self.meta)  # before building: the header must fit meta.json
        self.model = build_model(self.meta["model"], len(self.classes), **self.meta.get("model_kwargs", {}))
        weights = load_weights(path / "model.safetensors")
        try:
            self.model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ZooError(f"Checkpoint {path / 'model.safetensors'} cannot be loaded: "
                           f"{str(exc)[:300]}") from exc
        self.model.to(runtime.device).eval()
        self.scaler = TemperatureScaler.from_dict(self.meta.get("calibration", {"temperature": 1.0}))
        self.trust = Trust.from_meta(self.meta.get("trust"))
        ood = (self.meta.get("trust") or {}).get("ood")
        self.ood = OodScorer.load(path, ood) if ood else None

    @property
    def decode_side(self) -> int:
        """Shorter side to decode photos at: enough for the eval view and every TTA view."""
        return self.pre.resize_side

    def raw_proba(self, arrays: list[np.ndarray], tta: bool = False) -> np.ndarray:
        """Uncalibrated probabilities (N, C) of decoded uint8 HxWx3 photos."""
        if not arrays:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        if not tta:
            return torch.softmax(predict_logits(self.model, arrays, self.pre, runtime=self.runtime),
                                 1).numpy()
        return np.concatenate([self._tta_proba(arrays[i:i + TTA_CHUNK])
                               for i in range(0, len(arrays), TTA_CHUNK)])

    @torch.inference_mode()
    def _tta_proba(self, arrays: list[np.ndarray]) -> np.ndarray:
        self.model.eval()
        views = [v for a in arrays for v in tta_views(a, self.pre)]
        probs = torch.softmax(view_logits(self.model, views, self.pre, self.runtime), 1).numpy()
        return probs.reshape(len(arrays), len(TTA_VIEWS), -1).mean(1)

    def raw_outputs(self, arrays: list[np.ndarray], tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Uncalibrated probabilities (N, C) and OOD scores (N,) of decoded photos; the scores
        are None when the run has no unknown-mineral check. With ``tta`` the probabilities are
        averaged over the views and the OOD score is that of the plain (identity) view, the view
        its threshold was fitted on."""
        if self.ood is None:
            return self.raw_proba(arrays, tta), None
        if not arrays:
            return np.zeros((0, len(self.classes)), dtype=np.float32), np.zeros(0, np.float32)
        if not tta:
            logits, feats = predict_outputs(self.model, arrays, self.pre, runtime=self.runtime)
            return torch.softmax(logits, 1).numpy(), self.ood.score(logits.numpy(), feats.numpy())
        parts = [self._tta_outputs(arrays[i:i + TTA_CHUNK]) for i in range(0, len(arrays), TTA_CHUNK)]
        return np.concatenate([p for p, _ in parts]), np.concatenate([o for _, o in parts])

    @torch.inference_mode()
    def _tta_outputs(self, arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        views = [v for a in arrays for v in tta_views(a, self.pre)]
        logits, feats = view_outputs(self.model, views, self.pre, self.runtime)
        n, v = len(arrays), len(TTA_VIEWS)
        probs = torch.softmax(logits, 1).numpy().reshape(n, v, -1).mean(1)
        plain = slice(0, n * v, v)  # TTA_VIEWS[0] is the identity view
        return probs, self.ood.score(logits[plain].numpy(), feats[plain].numpy())

    def outputs(self, arrays: list[np.ndarray], tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities and OOD scores (None without an unknown-mineral check)."""
        raw, ood = self.raw_outputs(arrays, tta)
        return self.scaler.transform(raw), ood

    def judge(self, probs: np.ndarray, ood: np.ndarray | None) -> list[dict] | None:
        """Status, confidence, OOD score and candidates per photo; None for a run trained before
        trust thresholds existed."""
        return self.trust.judge(probs, ood, self.classes) if self.trust is not None else None

    def predict_rows(self, images: list[Image.Image]) -> np.ndarray:
        """One row per photo: the calibrated probabilities, then the OOD score (NaN without an
        unknown-mineral check); `zoo serve` batches photos through this."""
        probs, ood = self.outputs([np.asarray(img.convert("RGB")) for img in images])
        col = np.full(len(probs), np.nan, np.float32) if ood is None else ood
        return np.hstack([probs, np.asarray(col, np.float32)[:, None]])

    def predict_arrays(self, arrays: list[np.ndarray], calibrated: bool = True,
                       tta: bool = False) -> np.ndarray:
        probs = self.raw_proba(arrays, tta)
        return self.scaler.transform(probs) if calibrated else probs

    def predict_proba(self, images: list[Image.Image], tta: bool = False) -> np.ndarray:
        return self.predict_arrays([np.asarray(img.convert("RGB")) for img in images], tta=tta)

    def heatmaps(self, arrays: list[np.ndarray], targets: list[int]) -> list[np.ndarray]:
        """Grad-CAM maps of class ``targets[i]`` over decoded photo ``arrays[i]`` (see
        ``zoo.evaluate.explain``): HxW in [0, 1], NaN where the model did not look."""
        return model_heatmaps(self.model, self.pre, arrays, targets, self.runtime)

    def info(self) -> dict:
        test = self.meta.get("metrics", {}).get("test", {})
        val = self.meta.get("metrics", {}).get("val", {})
        return {"name": self.name, "kind": self.kind, "model": self.meta["model"],
                "classes": self.classes, "metrics": {
                    "test_accuracy": test.get("accuracy"), "val_accuracy": val.get("accuracy"),
                    "macro_f1": test.get("macro_f1"), "nll": test.get("nll"), "ece": test.get("ece")},
                "trust": self.trust_info()}

    def trust_info(self) -> dict | None:
        """The fitted thresholds, for people and programs (`GET /api/model`)."""
        trust = self.meta.get("trust")
        if not trust:
            return None
        ood = trust.get("ood") or {}
        return {"target_precision": trust["target_precision"],
                "confidence_threshold": trust.get("confidence_threshold"),
                "ood_method": ood.get("method"), "ood_threshold": ood.get("threshold"),
                "known_tpr": ood.get("known_tpr")}


class EnsemblePredictor(ModelPredictor):
    """Runs every member on the photos, then combines them with the fitted ensemble method."""

    kind = "ensemble"

    def __init__(self, path: Path, runtime: Runtime = Runtime()) -> None:
        from ensembles import load_method

        self.path = path
        self.runtime = runtime
        self.meta = read_meta(path)
        self.name = self.meta["name"]
        self.classes = self.meta["classes"]
        for member in self.meta["members"]:
            check_member(path, member, read_meta(run_dir(member, path.parent)))
        self.members = [load_predictor(m, path.parent, runtime) for m in self.meta["members"]]
        self.method = load_method(self.meta["ensemble"])
        self.scaler = TemperatureScaler.from_dict(self.meta.get("calibration", {"temperature": 1.0}))
        self.trust = Trust.from_meta(self.meta.get("trust"))
        ood = (self.meta.get("trust") or {}).get("ood")
        by_run = {n["run"]: n for n in (ood or {}).get("members", [])}
        usable = set(by_run) == set(self.meta["members"]) and all(m.ood is not None for m in self.members)
        # each member's scale, in member order (None: no unknown-mineral check)
        self.norms = [by_run[m] for m in self.meta["members"]] if usable else None
        self.ood = None

    @property
    def decode_side(self) -> int:
        return max(m.decode_side for m in self.members)

    def raw_proba(self, arrays: list[np.ndarray], tta: bool = False) -> np.ndarray:
        """The fitted combination of the members' calibrated probabilities (each with its own TTA)."""
        if not arrays:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self.method.predict_proba([m.predict_arrays(arrays, tta=tta) for m in self.members])

    def raw_outputs(self, arrays: list[np.ndarray], tta: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """The combined probabilities and the members' OOD scores combined
        (``zoo.evaluate.trust.combine_member_scores``)."""
        if self.norms is None:
            return self.raw_proba(arrays, tta), None
        if not arrays:
            return np.zeros((0, len(self.classes)), dtype=np.float32), np.zeros(0, np.float32)
        outs = [m.outputs(arrays, tta) for m in self.members]
        probs = self.method.predict_proba([p for p, _ in outs])
        return probs, combine_member_scores([o for _, o in outs], self.norms)

    def heatmaps(self, arrays: list[np.ndarray], targets: list[int]) -> list[np.ndarray]:
        """The members' maps, averaged with the ensemble's member weights (``weighted``: its
        fitted weights; ``soft`` and ``stack``: equal weights); members of weight 0 are skipped."""
        weights = getattr(self.method, "weights_", None)
        weights = np.ones(len(self.members)) if weights is None else np.asarray(weights)
        used = np.flatnonzero(weights > 0)
        return weighted_heatmaps([self.members[i].heatmaps(arrays, targets) for i in used], weights[used])


def check_member(ensemble: Path, member: str, meta: dict) -> None:
    """An ensemble's members are trained models: never the ensemble itself or another ensemble."""
    if member == ensemble.name or meta.get("kind") != "model":
        raise ZooError(f"Ensemble {ensemble / 'meta.json'} lists '{member}' as a member, but "
                       f"'{member}' is {'the ensemble itself' if member == ensemble.name else 'an ensemble'}: "
                       "members must be trained models. Re-create the ensemble with `zoo ensemble`.")


def top_k(probs: np.ndarray, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """For each row of ``probs`` (N, C): its ``k`` most probable classes with their
    probabilities, most probable first (ties: the earlier class first, as argmax)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]


def load_predictor(run: str, home: Path | None = None, runtime: Runtime = Runtime()) -> ModelPredictor:
    """A run or ensemble ready to predict on ``runtime`` (``Runtime.create("cuda")``, ...)."""
    path = run_dir(run, home)
    kind = read_meta(path).get("kind", "model")
    return (EnsemblePredictor if kind == "ensemble" else ModelPredictor)(path, runtime)
