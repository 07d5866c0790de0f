"""Scan a folder of class folders into an index: every file is judged by its content."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.errors import UnreadableImageError, ZooError
from zoo.imaging import load_image

DEFAULT_DATA = "data/minerals"


@dataclass(frozen=True)
class Item:
    """One readable photo: path relative to the dataset root, class name, content hash, dHash."""

    path: str
    label: str
    sha256: str
    dhash: int


@dataclass
class DatasetIndex:
    root: Path
    classes: list[str]
    items: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def name(self) -> str:
        return self.root.name

    def counts(self) -> dict[str, int]:
        return {c: sum(1 for it in self.items if it.label == c) for c in self.classes}


def resolve_data_root(data: str | Path | None) -> Path:
    """``--data`` beats ``ZOO_DATA`` beats the default ``data/minerals``; the folder must exist."""
    root = Path(data or os.environ.get("ZOO_DATA") or DEFAULT_DATA).expanduser()
    if not root.is_dir():
        raise ZooError(f"Dataset folder not found: {root}\n"
                       "Point --data (or the ZOO_DATA environment variable) at a folder of class "
                       "folders, e.g. photos/quartz/001.jpg, photos/pyrite/002.jpg.")
    return root.resolve()


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: robust to resizing and re-encoding, used to group near-duplicates."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _inspect(path: Path) -> tuple[str, int] | str:
    """(sha256, dhash) of a readable image, or the reason it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read file ({exc.strerror})"
    if not data:
        return "empty file (0 bytes)"
    try:
        img = load_image(data, min_side=64)
    except UnreadableImageError as exc:
        return str(exc).removeprefix("upload: ")
    return hashlib.sha256(data).hexdigest(), dhash(img)


def _visible_files(folder: Path) -> list[Path]:
    """Files below ``folder`` (nested folders too), hidden files and folders left out."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def scan_dataset(root: Path, workers: int = 4) -> DatasetIndex:
    """Index every readable image under ``root/<class>/``; unreadable files are listed, not fatal."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ZooError(f"No class folders in {root}: expected {root}/<class>/<image> "
                       "(one sub-folder per mineral).")
    files = [(f, d.name) for d in class_dirs for f in _visible_files(d)]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_inspect, [f for f, _ in files]))
    items, skipped = [], []
    for (path, label), res in zip(files, results):
        rel = path.relative_to(root).as_posix()
        if isinstance(res, str):
            skipped.append((rel, res))
        else:
            items.append(Item(rel, label, *res))
    classes = [d.name for d in class_dirs if any(it.label == d.name for it in items)]
    skipped += [(d.name + "/", "class folder has no readable images")
                for d in class_dirs if d.name not in classes]
    return DatasetIndex(root=root, classes=classes, items=items, skipped=skipped)
