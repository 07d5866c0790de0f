"""Decode cache: each photo is decoded once per size into a compact uint8 array and reused
across epochs, runs and models. Keyed by file content (sha256) and size, so an edited photo
is a new entry; the cache lives under the run root (``<ZOO_HOME>/.cache``)."""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from zoo.fileio import atomic_path
from zoo.imaging import load_image, resize_short_side


def cache_root() -> Path:
    from zoo.runs import runs_home

    return Path(os.environ.get("ZOO_CACHE_DIR") or runs_home() / ".cache")


def decode_array(source: str | Path | bytes, side: int) -> np.ndarray:
    """Decode a photo to an HxWx3 uint8 array whose shorter side is ``side``."""
    return np.ascontiguousarray(np.asarray(resize_short_side(load_image(source, min_side=side), side)))


class DecodeCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else cache_root() / "decoded"
        self.hits = 0
        self.misses = 0

    def path(self, sha256: str, side: int) -> Path:
        return self.root / str(side) / sha256[:2] / f"{sha256}.npy"

    def get(self, file: Path, sha256: str, side: int) -> np.ndarray:
        entry = self.path(sha256, side)
        if entry.is_file():
            try:
                arr = np.load(entry, allow_pickle=False)
                self.hits += 1
                return arr
            except (OSError, ValueError):
                pass  # damaged entry: decode again and overwrite
        arr = decode_array(file, side)
        with atomic_path(entry) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, arr, allow_pickle=False)
        self.misses += 1
        return arr

    def get_many(self, files: list[Path], shas: list[str], side: int, workers: int = 2,
                 on_done: Callable[[], None] | None = None) -> list[np.ndarray]:
        """Decode (or read) many photos; Pillow releases the GIL, so threads overlap decoding."""
        def one(args: tuple[Path, str]) -> np.ndarray:
            arr = self.get(args[0], args[1], side)
            if on_done:
                on_done()
            return arr

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, zip(files, shas)))

    def clear(self) -> int:
        """Delete every entry; returns the number of bytes freed."""
        if not self.root.exists():
            return 0
        size = sum(f.stat().st_size for f in self.root.rglob("*.npy"))
        shutil.rmtree(self.root)
        return size
