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
from zoo.evaluate.calibration import TemperatureScaler, expected_calibration_error
from zoo.evaluate.metrics import classification_metrics
from zoo.evaluate.trust import (
    DEFAULT_PRECISION,
    DEFAULT_TPR,
    Trust,
    combine_member_scores,
    fit_trust,
    selective_summary,
)
from zoo.store.checkpoints import verify_checkpoint
from zoo.store.leaderboard import record, rows
from zoo.store.runs import (
    check_name_free,
    load_predictions,
    new_run,
    read_meta,
    run_dir,
    save_predictions,
    write_meta,
)


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


def _check_members(names: list[str], metas: list[dict], paths: list[Path]) -> None:
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
    for name, path, meta in zip(names, paths, metas):
        try:
            verify_checkpoint(path, meta)  # the ensemble will run it: its checkpoint must fit
        except ZooError as exc:
            raise ZooError(f"Member '{name}' cannot be used: {exc}") from exc


def _aligned(paths: list[Path], split: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray],
                                                     list[np.ndarray | None]]:
    """Ids, labels, each member's probabilities and OOD scores (None for a member trained before
    they were stored) in one row order."""
    preds = [load_predictions(p, split) for p in paths]
    ids = preds[0]["ids"]
    probs, ood = [], []
    for path, pred in zip(paths, preds):
        if sorted(pred["ids"].tolist()) != sorted(ids.tolist()):
            raise ZooError(f"Member '{path.name}' has {split} predictions for other images than "
                           f"'{paths[0].name}'; retrain it on the same split.")
        order = {k: i for i, k in enumerate(pred["ids"].tolist())}
        rows = [order[k] for k in ids.tolist()]
        probs.append(pred["probs"][rows])
        ood.append(pred["ood"][rows] if "ood" in pred else None)
    return ids, preds[0]["labels"], probs, ood


def _member_scales(members: list[str], metas: list[dict]) -> list[dict] | None:
    """Each member's OOD scale (its validation median and threshold), or None when a member has
    no unknown-mineral check (trained before it existed)."""
    oods = [(m.get("trust") or {}).get("ood") for m in metas]
    if not all(oods):
        return None
    return [{"run": name, "median": o["median"], "threshold": o["threshold"]}
            for name, o in zip(members, oods)]


def build_ensemble(members: list[str], method: str, name: str | None, home: Path,
                   target_precision: float = DEFAULT_PRECISION, known_tpr: float = DEFAULT_TPR) -> Path:
    if name is not None:
        check_name_free(name, home)
    paths = [run_dir(m, home) for m in members]
    metas = [read_meta(p) for p in paths]
    _check_members(members, metas, paths)
    start = time.perf_counter()
    val_ids, y_val, val_probs, val_ood = _aligned(paths, "val")
    test_ids, y_test, test_probs, test_ood = _aligned(paths, "test")
    ensemble = create_method(method).fit(val_probs, y_val)
    raw = {"val": ensemble.val_proba(), "test": ensemble.predict_proba(test_probs)}
    scaler = TemperatureScaler().fit(raw["val"], y_val) if ensemble.out_of_fold else TemperatureScaler()
    classes = metas[0]["classes"]
    scales = _member_scales(members, metas)
    ood = {"val": None, "test": None}
    if scales is not None and all(o is not None for o in val_ood + test_ood):
        ood = {"val": combine_member_scores(val_ood, scales), "test": combine_member_scores(test_ood, scales)}
    # Validation only (out-of-fold for stacking): the test labels are never seen by the thresholds.
    trust = fit_trust(scaler.transform(raw["val"]), y_val, ood["val"], target_precision, known_tpr,
                      {"method": "members", "members": scales} if ood["val"] is not None else None,
                      "out-of-fold validation" if ensemble.out_of_fold else "validation")
    judge = Trust.from_meta(trust)
    with new_run(home, name, f"ensemble-{method}") as path:
        metrics = {}
        for split, ids, y in (("val", val_ids, y_val), ("test", test_ids, y_test)):
            probs = scaler.transform(raw[split])
            extra = {"ood": ood[split]} if ood[split] is not None else {}
            save_predictions(path, split, ids.tolist(), y, probs, probs_uncalibrated=raw[split], **extra)
            metrics[split] = classification_metrics(y, probs, classes)
            metrics[split]["ece_uncalibrated"] = float(expected_calibration_error(y, raw[split]))
            metrics[split]["selective"] = selective_summary(judge, probs, y, ood[split], classes)
        meta = {
            "name": path.name, "kind": "ensemble", "status": "finished", "model": f"{method} ensemble",
            "method": method, "members": members, "description": ensemble.describe(members),
            "ensemble": ensemble.to_dict(), "calibration": scaler.to_dict(), "trust": trust,
            "classes": classes,
            "dataset": metas[0]["dataset"], "split_id": metas[0]["split_id"], "metrics": metrics,
            "params": sum(m.get("params") or 0 for m in metas),
            "fit_seconds": sum(m.get("fit_seconds") or 0 for m in metas) + time.perf_counter() - start,
            "infer_img_per_s": 1.0 / sum(1.0 / m["infer_img_per_s"] for m in metas),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        write_meta(path, meta)
        record(meta, home)
    return path
