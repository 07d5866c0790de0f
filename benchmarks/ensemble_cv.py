"""Ensembles against their members on the cross-validation folds of ``recipe_cv.py``.

    python benchmarks/ensemble_cv.py --work /tmp/cv --members lite0 mnv2 robust --method soft

``recipe_cv.py --work DIR`` leaves each variant's fold runs in ``DIR/runs`` as
``<variant>-fold<k>`` (several ``recipe_cv.py`` calls, e.g. one per architecture, can share DIR).
For every fold this script builds the ensemble of the members' fold runs with the real
``zoo ensemble`` (named ``<name>-fold<k>``, default ``<method>-<members>``; it stays in DIR,
e.g. as a ``train.distill`` teacher for ``recipe_cv.py --variant "... train.distill.teacher=
<name>-fold{fold}"``) and prints the validation accuracy, balanced accuracy and NLL of every
member and ensemble: pooled over the out-of-fold photos (every train+val photo once) and fold
by fold, with the ensemble's difference from the best member (the member with the best pooled
accuracy, fixed before comparing). A soft vote fits nothing, so its validation scores are fair;
methods that fit weights on the validation photos (weighted, stack) score where they were fitted
and look better than they are. Test metrics are never read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

from zoo.evaluate.metrics import classification_metrics
from zoo.store.runs import load_predictions, read_meta

KEYS = ("accuracy", "balanced_accuracy", "nll")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="recipe_cv.py's --work folder (runs/ and splits<k>/)")
    p.add_argument("--members", nargs="+", required=True, help="variant names (runs <variant>-fold<k>)")
    p.add_argument("--method", default="soft", help="zoo ensemble --method (default soft)")
    p.add_argument("--name", help="ensemble variant name (default <method>-<member>-<member>...)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--json", help="write every score here")
    return p.parse_args(argv)


def build(work: Path, members: list[str], method: str, name: str, fold: int) -> None:
    """``zoo ensemble`` of the members' fold-``fold`` runs, named ``<name>-fold<fold>`` (kept if it exists)."""
    run = f"{name}-fold{fold}"
    if (work / "runs" / run / "meta.json").is_file():
        return
    env = dict(os.environ, ZOO_HOME=str(work / "runs"), ZOO_SPLITS_DIR=str(work / f"splits{fold}"))
    cmd = [sys.executable, "-m", "zoo", "ensemble", "--members", ",".join(f"{m}-fold{fold}" for m in members),
           "--method", method, "--name", run]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")


def scores(runs: Path, variant: str, folds: int) -> dict:
    """A variant's validation metrics, fold by fold and pooled over the folds."""
    preds = [load_predictions(runs / f"{variant}-fold{k}", "val") for k in range(folds)]
    classes = read_meta(runs / f"{variant}-fold0")["classes"]
    per_fold = [classification_metrics(p["labels"], p["probs"], classes) for p in preds]
    pooled = classification_metrics(np.concatenate([p["labels"] for p in preds]),
                                     np.concatenate([p["probs"] for p in preds]), classes)
    return {"pooled": {k: pooled[k] for k in KEYS}, "photos": pooled["n"],
            "folds": [{k: m[k] for k in KEYS} for m in per_fold]}


def report(results: dict[str, dict], members: list[str], ensemble: str) -> None:
    best = max(members, key=lambda m: results[m]["pooled"]["accuracy"])
    print(f"{'variant':<28}{'val acc':>8}{'bal acc':>8}{'NLL':>7}  per fold accuracy (pooled over "
          f"{results[best]['photos']} photos)")
    for name, r in results.items():
        p = r["pooled"]
        print(f"{name:<28}{p['accuracy']:>8.4f}{p['balanced_accuracy']:>8.4f}{p['nll']:>7.3f}  "
              + " ".join(f"{f['accuracy']:.3f}" for f in r["folds"]))
    for key, better in (("accuracy", 1), ("nll", -1)):
        diff = [better * (e[key] - b[key]) for e, b in zip(results[ensemble]["folds"], results[best]["folds"])]
        print(f"{ensemble} against the best member ({best}), {key}: mean {better * statistics.mean(diff):+.4f}, "
              f"better in {sum(d > 0 for d in diff)}, worse in {sum(d < 0 for d in diff)} of {len(diff)} folds")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(args.work)
    name = args.name or "-".join([args.method, *args.members])
    for fold in range(args.folds):
        build(work, args.members, args.method, name, fold)
    results = {v: scores(work / "runs", v, args.folds) for v in [*args.members, name]}
    report(results, args.members, name)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
