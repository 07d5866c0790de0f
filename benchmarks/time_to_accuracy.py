"""Time to accuracy on CPU: the zoo recipe against a naive PyTorch fine-tuning baseline.

    python benchmarks/time_to_accuracy.py --data ~/minerals --target 0.90
    python benchmarks/time_to_accuracy.py --leaderboard          # cold-start leaderboard
    python benchmarks/time_to_accuracy.py --max-images 10 --image-size 64 --max-epochs 1  # smoke
    PYTHONPATH=../old-zoo python benchmarks/time_to_accuracy.py --no-baseline   # another zoo version

Both contestants use one split, made here with ``zoo.data.splits.make_split`` and saved where the
``zoo`` subprocesses read it (a private ZOO_SPLITS_DIR), so they see identical train / val / test
photos. The zoo recipe runs as ``zoo train tf_efficientnet_lite0`` with a private ZOO_HOME and a
cold decode cache (a fresh ZOO_CACHE_DIR); its time to target is wall time from process start to
the moment the history row that first reaches the target was written (history.csv is polled).
The baseline runs in this process: torchvision ImageFolder-style loading every epoch, timm
``tf_efficientnet_lite0`` with the same local weights and timm's new head, all layers trained
in fp32 with AdamW from the start; it stops at the target or after the epoch limit. The
baseline's clock starts at model creation, so it is not charged for scanning the photos (the
zoo subprocess is, and for its imports): the speed-up is, if anything, understated.

Then it measures training throughput of the zoo's data pipeline on real photos (decoded uint8
arrays from the warm cache + albumentations + ``to_tensor``) against synthetic in-memory tensors
of the same shape (the model's own limit).
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms as T
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import default_loader

from zoo.data.cache import DecodeCache
from zoo.data.dataset import DatasetIndex, resolve_data_root, scan_dataset
from zoo.data.splits import Split, make_split, save_split
from zoo.data.transforms import build_train_transform, to_tensor
from zoo.models.factory import build_model, preprocessing_of
from zoo.train.recipes import load_recipe
from zoo.train.trainer import leading_groups

RECIPE = "tf_efficientnet_lite0"
LEADERBOARD = ("custom_cnn", "tf_efficientnet_lite0", "mobilenetv2_100", "tf_efficientnet_lite2")
BASELINE_EPOCHS = 30


@dataclass
class Result:
    name: str
    seconds_to_target: float | None  # None: target never reached
    epochs_to_target: str | None
    epochs: int
    total_seconds: float
    best_val_accuracy: float
    test_accuracy: float


# ---- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder of class folders (default $ZOO_DATA)")
    p.add_argument("--weights-dir", default=os.environ.get("ZOO_WEIGHTS_DIR"),
                   help="folder with <timm name>.safetensors (default $ZOO_WEIGHTS_DIR)")
    p.add_argument("--target", type=float, default=0.90, help="validation accuracy to reach")
    p.add_argument("--leaderboard", action="store_true",
                   help="time a cold-start leaderboard instead (4 recipes + a weighted ensemble)")
    p.add_argument("--max-images", type=int, help="use at most this many photos per class")
    p.add_argument("--image-size", type=int, help="image size for every model (default: each recipe's)")
    p.add_argument("--max-epochs", type=int,
                   help=f"cap on each zoo training stage and on the baseline (default: recipes "
                        f"unchanged, baseline {BASELINE_EPOCHS})")
    p.add_argument("--no-baseline", action="store_true",
                   help="time the zoo recipe and the throughput only (e.g. to compare two zoo versions)")
    p.add_argument("--baseline-lr", type=float, default=3e-4, help="baseline AdamW learning rate")
    p.add_argument("--batch-size", type=int, default=32, help="baseline batch size")
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers (0 or 2)")
    p.add_argument("--seed", type=int, default=0,
                   help="baseline seed (head init, shuffling, augmentation): one seed, one result")
    p.add_argument("--throughput-batches", type=int, default=10,
                   help="timed training batches per throughput measurement")
    p.add_argument("--work", type=Path, help="working folder (default: a new temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the working folder (runs, logs)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if not 0 < args.target <= 1:
        p.error("--target must be a fraction in (0, 1]")
    for name in ("max_images", "image_size", "max_epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_images is not None and args.max_images < 3:
        p.error("--max-images must be at least 3 (one photo each for train, val and test)")
    if not args.weights_dir:
        p.error("pretrained weights are needed: pass --weights-dir or set ZOO_WEIGHTS_DIR")
    return args


# ---- data and split ----------------------------------------------------------------------------
def subset(root: Path, dest: Path, per_class: int) -> Path:
    """A copy of the dataset made of symbolic links to the first ``per_class`` files per class."""
    out = dest / root.name
    for cls in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = sorted(f for f in cls.iterdir() if f.is_file() and not f.name.startswith("."))
        (out / cls.name).mkdir(parents=True)
        for f in files[:per_class]:
            (out / cls.name / f.name).symlink_to(f.resolve())
    return out


def prepare(args: argparse.Namespace, work: Path) -> tuple[DatasetIndex, Split]:
    """Scan the photos and fix the split that every contestant uses."""
    root = resolve_data_root(args.data)
    if args.max_images:
        root = subset(root, work / "data", args.max_images)
    index = scan_dataset(root)
    split = make_split(index)
    save_split(split, index, work / "splits" / f"{index.name}.json")
    sizes = {s: len(split.paths(s)) for s in ("train", "val", "test")}
    print(f"dataset {index.root}: {len(index.items)} photos, {len(split.classes)} classes, "
          f"split {split.id} {sizes}")
    return index, split


# ---- the zoo, as subprocesses ------------------------------------------------------------------
def zoo_env(work: Path, cache: Path, weights_dir: str) -> dict[str, str]:
    return dict(os.environ, ZOO_HOME=str(work / "runs"), ZOO_SPLITS_DIR=str(work / "splits"),
                ZOO_CACHE_DIR=str(cache), ZOO_WEIGHTS_DIR=weights_dir, HF_HUB_OFFLINE="1")


def overrides(recipe: str, args: argparse.Namespace) -> list[str]:
    """``--set`` arguments that apply --image-size and --max-epochs to ``recipe``."""
    rec, _ = load_recipe(recipe)
    sets = [f"data.image_size={args.image_size}"] if args.image_size else []
    if args.max_epochs is not None:
        if rec.train.epochs > args.max_epochs:
            sets.append(f"train.epochs={args.max_epochs}")
        if rec.train.warmup is not None and rec.train.warmup.epochs > args.max_epochs:
            sets.append(f"train.warmup.epochs={args.max_epochs}")
    return sets


def zoo(argv: list[str], env: dict[str, str], log: Path, history: Path | None = None
        ) -> tuple[float, list[float], str]:
    """Run ``zoo ARGV``; returns wall seconds, the time each history row appeared, and stdout.

    A row's time is the modification time of history.csv (written atomically after every
    epoch) minus the process start, polled every 50 ms. Output goes to ``log``.out / .err.
    """
    stamps: list[float] = []
    seen_mtime = None
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    start = time.time()
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen([sys.executable, "-m", "zoo", *argv], env=env, stdout=fout,
                                stderr=ferr)
        while True:
            done = proc.poll() is not None
            if history is not None and history.is_file() and (
                    done or history.stat().st_mtime != seen_mtime):
                seen_mtime = history.stat().st_mtime
                stamps += [seen_mtime - start] * (len(read_history(history)) - len(stamps))
            if done:
                break
            time.sleep(0.05)
    wall = time.time() - start
    if proc.returncode:
        sys.exit(f"zoo {' '.join(argv)} failed (exit {proc.returncode}); logs kept in {log.parent}:\n"
                 f"{err.read_text()[-3000:]}")
    return wall, stamps, out.read_text()


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def train_zoo(recipe: str, name: str, index: DatasetIndex, split: Split, env: dict[str, str],
              args: argparse.Namespace, work: Path) -> Result:
    run = Path(env["ZOO_HOME"]) / name
    argv = ["train", recipe, "--data", str(index.root), "--name", name, "--quiet"]
    argv += [a for s in overrides(recipe, args) for a in ("--set", s)]
    wall, stamps, _ = zoo(argv, env, work / name, run / "history.csv")
    meta = json.loads((run / "meta.json").read_text())
    if meta["split_id"] != split.id:
        sys.exit(f"{name} trained on split {meta['split_id']}, expected {split.id}")
    rows = read_history(run / "history.csv")
    accs = [float(r["val_accuracy"]) for r in rows]
    hit = next((i for i, a in enumerate(accs) if a >= args.target), None)
    return Result(name, stamps[hit] if hit is not None else None,
                  f"{hit + 1} ({rows[hit]['stage']})" if hit is not None else None, len(rows), wall,
                  max(accs), meta["metrics"]["test"]["accuracy"])


# ---- the naive baseline ------------------------------------------------------------------------
class Photos(Dataset):
    """ImageFolder-style: open, convert to RGB and transform every photo, every epoch."""

    def __init__(self, samples: list[tuple[str, int]], transform) -> None:
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        return self.transform(default_loader(path)), label


def samples(index: DatasetIndex, split: Split, part: str) -> list[tuple[str, int]]:
    labels = {it.path: it.label for it in index.items}
    return [(str(index.root / p), split.classes.index(labels[p])) for p in split.paths(part)
            if p in labels]


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    right = total = 0
    for x, y in loader:
        right += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return right / max(total, 1)


def train_baseline(index: DatasetIndex, split: Split, size: int, args: argparse.Namespace) -> Result:
    torch.manual_seed(args.seed)  # DataLoader workers derive their seeds from it
    start = time.perf_counter()
    weights = Path(args.weights_dir) / f"{RECIPE}.safetensors"
    model = timm.create_model(RECIPE, pretrained=True, num_classes=len(split.classes),
                              pretrained_cfg_overlay={"file": str(weights)})
    cfg = timm.data.resolve_data_config({}, model=model)
    norm = T.Normalize(cfg["mean"], cfg["std"])
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    eval_tf = T.Compose([T.Resize(round(size / cfg["crop_pct"])), T.CenterCrop(size), T.ToTensor(), norm])
    loader = lambda part, tf, shuffle: DataLoader(  # noqa: E731
        Photos(samples(index, split, part), tf), batch_size=args.batch_size, shuffle=shuffle,
        num_workers=args.workers, persistent_workers=args.workers > 0)
    train, val = loader("train", train_tf, True), loader("val", eval_tf, False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.baseline_lr)
    accs, reached = [], None
    for epoch in range(args.max_epochs or BASELINE_EPOCHS):
        model.train()
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        accs.append(accuracy(model, val))
        print(f"  baseline epoch {epoch + 1}: val_acc {accs[-1]:.3f} "
              f"({time.perf_counter() - start:.0f}s)", flush=True)
        if accs[-1] >= args.target:
            reached = time.perf_counter() - start
            break
    total = time.perf_counter() - start
    test = accuracy(model, loader("test", eval_tf, False))
    return Result("naive baseline", reached, str(len(accs)) if reached else None, len(accs),
                  total, max(accs), test)


# ---- throughput --------------------------------------------------------------------------------
def throughput(index: DatasetIndex, split: Split, size: int, cache: Path,
               args: argparse.Namespace) -> dict[str, float]:
    """Training img/s (forward + backward + step; median batch, the recipe's frozen layer
    groups frozen) on real photos via the zoo pipeline, and on synthetic tensors of the same shape."""
    recipe, _ = load_recipe(RECIPE, [f"data.image_size={size}"])
    model = build_model(RECIPE, len(split.classes))  # weights do not change the speed
    pre = preprocessing_of(model, size)
    shas = {it.path: it.sha256 for it in index.items}
    paths = [p for p in split.paths("train") if p in shas]
    store = DecodeCache(cache / "decoded")
    arrays = store.get_many([index.root / p for p in paths], [shas[p] for p in paths], pre.resize_side)
    cl, bs = recipe.train.channels_last, recipe.data.batch_size
    model = model.to(memory_format=torch.channels_last) if cl else model
    model.train()
    for module in leading_groups(model, recipe.train.frozen_groups):  # as the recipe trains it
        module.eval().requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    aug = build_train_transform(recipe.augment.get("train", []), size, seed=0)
    rng = np.random.default_rng(0)

    def real() -> torch.Tensor:
        return to_tensor([aug(image=arrays[i])["image"] for i in rng.integers(0, len(arrays), bs)], pre, cl)

    synthetic = torch.randn(bs, 3, size, size)
    synthetic = synthetic.contiguous(memory_format=torch.channels_last) if cl else synthetic
    labels = torch.as_tensor(rng.integers(0, len(split.classes), bs))

    # train.precision since the engine issue; older zoo versions (--no-baseline comparisons) have train.bf16
    bf16 = getattr(recipe.train, "precision", None) == "bf16" or getattr(recipe.train, "bf16", False)

    def step(batch: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(batch).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def timed(make_batch) -> float:
        begin = time.perf_counter()
        step(make_batch())
        return time.perf_counter() - begin

    timed(real)  # warm-up
    timed(lambda: synthetic)
    times = {"real": [], "synthetic": []}
    for _ in range(args.throughput_batches):  # interleaved, so load changes hit both alike
        times["real"].append(timed(real))
        times["synthetic"].append(timed(lambda: synthetic))
    out = {f"{k}_img_per_s": bs / float(np.median(v)) for k, v in times.items()}
    out["ratio"] = out["real_img_per_s"] / out["synthetic_img_per_s"]
    out["cache_hits"], out["cache_decoded"] = store.hits, store.misses
    return out


# ---- reports -----------------------------------------------------------------------------------
def fmt(seconds: float | None) -> str:
    return "not reached" if seconds is None else f"{seconds:.1f}"


def report(zoo_run: Result, base: Result | None, speed: dict[str, float], target: float) -> dict:
    print(f"\n## Time to {target:.0%} validation accuracy\n")
    print("| contestant | s to target | epochs to target | epochs | total s | best val acc | test acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in (zoo_run, base) if base else (zoo_run,):
        print(f"| {r.name} | {fmt(r.seconds_to_target)} | {r.epochs_to_target or '-'} | {r.epochs} | "
              f"{r.total_seconds:.1f} | {r.best_val_accuracy:.4f} | {r.test_accuracy:.4f} |")
    if base is None:
        speedup = "n/a (--no-baseline)"
    elif zoo_run.seconds_to_target is None:
        speedup = "n/a (the zoo recipe did not reach the target)"
    elif base.seconds_to_target is None:
        speedup = f">= {base.total_seconds / zoo_run.seconds_to_target:.1f}x (baseline never reached it)"
    else:
        speedup = f"{base.seconds_to_target / zoo_run.seconds_to_target:.1f}x"
    print(f"\nspeed-up (baseline / zoo, time to target): {speedup}")
    print("\n## Training throughput (forward + backward + AdamW step)\n")
    print(f"| input | img/s |\n|---|---:|\n| real photos, zoo pipeline (warm cache) | "
          f"{speed['real_img_per_s']:.1f} |\n| synthetic tensors (model limit) | "
          f"{speed['synthetic_img_per_s']:.1f} |")
    print(f"\nreal / synthetic: {speed['ratio']:.2f} (decode cache: {speed['cache_hits']} hits, "
          f"{speed['cache_decoded']} decoded)")
    return {"target": target, "zoo": asdict(zoo_run),
            "speedup": speedup, "throughput": speed} | ({"baseline": asdict(base)} if base else {})


def time_to_accuracy(args: argparse.Namespace, work: Path) -> dict:
    index, split = prepare(args, work)
    size = args.image_size or load_recipe(RECIPE)[0].data.image_size
    cache = work / "cache"  # cold: nothing decoded yet
    print(f"zoo train {RECIPE} (cold decode cache {cache}) ...", flush=True)
    zoo_run = train_zoo(RECIPE, "zoo-recipe", index, split, zoo_env(work, cache, args.weights_dir),
                        args, work)
    base = None
    if not args.no_baseline:
        print(f"naive baseline ({args.workers} loader workers) ...", flush=True)
        base = train_baseline(index, split, size, args)
    print("throughput ...", flush=True)
    return report(zoo_run, base, throughput(index, split, size, cache, args), args.target)


def leaderboard(args: argparse.Namespace, work: Path) -> dict:
    """Every step of a cold-start leaderboard as `zoo` subprocesses, one shared cold cache."""
    index, split = prepare(args, work)
    env = zoo_env(work, work / "cache", args.weights_dir)
    steps: list[dict] = []
    for recipe in LEADERBOARD:
        print(f"zoo train {recipe} ...", flush=True)
        r = train_zoo(recipe, f"lb-{recipe}", index, split, env, args, work)
        steps.append({"step": f"zoo train {recipe}", "seconds": r.total_seconds,
                      "test_accuracy": r.test_accuracy})
    members = ",".join(f"lb-{r}" for r in LEADERBOARD)
    argv = ["ensemble", "--members", members, "--method", "weighted", "--name", "lb-weighted"]
    seconds, _, _ = zoo(argv, env, work / "lb-weighted")
    board_s, _, board = zoo(["leaderboard", "--format", "json"], env, work / "board")
    rows = {row["name"]: row for row in json.loads(board)}
    steps.append({"step": "zoo ensemble --method weighted", "seconds": seconds,
                  "test_accuracy": rows["lb-weighted"]["test_accuracy"]})
    steps.append({"step": "zoo leaderboard", "seconds": board_s, "test_accuracy": None})
    total = sum(s["seconds"] for s in steps)
    print("\n## Cold-start leaderboard\n\n| step | wall s | test acc |\n|---|---:|---:|")
    for s in steps:
        acc = "" if s["test_accuracy"] is None else f"{s['test_accuracy']:.4f}"
        print(f"| {s['step']} | {s['seconds']:.1f} | {acc} |")
    print(f"| **total** | **{total:.1f}** | |")
    return {"steps": steps, "total_seconds": total}


def main(argv: list[str] | None = None) -> None:
    """Runs in a fresh working folder (removed afterwards unless --keep or a step failed)."""
    args = parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="zoo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        sys.exit(f"--work {work} is not empty: the benchmark needs a fresh folder (cold cache)")
    results = leaderboard(args, work) if args.leaderboard else time_to_accuracy(args, work)
    results.update(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                   args={k: str(v) for k, v in vars(args).items()})
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.keep:
        print(f"\nworking folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
