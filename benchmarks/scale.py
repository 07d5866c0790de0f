"""Peak memory and training speed of `zoo train` against the number of photos.

    python benchmarks/scale.py                       # 1000, 4000 and 16000 photos
    python benchmarks/scale.py --sizes 1000 4000 --json scale.json
    python benchmarks/scale.py --sizes 60 --image-size 64   # smoke check (a few seconds)

Synthetic photos of realistic size (800x600 JPEGs: a random low-frequency colour field per
photo plus pixel noise, so no two are near-duplicates) are generated into a temporary folder;
each size N uses the first N of them, spread evenly over ``--classes`` class folders. For each
N, ``zoo train custom_cnn --set data.image_size=224 --set train.epochs=1`` runs as a subprocess
with its own ZOO_HOME, ZOO_CACHE_DIR (cold decode cache) and ZOO_SPLITS_DIR, and this script
samples the RssAnon of the whole process tree (the zoo process and any DataLoader workers,
from /proc/<pid>/status) every ``--interval`` seconds. RssAnon is memory the process owns;
pages of memory-mapped files (the decode cache's packs) are page cache and count as RssFile,
which the kernel can drop. Training speed: training photos / seconds of the epoch (history.csv;
the epoch's time includes its validation pass).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.fileio import atomic_path

PHOTO_SIZE = (800, 600)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000],
                   help="numbers of photos to train on (default 1000 4000 16000)")
    p.add_argument("--classes", type=int, default=5, help="class folders (default 5)")
    p.add_argument("--image-size", type=int, default=224, help="data.image_size (default 224)")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="more `zoo train --set` overrides, e.g. data.workers=2 (repeatable)")
    p.add_argument("--interval", type=float, default=0.2, help="memory sampling period, seconds")
    p.add_argument("--photos", type=Path, help="folder for the synthetic photos, kept and reused "
                   "by later calls (default: inside the working folder)")
    p.add_argument("--work", type=Path, help="working folder (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the working folder afterwards")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if min(args.sizes) < 3 * args.classes:
        p.error(f"every size needs at least 3 photos per class ({3 * args.classes})")
    return args


# ---- synthetic photos --------------------------------------------------------------------------
def photo(seed: int) -> Image.Image:
    """An 800x600 photo: a smooth random colour field (bilinear from 8x6 points) plus noise."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        PHOTO_SIZE, Image.Resampling.BILINEAR)
    noise = rng.normal(0, 12, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3))
    return Image.fromarray(np.clip(np.asarray(field) + noise, 0, 255).astype(np.uint8))


def _write_photo(task: tuple[int, Path]) -> None:
    seed, path = task
    with atomic_path(path) as tmp:  # an interrupted call leaves no half-written photo to reuse
        photo(seed).save(tmp, "JPEG", quality=90)


def make_photos(root: Path, count: int, classes: int) -> list[Path]:
    """``count`` photos, photo i in class folder i % classes (so any prefix is balanced); photos
    already there are kept."""
    files = [root / f"class{i % classes}" / f"{i:06d}.jpg" for i in range(count)]
    for folder in {f.parent for f in files}:
        folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor() as pool:
        list(pool.map(_write_photo, [(i, f) for i, f in enumerate(files) if not f.is_file()], chunksize=64))
    return files


def dataset(files: list[Path], n: int, dest: Path) -> Path:
    """A dataset folder of symbolic links to the first ``n`` photos."""
    for f in files[:n]:
        (dest / f.parent.name).mkdir(parents=True, exist_ok=True)
        (dest / f.parent.name / f.name).symlink_to(f)
    return dest


# ---- memory of a process tree ------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # ended meanwhile
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss_anon(pid: int) -> int:
    """Sum of RssAnon (bytes) over ``pid`` and all its descendants."""
    kids, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines()
                       if line.startswith("RssAnon:")), 0)
    return total


# ---- one size ----------------------------------------------------------------------------------
def train(data: Path, work: Path, args: argparse.Namespace) -> dict:
    """Run `zoo train` on ``data``: its peak tree RssAnon, wall time and epoch time."""
    env = dict(os.environ, ZOO_HOME=str(work / "runs"), ZOO_CACHE_DIR=str(work / "cache"),
               ZOO_SPLITS_DIR=str(work / "splits"), HF_HUB_OFFLINE="1")
    sets = [f"data.image_size={args.image_size}", "train.epochs=1", *args.sets]
    argv = [sys.executable, "-m", "zoo", "train", "custom_cnn", "--data", str(data), "--name", "scale",
            *[x for s in sets for x in ("--set", s)]]
    peak, start = 0, time.time()
    with open(work / "zoo.out", "w") as out, open(work / "zoo.err", "w") as err:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        while proc.poll() is None:
            peak = max(peak, tree_rss_anon(proc.pid))
            time.sleep(args.interval)
    if proc.returncode:
        sys.exit(f"zoo train failed (exit {proc.returncode}); log in {work}:\n"
                 f"{(work / 'zoo.err').read_text()[-3000:]}")
    with open(work / "runs" / "scale" / "history.csv") as fh:
        epoch = next(csv.DictReader(fh))
    return {"peak_rss_anon_mib": peak / 2**20, "wall_s": time.time() - start,
            "epoch_s": float(epoch["seconds"])}


def measure(files: list[Path], n: int, work: Path, args: argparse.Namespace) -> dict:
    run = train(dataset(files, n, work / "data" / f"minerals{n}"), work, args)
    split = json.loads(next((work / "splits").glob("*.json")).read_text())
    n_train = sum(1 for it in split["items"] if it["split"] == "train")
    cache = sum(f.stat().st_size for f in (work / "cache").rglob("*") if f.is_file())
    return {"photos": n, "train_photos": n_train, "peak_rss_anon_mib": round(run["peak_rss_anon_mib"], 1),
            "epoch_s": round(run["epoch_s"], 1), "train_img_per_s": round(n_train / run["epoch_s"], 1),
            "wall_s": round(run["wall_s"], 1), "cache_mib": round(cache / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    photos = args.photos or work / "photos"
    print(f"working folder {work}{' (kept)' if args.keep else ''}")
    print(f"{max(args.sizes)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} in {photos} ...", flush=True)
    files = make_photos(photos, max(args.sizes), args.classes)
    rows = []
    for n in args.sizes:
        print(f"zoo train custom_cnn on {n} photos ...", flush=True)
        rows.append(measure(files, n, work / f"n{n}", args))
    results = report(rows) | {"cpu_count": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def report(rows: list[dict]) -> dict:
    """Print the table and the growth of peak memory; both as a dict."""
    print("\n| photos | train photos | peak RssAnon MiB | epoch s | train img/s | wall s | decode cache MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['photos']} | {r['train_photos']} | {r['peak_rss_anon_mib']:.0f} | {r['epoch_s']:.1f} | "
              f"{r['train_img_per_s']:.1f} | {r['wall_s']:.1f} | {r['cache_mib']:.0f} |")
    growth = rows[-1]["peak_rss_anon_mib"] / rows[0]["peak_rss_anon_mib"]
    print(f"\npeak memory, largest / smallest size: {growth:.2f}x")
    return {"rows": rows, "peak_growth": growth}

if __name__ == "__main__":
    main()
