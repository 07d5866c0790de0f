"""One process against N data-parallel processes on this machine's CPU, at the same global batch.

    python benchmarks/processes.py                                # custom_cnn, seeds 0 and 1, 1 vs 2
    python benchmarks/processes.py tf_efficientnet_lite0 --seeds 0 --json ddp.json
    python benchmarks/processes.py custom_cnn --seeds 0 --set data.image_size=32 --set train.epochs=1

For each seed, trains RECIPE on the real photos twice with `zoo train`: once in one process with
``data.batch_size = B`` and once with ``--devices N`` (torchrun, gloo) and ``data.batch_size = B / N``
per process, so both take the same optimizer steps over the same global batch. B is the recipe's
batch size (after ``--set``); it must divide by N. Runs share one decode cache (warmed by the
first run; decoding is outside the epoch times). Reports validation and test accuracy (the band
over seeds), the fit time, training img/s (training photos / mean epoch seconds, validation
included) and the speed ratio N-process / 1-process, plus the peak anonymous memory of the whole
process tree (``scale.py``'s measure).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale import tree_rss_anon

from zoo.data.dataset import resolve_data_root
from zoo.errors import ZooError
from zoo.train.recipes import load_recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", nargs="?", default="custom_cnn", help="recipe (default custom_cnn)")
    p.add_argument("--data", help="dataset folder of class folders (default $ZOO_DATA)")
    p.add_argument("--devices", type=int, default=2, help="processes of the parallel run (default 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--set", dest="sets", action="append", default=[], help="`zoo train --set` (repeatable)")
    p.add_argument("--work", type=Path, help="folder for runs and the decode cache (default: temporary)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p.parse_args(argv)


def train(args: argparse.Namespace, data: Path, work: Path, name: str, nproc: int, sets: list[str]) -> dict:
    """One `zoo train`: its metrics, fit time, epoch speed and peak tree RssAnon."""
    env = dict(os.environ, ZOO_HOME=str(work / "runs"), ZOO_CACHE_DIR=str(work / "cache"),
               ZOO_SPLITS_DIR=str(work / "splits"), HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "zoo", "train", args.recipe, "--data", str(data), "--quiet", "--name", name,
           *(["--devices", str(nproc)] if nproc > 1 else []), *[x for s in sets for x in ("--set", s)]]
    peak, start = 0, time.time()
    with open(work / f"{name}.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            peak = max(peak, tree_rss_anon(proc.pid))
            time.sleep(0.5)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); log: {work / f'{name}.log'}")
    run = work / "runs" / name
    meta = json.loads((run / "meta.json").read_text())
    with open(run / "history.csv") as fh:
        epoch_s = statistics.mean(float(row["seconds"]) for row in csv.DictReader(fh))
    split = json.loads(next((work / "splits").glob("*.json")).read_text())
    n_train = sum(1 for item in split["items"] if item["split"] == "train")
    return {"name": name, "processes": nproc, "val_accuracy": meta["metrics"]["val"]["accuracy"],
            "test_accuracy": meta["metrics"]["test"]["accuracy"], "fit_s": round(meta["fit_seconds"], 1),
            "wall_s": round(time.time() - start, 1), "epochs": meta.get("epochs_run"),
            "train_img_per_s": round(n_train / epoch_s, 1),
            "peak_rss_anon_mib": round(peak / 2**20)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        data = resolve_data_root(args.data)
        batch = load_recipe(args.recipe, args.sets)[0].data.batch_size
    except ZooError as exc:
        sys.exit(str(exc))
    if batch % args.devices:
        sys.exit(f"the global batch {batch} does not divide by {args.devices} processes: "
                 f"pass --set data.batch_size=<a multiple of {args.devices}>")
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-processes-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"working folder {work}; global batch {batch}", flush=True)
    rows = []
    for seed in args.seeds:
        for nproc in (1, args.devices):
            sets = [*args.sets, f"seed={seed}", f"data.batch_size={batch // nproc}"]
            rows.append(train(args, data, work, f"p{nproc}-seed{seed}", nproc, sets) | {"seed": seed})
            print(json.dumps(rows[-1]), flush=True)
    results = {"recipe": args.recipe, "global_batch": batch, "rows": rows, "cpu_count": os.cpu_count(),
               "speed_ratio": report(rows, args.devices)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def report(rows: list[dict], n: int) -> float:
    """Print the table; return the mean img/s ratio of N processes to one."""
    print("\n| processes | seed | val acc | test acc | epochs | fit s | train img/s | peak RssAnon MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['seed']} | {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | "
              f"{r['epochs']} | {r['fit_s']:.1f} | {r['train_img_per_s']:.1f} | {r['peak_rss_anon_mib']} |")
    speed = {p: statistics.mean(r["train_img_per_s"] for r in rows if r["processes"] == p) for p in (1, n)}
    ratio = speed[n] / speed[1]
    print(f"\ntraining img/s, {n} processes / 1 process: {ratio:.2f}x")
    return ratio


if __name__ == "__main__":
    main()
