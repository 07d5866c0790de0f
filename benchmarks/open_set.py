"""Open-set benchmark: how well do the OOD scores tell photos of an unknown mineral from photos
of the known ones, measured without outside data (leave-one-class-out).

For each class H of the dataset: train the recipe on the other classes (their own split, made
by the zoo: train for training, val for early stopping, calibration and the thresholds), then
score the known classes' test photos and every photo of H with each OOD score of
``zoo.evaluate.trust.OodScorer`` (feature statistics from the training photos, as ``zoo train``
stores them). Reported per score, averaged over the held-out classes:

- AUROC of known test photos vs H's photos (H positive, higher score = stranger);
- FPR at 95% TPR: the share of H's photos taken for known at the threshold that keeps 95% of
  the known test photos (the usual definition);
- at the deployed operating point (threshold fitted on the known classes' validation photos for
  95% TPR, as ``zoo train`` does): the known test photos kept, and H's photos flagged unknown.

A second check scores real photos of other things shipped inside installed Python packages
(scikit-learn's sample images, matplotlib's sample data, scikit-image's data module when it is
installed) and three synthetic images (noise, a flat colour, a text rendering) with every fold's
model: AUROC against that fold's known test photos, and the share flagged unknown.

The shipped score (``trust.ood_score``) is chosen on both checks: unknown minerals (mean
leave-one-class-out AUROC) and photos of other things; the test photos of the full dataset are
never used here.

    export ZOO_DATA=/path/to/minerals ZOO_WEIGHTS_DIR=/path/to/weights
    python benchmarks/open_set.py --json open_set.json                     # tf_efficientnet_lite0
    python benchmarks/open_set.py --recipe custom_cnn --work /tmp/os-cnn    # keep runs, resumable
    python benchmarks/open_set.py --set train.epochs=4                      # a shorter schedule

Everything happens in a private folder (``--work``, default a new temporary one): its own
ZOO_HOME, splits and decode cache, so your runs and leaderboard are never touched. A held-out
class whose outputs are already in ``--work`` is not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCORES = [("msp", {}), ("energy", {}), ("maxlogit", {}), ("mahalanobis", {}),
          ("knn", {"k": 1}), ("knn", {"k": 5}), ("knn", {"k": 10})]


def score_name(method: str, params: dict) -> str:
    return method + "".join(f" {k}={v}" for k, v in params.items())


def package_photos() -> list[Path]:
    """Real photos (not minerals) shipped inside installed packages."""
    import importlib.util

    found = []
    spec = importlib.util.find_spec("sklearn")
    if spec and spec.origin:
        found += sorted((Path(spec.origin).parent / "datasets" / "images").glob("*.jpg"))
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        found += sorted((Path(spec.origin).parent / "mpl-data" / "sample_data").glob("*.jpg"))
    spec = importlib.util.find_spec("skimage")
    if spec and spec.origin:  # colour photos only (astronaut, coffee, chelsea, rocket, ...)
        from PIL import Image

        for p in sorted((Path(spec.origin).parent / "data").glob("*.*")):
            if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.stat().st_size > 20_000:
                try:
                    with Image.open(p) as img:
                        if img.mode == "RGB" and min(img.size) >= 128:
                            found.append(p)
                except OSError:
                    continue
    return found


def synthetic_photos(side: int = 320) -> dict[str, np.ndarray]:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    text = Image.new("RGB", (side, side), "white")
    draw = ImageDraw.Draw(text)
    for i in range(12):
        draw.text((12, 10 + 25 * i), "The quick brown fox jumps over the lazy dog", fill="black")
    return {"noise": rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
            "flat colour": np.full((side, side, 3), (128, 96, 64), np.uint8),
            "text": np.asarray(text)}


def fold_outputs(work: Path, data: Path, held: str, recipe_name: str, sets: list[str],
                 quiet: bool) -> dict[str, np.ndarray]:
    """Train without ``held`` (or load what an earlier call saved) and return the logits and
    pooled features of the train / val / test photos of the known classes and of ``held``."""
    cached = work / f"outputs-{held}.npz"
    if cached.exists():
        with np.load(cached, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    from zoo.console import reporting
    from zoo.data.cache import decode_array
    from zoo.evaluate.predictor import load_predictor
    from zoo.models.inference import predict_outputs
    from zoo.train.recipes import load_recipe
    from zoo.train.run import TrainOptions, prepare_data, train

    known = work / f"without-{held}"
    known.mkdir(exist_ok=True)
    for cls in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if cls.name != held and not (known / cls.name).exists():
            (known / cls.name).symlink_to(cls.resolve())
    recipe, _ = load_recipe(recipe_name, sets)
    # A run folder without saved outputs is what an interrupted call left: train it again.
    shutil.rmtree(work / "runs" / f"without-{held}", ignore_errors=True)
    start = time.perf_counter()
    with reporting(quiet) as rep:
        path = train(recipe, TrainOptions(data=str(known), name=f"without-{held}"), rep)
        seconds = time.perf_counter() - start
        predictor = load_predictor(path.name, path.parent)
        prepared = prepare_data(str(known), predictor.pre, rep)
    out = {"train_seconds": np.array(seconds), "temperature": np.array(predictor.scaler.temperature),
           "classes": np.array(predictor.classes)}
    for split, part in prepared.parts.items():
        logits, feats = predict_outputs(predictor.model, part.arrays, predictor.pre)
        out[f"{split}_logits"], out[f"{split}_features"] = logits.numpy(), feats.numpy()
        out[f"{split}_labels"] = part.labels
    files = sorted(f for f in (data / held).rglob("*") if f.is_file() and not f.name.startswith("."))
    arrays = []
    for f in files:
        try:
            arrays.append(decode_array(f, predictor.pre.resize_side))
        except Exception:  # noqa: BLE001  (an unreadable photo is left out, as zoo does)
            continue
    extra = {str(p): decode_array(p, predictor.pre.resize_side) for p in package_photos()}
    extra.update(synthetic_photos())
    for name, batch in (("held", arrays), ("extra", list(extra.values()))):
        logits, feats = predict_outputs(predictor.model, batch, predictor.pre)
        out[f"{name}_logits"], out[f"{name}_features"] = logits.numpy(), feats.numpy()
    out["extra_names"] = np.array(list(extra))
    np.savez(cached, **out)
    return out


def evaluate_fold(o: dict[str, np.ndarray]) -> dict[str, dict]:
    from zoo.evaluate.trust import OodScorer, auroc, fpr_at_tpr, quantile_threshold

    results = {}
    n_classes = len(o["classes"])
    for method, params in SCORES:
        scorer = OodScorer.fit(method, o["train_features"], o["train_labels"], n_classes,
                               float(o["temperature"]), **params)
        s = {name: scorer.score(o[f"{name}_logits"], o[f"{name}_features"])
             for name in ("val", "test", "held", "extra")}
        threshold = quantile_threshold(s["val"], 0.95)
        results[score_name(method, params)] = {
            "auroc": auroc(s["test"], s["held"]),
            "fpr_at_95_tpr": fpr_at_tpr(s["test"], s["held"], 0.95),
            "test_kept": float(np.mean(s["test"] <= threshold)),
            "held_flagged": float(np.mean(s["held"] > threshold)),
            "extra_auroc": auroc(s["test"], s["extra"]),
            "extra_flagged": {str(n): bool(v > threshold) for n, v in zip(o["extra_names"], s["extra"])},
        }
    accuracy = float(np.mean(o["test_logits"].argmax(1) == o["test_labels"]))
    return {"scores": results, "test_accuracy_known": accuracy,
            "train_seconds": float(o["train_seconds"]), "held_photos": int(len(o["held_logits"])),
            "known_test_photos": int(len(o["test_logits"]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="tf_efficientnet_lite0")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="recipe override (repeatable)")
    ap.add_argument("--data", default=os.environ.get("ZOO_DATA"), help="dataset folder (default $ZOO_DATA)")
    ap.add_argument("--work", help="folder for runs and outputs (default: a new temporary folder)")
    ap.add_argument("--classes", help="held-out classes a,b,c (default: every class)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if not args.data or not Path(args.data).is_dir():
        ap.error("set --data or ZOO_DATA to a folder of class folders")
    data = Path(args.data).resolve()
    work = Path(args.work or tempfile.mkdtemp(prefix="zoo-open-set-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ.update(ZOO_HOME=str(work / "runs"), ZOO_SPLITS_DIR=str(work / "splits"),
                      ZOO_CACHE_DIR=os.environ.get("ZOO_CACHE_DIR") or str(work / "cache"))
    classes = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    held_out = args.classes.split(",") if args.classes else classes
    folds = {}
    for held in held_out:
        print(f"== without {held}", file=sys.stderr, flush=True)
        folds[held] = evaluate_fold(fold_outputs(work, data, held, args.recipe, args.sets, args.quiet))
    names = [score_name(m, p) for m, p in SCORES]
    summary = {}
    for name in names:
        per = [folds[h]["scores"][name] for h in held_out]
        summary[name] = {key: float(np.mean([p[key] for p in per]))
                         for key in ("auroc", "fpr_at_95_tpr", "test_kept", "held_flagged", "extra_auroc")}
        summary[name]["extra_flagged"] = float(np.mean([np.mean(list(p["extra_flagged"].values()))
                                                        for p in per]))
    best = max(names, key=lambda n: summary[n]["auroc"])
    print(f"\nrecipe {args.recipe} {' '.join('--set ' + s for s in args.sets)}; data {data}; "
          f"work {work}")
    print("per held-out class, AUROC (FPR at 95% TPR):")
    print(f"{'score':<14}" + "".join(f"{h[:11]:>14}" for h in held_out))
    for name in names:
        print(f"{name:<14}" + "".join(f"{folds[h]['scores'][name]['auroc']:>7.3f} ({folds[h]['scores'][name]['fpr_at_95_tpr']:.2f})"
                                      for h in held_out))
    print(f"{'known acc':<14}" + "".join(f"{folds[h]['test_accuracy_known']:>14.3f}" for h in held_out))
    print("\nmean over held-out classes:")
    print(f"{'score':<14}{'AUROC':>8}{'FPR@95':>8}{'known kept':>12}{'held flagged':>14}"
          f"{'other AUROC':>13}{'other flagged':>15}")
    for name in names:
        s = summary[name]
        print(f"{name:<14}{s['auroc']:>8.3f}{s['fpr_at_95_tpr']:>8.3f}{s['test_kept']:>12.3f}"
              f"{s['held_flagged']:>14.3f}{s['extra_auroc']:>13.3f}{s['extra_flagged']:>15.3f}")
    print(f"\nbest mean leave-one-class-out AUROC: {best} ({summary[best]['auroc']:.3f}); "
          "'known kept' and 'held flagged' at the threshold fitted on validation for 95% TPR; "
          "'other': photos shipped in packages + noise, flat colour, text")
    if args.json:
        Path(args.json).write_text(json.dumps({"recipe": args.recipe, "sets": args.sets,
                                               "data": str(data), "folds": folds,
                                               "summary": summary, "best": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
