"""Scan a folder of class folders into an index: every file is judged by its content."""
from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.console import printable
from zoo.data.imaging import MAX_FILE_BYTES, load_image
from zoo.errors import UnreadableImageError, UnsafeFileError, ZooError
from zoo.fileio import read_blocks

DEFAULT_DATA = "data/minerals"
# Walking a photo folder stops with a refusal past these bounds, so that a wrong path (/, a home
# folder) is refused within a second or two instead of read file by file. The real dataset:
# 947 photos, one folder deep; sorting photos by place and date needs a few levels at most.
MAX_FILES = 200_000
MAX_DEPTH = 8
_POINT_AT = "Point at a folder of class folders (<class>/<image>), or of photos to predict."


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
                       "folders, e.g. photos/quartz/001.jpg, photos/pyrite/002.jpg. To download "
                       "the public minerals photos: zoo data fetch minet (then --data data/minet).")
    return root.resolve()


def dhash(img: Image.Image) -> int:
    """64-bit difference hash: robust to resizing and re-encoding, used to group near-duplicates."""
    small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def _sha256(path: Path) -> str:
    """Of a regular file, read a block at a time and never past ``MAX_FILE_BYTES``."""
    digest = hashlib.sha256()
    for block in read_blocks(path, MAX_FILE_BYTES):
        digest.update(block)
    return digest.hexdigest()


def _inspect(path: Path) -> tuple[str, int] | str:
    """(sha256, dhash) of a readable image, or the reason it cannot be used.

    Decoding comes first: Pillow identifies a file from its header, so a large non-image (a
    video, an archive) is rejected without being read into memory.
    """
    try:
        info = path.stat()
        if stat.S_ISREG(info.st_mode) and info.st_size == 0:
            return "empty file (0 bytes)"
        img = load_image(path, min_side=64)
        return _sha256(path), dhash(img)
    except (UnreadableImageError, UnsafeFileError) as exc:
        return exc.reason
    except OSError as exc:
        return f"cannot read file ({exc.strerror})"


def valid_name(name: str) -> bool:
    """False for names that are not valid UTF-8 (Python keeps their bytes as lone surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def visible_files(*paths: Path) -> list[Path]:
    """Each file given, and every file below each folder given (nested folders too, sorted),
    hidden ones left out. A folder with more than ``MAX_FILES`` files, or folders nested more
    than ``MAX_DEPTH`` deep, is refused with a ZooError as soon as the walk finds it."""
    found: list[Path] = []
    for path in paths:
        for file in _walk(path):
            found.append(file)
            if len(found) > MAX_FILES:
                raise ZooError(f"More than {MAX_FILES:,} files in {path}: that does not look like "
                               f"a folder of photos. {_POINT_AT}")
    return found


def _walk(path: Path) -> Iterator[Path]:
    if not path.is_dir():
        yield path
        return
    top = len(path.parts)
    for dirpath, dirnames, filenames in os.walk(path):
        folder = Path(dirpath)
        if len(folder.parts) - top > MAX_DEPTH:
            raise ZooError(f"{folder} is more than {MAX_DEPTH} folders deep inside {path}: that "
                           f"does not look like a folder of photos. {_POINT_AT}")
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield from (folder / f for f in sorted(filenames) if not f.startswith("."))


def _class_dirs(root: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The class folders of ``root``, and what at the top level is not one (with the reason)."""
    try:
        entries = sorted(p for p in root.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise ZooError(f"Cannot list the dataset folder {root}: {exc.strerror}. "
                       "Check it exists and is readable.") from exc
    dirs = [p for p in entries if p.is_dir() and valid_name(p.name)]
    stray = [(printable(p.name) + "/", "class folder name is not valid UTF-8: rename the folder")
             for p in entries if p.is_dir() and not valid_name(p.name)]
    stray += [(printable(p.name), "not inside a class folder (ignored)")
              for p in entries if not p.is_dir()]
    return dirs, stray


def scan_dataset(root: Path, workers: int = 4) -> DatasetIndex:
    """Index every readable image under ``root/<class>/``; unreadable files are listed, not fatal."""
    class_dirs, skipped = _class_dirs(root)
    if not class_dirs:
        raise ZooError(f"No class folders in {root}: expected {root}/<class>/<image> "
                       "(one sub-folder per mineral).")
    files = [(f.relative_to(root).as_posix(), f, f.relative_to(root).parts[0])
             for f in visible_files(*class_dirs)]
    skipped += [(printable(rel), "file or folder name is not valid UTF-8: rename it")
                for rel, _, _ in files if not valid_name(rel)]
    files = [entry for entry in files if valid_name(entry[0])]
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(_inspect, [f for _, f, _ in files]))
    items = []
    for (rel, _, label), res in zip(files, results):
        if isinstance(res, str):
            skipped.append((rel, res))
        else:
            items.append(Item(rel, label, *res))
    classes = [d.name for d in class_dirs if any(it.label == d.name for it in items)]
    skipped += [(d.name + "/", "class folder has no readable images")
                for d in class_dirs if d.name not in classes]
    return DatasetIndex(root=root, classes=classes, items=items, skipped=skipped)
