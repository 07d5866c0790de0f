"""``zoo evaluate`` and ``zoo predict``: score a run or ensemble on photos, or predict new photos.

A run is scored on its own test split (its stored test predictions, or the photos again when
test-time augmentation is asked for) or on any folder of ``<class>/<image>`` photos. External
and TTA evaluations are stored in ``runs/<run>/evaluations/<name>[-tta].json`` (+ ``.npz`` with
the probabilities) and ranked on the leaderboard.
"""
from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from zoo.data.cache import decode_array
from zoo.data.dataset import visible_files
from zoo.data.imaging import read_photo
from zoo.data.splits import splits_dir
from zoo.data.tta import TTA_VIEWS
from zoo.errors import UnreadableImageError, ZooError
from zoo.evaluate.calibration import TemperatureScaler, expected_calibration_error
from zoo.evaluate.metrics import classification_metrics
from zoo.evaluate.predictor import ModelPredictor, load_predictor
from zoo.evaluate.trust import STATUSES, Trust, auroc, fpr_at_tpr, selective_summary
from zoo.fileio import write_json
from zoo.models.runtime import Runtime
from zoo.store.leaderboard import record_evaluation
from zoo.store.runs import load_predictions, read_meta, run_dir, write_probabilities

SPLIT_STEM = "test-split"  # file name of evaluations on the run's own test split
CHUNK = 64                 # photos decoded and predicted at a time (bounded memory)
TOP_LOSSES = 12
Progress = Callable[[int, int], None]


@dataclass
class FilePredictions:
    """Probabilities of the readable files among those asked for; the others with a reason."""

    files: list[Path]
    raw: np.ndarray            # uncalibrated (N, C)
    probs: np.ndarray          # calibrated (N, C)
    sha256: list[str]
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    ood: np.ndarray | None = None  # OOD scores (N,); None without an unknown-mineral check


@dataclass
class Evaluation:
    run: str
    on: str | None             # external folder name; None for the run's own test split
    tta: bool
    source: str                # where the photos (or probabilities) came from
    root: Path | None          # folder the ids are relative to; None when the photos are gone
    classes: list[str]
    ids: list[str]
    labels: np.ndarray
    probs: np.ndarray
    raw: np.ndarray | None
    metrics: dict
    val_metrics: dict | None = None
    missing: list[str] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    seen_in_training: int = 0
    ood: np.ndarray | None = None      # OOD scores of the photos (None without a check)
    open_set: dict | None = None       # photos of the folder's unknown classes: how they were judged
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def name(self) -> str:
        return f"{self.run}+tta" if self.tta else self.run

    @property
    def stored(self) -> bool:
        """Stored and ranked: external folders and TTA (plain own-split scores are in meta.json)."""
        return self.on is not None or self.tta

    @property
    def stem(self) -> str:
        base = SPLIT_STEM if self.on is None else safe_stem(self.on)
        return base + ("-tta" if self.tta else "")

    def to_dict(self) -> dict:
        return {"run": self.run, "on": self.on, "tta": self.tta,
                "views": len(TTA_VIEWS) if self.tta else 1, "source": self.source,
                "root": str(self.root) if self.root else None, "created": self.created,
                "classes": self.classes, "metrics": self.metrics, "val_metrics": self.val_metrics,
                "missing": self.missing, "unknown": self.unknown,
                "unreadable": [list(u) for u in self.unreadable],
                "seen_in_training": self.seen_in_training, "open_set": self.open_set}


def safe_stem(name: str) -> str:
    """A file-name-safe form of a folder name, never equal to the own-split stem."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "folder"
    return f"{stem}-folder" if stem in (SPLIT_STEM, SPLIT_STEM + "-tta") else stem


# ---- decoding and predicting files ----------------------------------------------------------
def _decode(path: Path, side: int) -> tuple[np.ndarray, str] | str:
    """(array, sha256) of a photo, or the reason it cannot be used."""
    try:
        data = read_photo(path)
        return decode_array(data, side), hashlib.sha256(data).hexdigest()
    except UnreadableImageError as exc:
        return exc.reason


def predict_files(predictor: ModelPredictor, files: list[Path], tta: bool = False,
                  progress: Progress | None = None) -> FilePredictions:
    """Decode and predict photos a chunk at a time; unreadable files are listed, never fatal."""
    ok, shas, raw, ood, bad = [], [], [], [], []
    with ThreadPoolExecutor(2) as pool:
        for start in range(0, len(files), CHUNK):
            chunk = files[start:start + CHUNK]
            arrays = []
            for path, res in zip(chunk, pool.map(lambda p: _decode(p, predictor.decode_side), chunk)):
                if isinstance(res, str):
                    bad.append((path, res))
                else:
                    ok.append(path)
                    arrays.append(res[0])
                    shas.append(res[1])
            probs, scores = predictor.raw_outputs(arrays, tta)
            raw.append(probs)
            ood.append(scores)
            if progress:
                progress(min(start + CHUNK, len(files)), len(files))
    raw_all = np.concatenate(raw) if raw else np.zeros((0, len(predictor.classes)), np.float32)
    ood_all = np.concatenate(ood) if ood and ood[0] is not None else None
    return FilePredictions(ok, raw_all, predictor.scaler.transform(raw_all), shas, bad, ood_all)


# ---- evaluation -----------------------------------------------------------------------------
def _scores(labels: np.ndarray, probs: np.ndarray, raw: np.ndarray | None, classes: list[str],
            trust: Trust | None = None, ood: np.ndarray | None = None) -> dict:
    with warnings.catch_warnings():  # a class missing from an external folder is reported by us
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        metrics = classification_metrics(labels, probs, classes)
    metrics["ece_uncalibrated"] = (float(expected_calibration_error(labels, raw))
                                   if raw is not None else None)
    # at the stored thresholds (fitted on validation at training time)
    metrics["selective"] = selective_summary(trust, probs, labels, ood, classes)
    return metrics


def _data_root(meta: dict, home: Path | None) -> Path | None:
    """Where the run's photos were (an ensemble's: its first member's)."""
    if meta.get("kind") == "ensemble":
        meta = read_meta(run_dir(meta["members"][0], home))
    root = meta.get("data_root")
    return Path(root) if root else None


def _from_stored(path: Path, meta: dict, home: Path | None) -> Evaluation:
    pred = load_predictions(path, "test")
    raw = pred.get("probs_uncalibrated")
    root = _data_root(meta, home)
    trust, ood = Trust.from_meta(meta.get("trust")), pred.get("ood")
    return Evaluation(meta["name"], None, False, f"stored test predictions ({path / 'predictions'})",
                      root if root and root.is_dir() else None, meta["classes"],
                      pred["ids"].tolist(), pred["labels"], pred["probs"], raw,
                      _scores(pred["labels"], pred["probs"], raw, meta["classes"], trust, ood), ood=ood)


def _rescore_split(predictor: ModelPredictor, root: Path, split: str, tta: bool,
                   progress: Progress | None) -> tuple[list[str], np.ndarray, FilePredictions]:
    pred = load_predictions(predictor.path, split)
    ids = pred["ids"].tolist()
    result = predict_files(predictor, [root / i for i in ids], tta, progress)
    if result.unreadable:
        path, reason = result.unreadable[0]
        raise ZooError(f"{len(result.unreadable)} photo(s) of the {split} split of "
                       f"'{predictor.name}' cannot be read (e.g. {path}: {reason}). Restore the "
                       f"dataset at {root}, or evaluate without --tta to use stored predictions.")
    return ids, pred["labels"], result


def _own_split(predictor: ModelPredictor, tta: bool, home: Path | None,
               progress: Progress | None) -> Evaluation:
    """Score the run's own test split from its photos (and validation too, with TTA)."""
    root = _data_root(predictor.meta, home)
    if root is None or not root.is_dir():
        raise ZooError(f"The photos of run '{predictor.name}' are not at {root} any more: "
                       "restore the dataset there, or evaluate without --tta to use the stored "
                       "test predictions.")
    classes = predictor.classes
    ids, labels, test = _rescore_split(predictor, root, "test", tta, progress)
    test_probs, val_metrics = test.probs, None
    if tta:  # TTA averages soften probabilities: refit the temperature on validation TTA views
        _, val_labels, val = _rescore_split(predictor, root, "val", tta, progress)
        scaler = TemperatureScaler(min_temperature=predictor.scaler.min_temperature).fit(val.raw, val_labels)
        test_probs = scaler.transform(test.raw)
        val_metrics = _scores(val_labels, scaler.transform(val.raw), val.raw, classes)
    ev = Evaluation(predictor.name, None, tta, f"{root} (test split)", root, classes, ids,
                    labels, test_probs, test.raw,
                    _scores(labels, test_probs, test.raw, classes, predictor.trust, test.ood), ood=test.ood)
    ev.val_metrics = val_metrics
    return ev


def _class_folders(folder: Path, classes: list[str]) -> tuple[dict[Path, int], dict[str, int]]:
    """Known class folders -> class index (names matched ignoring case); unknown -> file count.

    Nothing is walked before at least one folder is known to be a class of the model, so a
    wrong ``--data`` (``/``) is refused at once."""
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        raise ZooError(f"No class folders in {folder}: expected {folder}/<class>/<image>, with "
                       "class folders named like the model's classes.")
    index = {c.casefold(): i for i, c in enumerate(classes)}
    known = {d: index[d.name.casefold()] for d in subdirs if d.name.casefold() in index}
    if not known:
        names = ", ".join(d.name for d in subdirs[:20]) + (", ..." if len(subdirs) > 20 else "")
        raise ZooError(f"None of the class folders in {folder} ({names}) is a class "
                       f"of this model ({', '.join(classes)}): nothing to evaluate.")
    unknown = {d.name: len(visible_files(d)) for d in subdirs if d not in known}
    return known, unknown


def _training_hashes(meta: dict, home: Path | None) -> set[str]:
    """sha256 of the run's train and validation photos, from its split file (empty if gone)."""
    if meta.get("kind") == "ensemble":
        meta = read_meta(run_dir(meta["members"][0], home))
    try:
        data = json.loads((splits_dir() / f"{meta.get('dataset')}.json").read_text())
    except (OSError, ValueError):
        return set()
    if data.get("id") != meta.get("split_id"):
        return set()
    return {it["sha256"] for it in data.get("items", []) if it.get("split") in ("train", "val")}


def _external(predictor: ModelPredictor, folder: Path, tta: bool, home: Path | None,
              progress: Progress | None) -> Evaluation:
    known, unknown = _class_folders(folder, predictor.classes)
    files = visible_files(*known)
    label_of = {d.name: label for d, label in known.items()}
    result = predict_files(predictor, files, tta, progress)
    if not result.files:
        raise ZooError(f"No readable photo in the class folders of {folder} "
                       f"({len(result.unreadable)} unreadable).")
    y = np.array([label_of[f.relative_to(folder).parts[0]] for f in result.files], dtype=np.int64)
    classes = predictor.classes
    seen = _training_hashes(predictor.meta, home)
    return Evaluation(
        predictor.name, folder.name, tta, str(folder), folder, classes,
        [f.relative_to(folder).as_posix() for f in result.files], y, result.probs, result.raw,
        _scores(y, result.probs, result.raw, classes, predictor.trust, result.ood),
        missing=[c for i, c in enumerate(classes) if i not in set(y.tolist())], unknown=unknown,
        unreadable=[(f.relative_to(folder).as_posix(), r) for f, r in result.unreadable],
        seen_in_training=sum(s in seen for s in result.sha256), ood=result.ood,
        open_set=_open_set(predictor, folder, unknown, result, tta, progress))


def _open_set(predictor: ModelPredictor, folder: Path, unknown: dict[str, int],
              known: FilePredictions, tta: bool, progress: Progress | None) -> dict | None:
    """The photos of the folder's class folders that the model does not know: how many were
    called unknown, unsure or confident, and how well the OOD score tells them from the known
    classes' photos (AUROC)."""
    if not unknown or predictor.trust is None:
        return None
    files = visible_files(*(folder / name for name in unknown))
    result = predict_files(predictor, files, tta, progress)
    if not result.files:
        return None
    verdicts = predictor.judge(result.probs, result.ood)
    statuses = [v["status"] for v in verdicts]
    out = {"folders": sorted(unknown), "photos": len(result.files),
           "statuses": {s: statuses.count(s) for s in STATUSES},
           "top_probability_over_0_9": int((result.probs.max(1) >= 0.9).sum())}
    if result.ood is not None and known.ood is not None and len(known.ood):
        out["auroc"] = auroc(known.ood, result.ood)
        out["fpr_at_95_tpr"] = fpr_at_tpr(known.ood, result.ood, 0.95)
    return out


def evaluate(run: str, data: str | Path | None = None, tta: bool = False,
             home: Path | None = None, progress: Progress | None = None,
             runtime: Runtime = Runtime()) -> Evaluation:
    """Score ``run`` on its test split, or on the folder ``data`` of ``<class>/<image>`` photos.

    Without ``data`` and ``tta`` the stored test predictions are scored (no model is run);
    otherwise the model runs on ``runtime``. A
    ``data`` folder that is the run's own dataset means its test split, never its training photos.
    """
    path = run_dir(run, home)
    meta = read_meta(path)
    folder = Path(data).expanduser().resolve() if data is not None else None
    if folder is not None and not folder.is_dir():
        raise ZooError(f"Evaluation folder not found: {folder}. Pass a folder of class folders "
                       "(<class>/<image>).")
    own_root = _data_root(meta, home)
    if folder is not None and own_root is not None and folder == own_root.resolve():
        folder = None
    if folder is None and not tta:
        return _from_stored(path, meta, home)
    predictor = load_predictor(run, home, runtime)
    if folder is None:
        return _own_split(predictor, tta, home, progress)
    return _external(predictor, folder, tta, home, progress)


# ---- storing --------------------------------------------------------------------------------
def save_evaluation(ev: Evaluation, home: Path | None = None) -> Path:
    """Write evaluations/<stem>.json and .npz in the run folder and rank it on the leaderboard."""
    path = run_dir(ev.run, home)
    folder = path / "evaluations"
    write_json(folder / f"{ev.stem}.json", ev.to_dict())
    extra = {"probs_uncalibrated": np.asarray(ev.raw, np.float32)} if ev.raw is not None else {}
    if ev.ood is not None:
        extra["ood"] = np.asarray(ev.ood, np.float32)
    write_probabilities(folder / f"{ev.stem}.npz", ev.ids, ev.labels, ev.probs, **extra)
    record_evaluation(read_meta(path), ev.to_dict(), path.parent)
    return folder / f"{ev.stem}.json"


def top_losses(ev: Evaluation, k: int = TOP_LOSSES) -> list[int]:
    """Indices of the misclassified photos with the highest loss (-log p(true class)), worst first."""
    p_true = ev.probs[np.arange(len(ev.labels)), ev.labels]
    wrong = np.flatnonzero(ev.probs.argmax(1) != ev.labels)
    return wrong[np.argsort(p_true[wrong], kind="stable")][:k].tolist()
