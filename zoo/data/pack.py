"""Pack files: many decoded photos in one memory-mapped uint8 file.

Layout (little-endian)::

    preamble  magic b"ZOOPACK\\0", format version u32, DECODER_VERSION u32, side u32, count u64
    index     count records of (sha256 32 bytes, data offset u64, height u32, width u32)
    data      each photo's HxWx3 uint8 pixels, in index order, back to back

The file is opened read-only with ``np.memmap``: its pages are page cache that the kernel can
drop and share between processes, not memory of the process that reads them.
"""
from __future__ import annotations

import copy
import struct
from pathlib import Path
from typing import Iterable, Sequence, overload

import numpy as np

from zoo.errors import ZooError
from zoo.fileio import atomic_path

MAGIC = b"ZOOPACK\0"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<8sIIIQ")
INDEX = np.dtype([("sha", "u1", 32), ("offset", "<u8"), ("height", "<u4"), ("width", "<u4")])


class PackError(ZooError):
    """A pack file that cannot be used (truncated, foreign, or of another decoder or side)."""


def write_pack(path: Path, shas: Sequence[str], arrays: Iterable[np.ndarray], side: int,
               decoder: int) -> None:
    """Write the arrays of ``shas`` (same order) as a pack; atomic, so concurrent writers of
    the same pack both succeed and readers never see a partial file."""
    index = np.zeros(len(shas), INDEX)
    index["sha"] = np.frombuffer(bytes.fromhex("".join(shas)), np.uint8).reshape(-1, 32)
    offset = _PREAMBLE.size + index.nbytes
    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as fh:
        fh.seek(offset)
        for i, arr in zip(range(len(shas)), arrays, strict=True):
            index[i]["offset"], index[i]["height"], index[i]["width"] = offset, *arr.shape[:2]
            offset += fh.write(np.ascontiguousarray(arr, np.uint8).data)
        fh.seek(0)
        fh.write(_PREAMBLE.pack(MAGIC, FORMAT_VERSION, decoder, side, len(shas)))
        fh.write(index.tobytes())


def _read_index(data: np.ndarray, side: int, decoder: int) -> np.ndarray:
    """The index of a mapped pack file, after checking that the file is whole and ours."""
    if len(data) < _PREAMBLE.size or bytes(data[:8]) != MAGIC:
        raise PackError("is not a pack file")
    _, fmt, dec, got_side, count = _PREAMBLE.unpack(bytes(data[:_PREAMBLE.size]))
    if (fmt, dec, got_side) != (FORMAT_VERSION, decoder, side):
        raise PackError(f"has format {fmt}, decoder {dec}, side {got_side}, not "
                        f"{FORMAT_VERSION}, {decoder}, {side}")
    end = _PREAMBLE.size + count * INDEX.itemsize
    index = np.frombuffer(bytes(data[_PREAMBLE.size:end]), INDEX) if end <= len(data) else None
    if index is not None and count:
        end = int(index["offset"][-1]) + 3 * int(index["height"][-1]) * int(index["width"][-1])
    if index is None or len(data) != end:
        raise PackError(f"is truncated or damaged ({len(data):,} bytes, the header describes "
                        f"{end:,})")
    return index


class PackedPhotos(Sequence[np.ndarray]):
    """Photos of a pack, or a selection of them, as a read-only sequence: ``len``, an int index
    gives an HxWx3 uint8 view of the mapped file, a slice gives a list of them. Pickled, it
    reopens the file by path (DataLoader workers)."""

    def __init__(self, path: Path, side: int, decoder: int, rows: np.ndarray | None = None) -> None:
        self.path, self.side, self.decoder = Path(path), side, decoder
        try:
            self._data = np.memmap(self.path, np.uint8, mode="r").view(np.ndarray)
        except ValueError:  # an empty file cannot be mapped
            raise PackError("is empty") from None
        index = _read_index(self._data, side, decoder)
        self.shas = [s.tobytes().hex() for s in index["sha"]]  # every entry's, in file order
        self._offset = index["offset"].astype(np.int64)
        self._shape = np.stack([index["height"], index["width"]], 1).astype(np.int64)
        self.rows = np.arange(len(index)) if rows is None else np.asarray(rows, np.int64)

    def subset(self, shas: Sequence[str]) -> PackedPhotos:
        """The entries with these content hashes, in this order (repeats allowed)."""
        row = {sha: i for i, sha in enumerate(self.shas)}
        view = copy.copy(self)  # shares the mapping
        view.rows = np.array([row[s] for s in shas], np.int64)
        return view

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self.rows[i]
        h, w = self._shape[row]
        return self._data[self._offset[row]:self._offset[row] + 3 * h * w].reshape(h, w, 3)

    def __reduce__(self) -> tuple:
        return PackedPhotos, (self.path, self.side, self.decoder, self.rows)
