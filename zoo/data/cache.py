"""Decode cache: each photo is decoded once per size into a compact uint8 array and reused
across epochs, runs and models. Keyed by file content (sha256), size and decoder version, so
an edited photo is a new entry; the cache lives under the run root (``<ZOO_HOME>/.cache``,
or ``ZOO_CACHE_DIR``).

Training reads a dataset's photos from one memory-mapped pack (``zoo.data.pack``) per set of
photos and size, built from the per-photo entries: those stay the source, so a changed split or
dataset repacks by copying entries and decodes only new photos."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from zoo.data.imaging import load_image, resize_short_side
from zoo.data.pack import FORMAT_VERSION, PackedPhotos, PackError, write_pack
from zoo.fileio import atomic_path
from zoo.paths import runs_home

_ORIENTATION = 0x0112  # EXIF tag; values 5-8 swap width and height
# JPEGs are decoded at reduced scale (Pillow draft) down to at least DRAFT_MARGIN x the target
# side, so a real bicubic downscale still does the final filtering: with a margin of 1 the
# blocky DCT reduction showed through (mean 1.9, max 5.9 grey levels from a full decode on the
# MINET photos at 73 px); with 2: mean 0.5, max 3.5, and still ~1.6x faster than a full decode.
DRAFT_MARGIN = 2
# Part of every entry's path: bump it whenever decode_array's output changes, so arrays from an
# older decoder are never mixed with new ones (results would depend on the cache's history).
DECODER_VERSION = 3  # 3: 16-bit images in integer maths, transparency pasted on white
# What ``DecodeCache.path`` and ``pack_path`` write, relative to the cache root (any version),
# and what ``atomic_path`` leaves beside them when a write is interrupted: nothing else is
# deleted by clear().
_ENTRY = re.compile(r"v\d+/\d+/[0-9a-f]{2}/([0-9a-f]{64}\.npy|\.[0-9a-f]{64}\.npy\.\w+\.tmp)"
                    r"|packs/v\d+\.\d+/\d+/\.?[0-9a-f]{64}\.pack(\.\w+\.tmp)?")


def cache_root() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR") or runs_home() / ".cache")


def decode_array(source: str | Path | bytes, side: int) -> np.ndarray:
    """Decode a photo to an HxWx3 uint8 array whose shorter side is ``side``.

    Large JPEGs are decoded at reduced scale (see ``DRAFT_MARGIN``); the output still has
    exactly the shape that a full-resolution decode + ``resize_short_side`` gives, so cached
    training and validation views line up with what ``zoo predict`` sees.
    """
    img = load_image(source, min_side=DRAFT_MARGIN * side)
    full = _full_size(source, img.size)
    if full is None or full == img.size:
        return np.ascontiguousarray(np.asarray(resize_short_side(img, side)))
    scale = side / min(full)
    size = (max(1, round(full[0] * scale)), max(1, round(full[1] * scale)))
    reduce = 3.0 if side / min(img.size) < 0.5 else None
    return np.ascontiguousarray(np.asarray(img.resize(size, Image.Resampling.BICUBIC,
                                                      reducing_gap=reduce)))


def _full_size(source: str | Path | bytes, decoded: tuple[int, int]) -> tuple[int, int] | None:
    """The photo's displayed size before reduced-scale decoding, read from its header (EXIF
    orientation applied); None when it cannot be told or ``decoded`` is not that size reduced
    by one of JPEG's scale factors (1/2, 1/4, 1/8; sizes round up)."""
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb") as fp, \
                Image.open(fp) as img:
            w, h = img.size
            if img.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
    except Exception:  # noqa: BLE001  (load_image accepted the photo; a malformed EXIF block)
        return None
    reduced = any((-(-w // r), -(-h // r)) == tuple(decoded) for r in (1, 2, 4, 8))
    return (w, h) if reduced else None


@dataclass
class Cleared:
    """What ``DecodeCache.clear`` did: entries deleted, their bytes, other files left alone."""

    entries: int = 0
    bytes: int = 0
    kept: list[Path] = field(default_factory=list)


def _valid(arr: np.ndarray, side: int) -> bool:
    """Whether a loaded entry looks like what ``decode_array`` writes (catches damaged files)."""
    return arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) == side


class DecodeCache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else cache_root() / "decoded"
        self.hits = 0
        self.misses = 0
        self.notes: list[str] = []  # packs found unusable and rebuilt
        self._lock = threading.Lock()  # get_many updates the counters from several threads

    def path(self, sha256: str, side: int) -> Path:
        return self.root / f"v{DECODER_VERSION}" / str(side) / sha256[:2] / f"{sha256}.npy"

    def get(self, file: Path, sha256: str, side: int) -> np.ndarray:
        """The photo's decoded array: read from the cache, or decoded and stored (a damaged
        entry is decoded again and overwritten)."""
        entry = self.path(sha256, side)
        arr = self._load(entry, side)
        hit = arr is not None
        if arr is None:
            arr = decode_array(file, side)
            with atomic_path(entry) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
        with self._lock:
            self.hits += int(hit)
            self.misses += int(not hit)
        return arr

    @staticmethod
    def _load(entry: Path, side: int) -> np.ndarray | None:
        try:
            arr = np.load(entry, allow_pickle=False)
        except (OSError, ValueError, EOFError):  # absent, truncated, empty or foreign file
            return None
        return arr if _valid(arr, side) else None

    def get_many(self, files: list[Path], shas: list[str], side: int, workers: int = 2,
                 on_done: Callable[[], None] | None = None) -> list[np.ndarray]:
        """Decode (or read) many photos; Pillow releases the GIL, so threads overlap decoding."""
        return list(self._stream(files, shas, side, workers, on_done))

    def _stream(self, files: list[Path], shas: list[str], side: int, workers: int,
                on_done: Callable[[], None] | None) -> Iterator[np.ndarray]:
        """``get`` of each photo, in order, as the threads deliver them."""
        def one(args: tuple[Path, str]) -> np.ndarray:
            arr = self.get(args[0], args[1], side)
            if on_done:
                on_done()
            return arr

        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(one, zip(files, shas))

    def pack_path(self, shas: list[str], side: int) -> Path:
        """Where the pack of this set of photos (content hashes, any order) at ``side`` lives."""
        key = hashlib.sha256(" ".join(sorted(set(shas))).encode()).hexdigest()
        return self.root / "packs" / f"v{DECODER_VERSION}.{FORMAT_VERSION}" / str(side) / f"{key}.pack"

    def pack(self, files: list[Path], shas: list[str], side: int, workers: int = 2,
             on_done: Callable[[], None] | None = None) -> PackedPhotos:
        """Every distinct photo of ``files`` (one entry per content hash, sorted) in one
        memory-mapped pack: the existing pack when it is whole and holds exactly these photos,
        else one built from the entries (decoding what is missing; a damaged pack is noted)."""
        path = self.pack_path(shas, side)
        source = dict(zip(shas, files))
        keys = sorted(source)
        pack = self._existing_pack(path, side, keys)
        if pack is not None:
            with self._lock:
                self.hits += len(keys)
            return pack
        arrays = self._stream([source[k] for k in keys], keys, side, workers, on_done)
        write_pack(path, keys, arrays, side, DECODER_VERSION)
        return PackedPhotos(path, side, DECODER_VERSION)

    def _existing_pack(self, path: Path, side: int, keys: list[str]) -> PackedPhotos | None:
        """The pack at ``path`` when it is whole and holds exactly ``keys``; a damaged or
        foreign file is noted (the caller replaces it)."""
        try:
            pack = PackedPhotos(path, side, DECODER_VERSION)
            if pack.shas != keys:
                raise PackError("holds other photos")
            return pack
        except OSError:  # absent or unreadable: building it reports what is wrong, if anything
            return None
        except PackError as exc:
            self.notes.append(f"decode cache: {path} {exc}; rebuilt")
            return None

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def clear(self) -> Cleared:
        """Delete the cache entries (and the leftovers of interrupted writes), then the folders
        left empty; any other file under the cache folder is left alone and listed."""
        cleared = Cleared()
        for folder, _, names in os.walk(self.root, topdown=False):
            for name in names:
                path = Path(folder) / name
                info = path.lstat()
                if not (stat.S_ISREG(info.st_mode) and _ENTRY.fullmatch(self._key(path))):
                    cleared.kept.append(path)
                    continue
                path.unlink()
                cleared.entries += 1
                cleared.bytes += info.st_size
            with contextlib.suppress(OSError):  # not empty: it holds files that are not ours
                os.rmdir(folder)
        return cleared
