"""Choose between recipe variants by k-fold cross-validation on the train+val photos.

    python benchmarks/recipe_cv.py tf_efficientnet_lite0 --folds 5 \\
        --variant base --variant "bs16 data.batch_size=16" --variant "ep8 train.epochs=8"

142 validation photos are too few to rank recipe variants: one photo is 0.7 points, about the
gap between two seeds. This script deals the dataset's fixed train+val photos into ``--folds``
folds (``zoo.data.splits.cross_validation_folds``: near-duplicates together, classes spread evenly,
test photos untouched), trains every variant on every fold with ``zoo train RECIPE --set ...``
(each fold's split saved in a private ZOO_SPLITS_DIR, runs in a private ZOO_HOME, the user's
decode cache shared), and prints each variant's mean validation accuracy, balanced accuracy
(the mean of the per-class recalls) and NLL, and its fold-by-fold accuracy difference from the
first variant. Test metrics are never read.

It also pools each variant's out-of-fold validation predictions (every train+val photo once)
and fits one temperature on them: a steadier fit than one fold's validation photos, to pin with
``--set calibration.temperature=T``; and for runs with ``train.wise_ft`` it prints the mean
validation score of every WiSE-FT mix over the folds, to choose a fixed mix.

In a --variant, ``{fold}`` stands for the fold's number: ``"kd train.distill.teacher=soft-fold{fold}"``
distills each fold from its own teacher (``benchmarks/ensemble_cv.py`` builds such ensembles).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from zoo.data.cache import cache_root
from zoo.data.dataset import resolve_data_root, scan_dataset
from zoo.data.splits import cross_validation_folds, get_split, save_split
from zoo.errors import ZooError
from zoo.evaluate.calibration import TemperatureScaler, expected_calibration_error
from zoo.store.runs import load_predictions


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", help="recipe or timm model name, as for `zoo train`")
    p.add_argument("--variant", action="append", required=True, metavar='"NAME [KEY=VALUE ...]"',
                   help="a name and its --set overrides; the first variant is the reference")
    p.add_argument("--data", help="dataset folder of class folders (default $ZOO_DATA)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (CPU threads are shared out)")
    p.add_argument("--work", help="folder for fold splits and runs (default: a temporary one)")
    p.add_argument("--json", help="write every run's validation metrics here")
    return p.parse_args(argv)


def train_fold(recipe: str, data: Path, name: str, sets: list[str], fold: int, work: Path,
               threads: int) -> dict:
    home = work / "runs"
    run = f"{name}-fold{fold}"
    env = dict(os.environ, ZOO_HOME=str(home), ZOO_SPLITS_DIR=str(work / f"splits{fold}"),
               ZOO_CACHE_DIR=os.environ.get("ZOO_CACHE_DIR") or str(cache_root()),
               OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "zoo", "train", recipe, "--data", str(data), "--quiet", "--name", run]
    for s in sets:
        cmd += ["--set", s.replace("{fold}", str(fold))]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    val = json.loads((home / run / "meta.json").read_text())["metrics"]["val"]
    result = {"variant": name, "fold": fold, "val_accuracy": val["accuracy"],
              "val_balanced_accuracy": val["balanced_accuracy"], "val_nll": val["nll"]}
    print(json.dumps(result), flush=True)
    return result


def summarise(results: list[dict], names: list[str]) -> None:
    acc = {n: [r["val_accuracy"] for r in sorted(results, key=lambda r: r["fold"]) if r["variant"] == n]
           for n in names}
    mean = {key: {n: statistics.mean(r[key] for r in results if r["variant"] == n) for n in names}
            for key in ("val_balanced_accuracy", "val_nll")}
    ref = acc[names[0]]
    print(f"{'variant':<14}{'mean val acc':>13}{'val bal acc':>12}{'val NLL':>9}  per fold; "
          f"difference from {names[0]}")
    for n in names:
        diff = [a - b for a, b in zip(acc[n], ref)]
        print(f"{n:<14}{statistics.mean(acc[n]):>13.4f}{mean['val_balanced_accuracy'][n]:>12.4f}"
              f"{mean['val_nll'][n]:>9.3f}  "
              f"{' '.join(f'{a:.3f}' for a in acc[n])}; {statistics.mean(diff):+.4f} "
              f"(better in {sum(d > 0 for d in diff)}, worse in {sum(d < 0 for d in diff)} folds)")


def out_of_fold(home: Path, names: list[str], folds: int) -> dict[str, dict]:
    """Per variant: one temperature fitted on the pooled out-of-fold validation predictions, and
    the pooled ECE raw, with each fold's own temperature, and with the pooled one."""
    pooled = {}
    for name in names:
        preds = [load_predictions(home / f"{name}-fold{k}", "val") for k in range(folds)]
        labels = np.concatenate([p["labels"] for p in preds])
        raw = np.concatenate([p["probs_uncalibrated"] for p in preds])
        scaler = TemperatureScaler().fit(raw, labels)
        pooled[name] = {"photos": len(labels), "temperature": scaler.temperature,
                        "ece_raw": expected_calibration_error(labels, raw),
                        "ece_fold_temperatures": expected_calibration_error(
                            labels, np.concatenate([p["probs"] for p in preds])),
                        "ece_pooled_temperature": expected_calibration_error(labels, scaler.transform(raw))}
        print(f"{name}: out-of-fold temperature {scaler.temperature:.3f} ({len(labels)} photos); pooled "
              f"ECE raw {pooled[name]['ece_raw']:.3f}, with each fold's temperature "
              f"{pooled[name]['ece_fold_temperatures']:.3f}, with this one "
              f"{pooled[name]['ece_pooled_temperature']:.3f}")
    return pooled


def wise_curves(home: Path, names: list[str], folds: int) -> dict[str, list[dict]]:
    """Per variant trained with train.wise_ft: each mix's mean validation accuracy and loss."""
    curves = {}
    for name in names:
        metas = [json.loads((home / f"{name}-fold{k}" / "meta.json").read_text()) for k in range(folds)]
        if not all("wise_ft" in m for m in metas):
            continue
        rows = [m["wise_ft"]["curve"] for m in metas]
        curves[name] = [{"alpha": row[0]["alpha"],
                         "val_accuracy": statistics.mean(r["val_accuracy"] for r in row),
                         "val_loss": statistics.mean(r["val_loss"] for r in row)} for row in zip(*rows)]
        print(f"{name}: WiSE-FT mix (alpha), mean val accuracy / loss over the folds: " + ", ".join(
            f"{c['alpha']:g} {c['val_accuracy']:.4f}/{c['val_loss']:.3f}" for c in curves[name]))
    return curves


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    names = [v.split()[0] if v.split() else "" for v in args.variant]
    if "" in names or len(set(names)) < len(names):
        raise SystemExit(f"error: each --variant needs its own name first, got {names}")
    variants = {v.split()[0]: v.split()[1:] for v in args.variant}
    index = scan_dataset(resolve_data_root(args.data))
    split, _ = get_split(index)
    work = Path(args.work or tempfile.mkdtemp(prefix="zoo-cv-"))
    for k, fold in enumerate(cross_validation_folds(split, index, args.folds)):
        save_split(fold, index, work / f"splits{k}" / f"{index.name}.json")
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    tasks = [(n, sets, k) for n, sets in variants.items() for k in range(args.folds)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda t: train_fold(args.recipe, index.root, *t, work, threads), tasks))
    summarise(results, list(variants))
    extra = {"out_of_fold": out_of_fold(work / "runs", list(variants), args.folds),
             "wise_ft": wise_curves(work / "runs", list(variants), args.folds)}
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, **extra}, indent=1))


if __name__ == "__main__":
    try:
        main()
    except ZooError as exc:
        raise SystemExit(f"error: {exc}") from None
