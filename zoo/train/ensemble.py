"""``zoo ensemble``: combine finished runs' stored probabilities into a first-class ensemble run.

Weights and meta-learners are fitted on validation probabilities only; test probabilities are
only scored. Predicting new photos runs every member (see ``zoo.evaluate.predictor``).
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ensembles import create_method
from zoo.errors import ZooError
from zoo.evaluate.calibration import TemperatureScaler
from zoo.evaluate.metrics import classification_metrics
from zoo.store.leaderboard import record, rows
from zoo.store.runs import load_predictions, new_run_name, read_meta, run_dir, save_predictions, write_meta


def select_members(spec: str | None, top: int | None, home: Path) -> list[str]:
    """``a,b,c``, ``all`` (every finished model) or the ``top`` K models by validation accuracy."""
    if top is not None or spec == "all":
        models = [r for r in rows(home, sort="val_accuracy") if r["kind"] == "model"]
        if models:
            split = models[0]["split_id"]
            models = [r for r in models if r["split_id"] == split]
        return [r["name"] for r in models[: top or len(models)]]
    if not spec:
        raise ZooError("Name the members: --members a,b,c (run names), --members all, or --top K.")
    return [m.strip() for m in spec.split(",") if m.strip()]


def _check_members(names: list[str], metas: list[dict]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ZooError(f"--members lists {', '.join(dupes)} more than once; name each run once.")
    if len(names) < 2:
        raise ZooError(f"An ensemble needs at least 2 members, got {len(names)} ({', '.join(names)}).")
    first = metas[0]
    for name, meta in zip(names, metas):
        if meta.get("kind") != "model":
            raise ZooError(f"Member '{name}' is an ensemble; members must be trained models.")
        if meta.get("status") != "finished":
            raise ZooError(f"Member '{name}' did not finish training (status: {meta.get('status')}).")
        if meta["classes"] != first["classes"]:
            raise ZooError(f"Member '{name}' has classes {meta['classes']} but '{names[0]}' has "
                           f"{first['classes']}: members must be trained on the same classes.")
        if meta["split_id"] != first["split_id"]:
            raise ZooError(f"Member '{name}' was trained on split {meta['split_id']} but "
                           f"'{names[0]}' on split {first['split_id']}: members must share a split.")


def _aligned(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Ids, labels and each member's probabilities in one row order."""
    preds = [load_predictions(p, split) for p in paths]
    ids = preds[0]["ids"]
    probs = []
    for path, pred in zip(paths, preds):
        if sorted(pred["ids"].tolist()) != sorted(ids.tolist()):
            raise ZooError(f"Member '{path.name}' has {split} predictions for other images than "
                           f"'{paths[0].name}'; retrain it on the same split.")
        order = {k: i for i, k in enumerate(pred["ids"].tolist())}
        probs.append(pred["probs"][[order[k] for k in ids.tolist()]])
    return ids, preds[0]["labels"], probs


def build_ensemble(members: list[str], method: str, name: str | None, home: Path) -> Path:
    paths = [run_dir(m, home) for m in members]
    metas = [read_meta(p) for p in paths]
    _check_members(members, metas)
    start = time.perf_counter()
    val_ids, y_val, val_probs = _aligned(paths, "val")
    test_ids, y_test, test_probs = _aligned(paths, "test")
    ensemble = create_method(method).fit(val_probs, y_val)
    raw = {"val": ensemble.val_proba(), "test": ensemble.predict_proba(test_probs)}
    scaler = TemperatureScaler().fit(raw["val"], y_val) if ensemble.out_of_fold else TemperatureScaler()
    name = name or new_run_name(f"ensemble-{method}", home)
    path = run_dir(name, home, must_exist=False)
    if (path / "meta.json").exists():
        raise ZooError(f"A run named '{name}' already exists in {home}; choose another --name.")
    classes = metas[0]["classes"]
    metrics = {}
    for split, ids, y in (("val", val_ids, y_val), ("test", test_ids, y_test)):
        probs = scaler.transform(raw[split])
        save_predictions(path, split, ids.tolist(), y, probs, probs_uncalibrated=raw[split])
        metrics[split] = classification_metrics(y, probs, classes)
    meta = {
        "name": name, "kind": "ensemble", "status": "finished", "model": f"{method} ensemble",
        "method": method, "members": members, "description": ensemble.describe(members),
        "ensemble": ensemble.to_dict(), "calibration": scaler.to_dict(), "classes": classes,
        "dataset": metas[0]["dataset"], "split_id": metas[0]["split_id"], "metrics": metrics,
        "params": sum(m.get("params") or 0 for m in metas),
        "fit_seconds": sum(m.get("fit_seconds") or 0 for m in metas) + time.perf_counter() - start,
        "infer_img_per_s": 1.0 / sum(1.0 / m["infer_img_per_s"] for m in metas),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_meta(path, meta)
    record(meta, home)
    return path
