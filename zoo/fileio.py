"""Safe file access: atomic writes (a crash never leaves a half-written checkpoint, JSON or
prediction file) and bounded reads (only regular files, never more than a set size)."""
from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from zoo.errors import UnsafeFileError, ZooError

_UMASK = os.umask(0)
os.umask(_UMASK)  # read once at import (os.umask has no read-only form and is process-wide)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On any error the temporary file is removed and ``path`` keeps its old content; OS errors
    (disk full, read-only folder) become a :class:`ZooError` naming the file. ``durable`` also
    flushes the data to disk before the rename, so a power cut cannot leave an empty file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise ZooError(f"Cannot write {path}: {_reason(exc)}{_blocker(path)}. Check that the folder "
                       "is writable (ZOO_HOME chooses the run folder, ZOO_SPLITS_DIR the split "
                       "folder).") from exc
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's (and safetensors') 0600: others may read runs
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ZooError(f"Writing {path} failed: {_reason(exc)}. The previous version, if any, is "
                       "untouched; free some disk space or fix the permissions and run again.") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside ``path``; on success it takes the place of ``path``
    (absent, or an empty folder) in one rename, so readers see no folder or the complete one.

    On any error or interruption the temporary folder is removed and ``path`` is untouched; OS
    errors become a :class:`ZooError` naming the folder.
    """
    path = Path(path)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp's 0700: as a plain mkdir would make it
    except OSError as exc:
        raise ZooError(f"Cannot write {path}: {_reason(exc)}{_blocker(path)}. Check that the folder "
                       "is writable.") from exc
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise ZooError(f"Writing {path} failed: {_reason(exc)}. Nothing was written there; free "
                       "some disk space or fix the permissions and run again.") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _blocker(path: Path) -> str:
    """' (X is a file, not a folder)' when an existing file stands where a folder must be."""
    file = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    return f" ({file} is a file, not a folder)" if file else ""


def _fsync(file: str) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: object) -> None:
    with atomic_path(path, durable=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path, durable=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def open_regular(path: str | Path, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for reading, after checking (on the open file, so nothing can swap it) that
    it is a regular file of at most ``max_bytes``: folders, pipes, devices and sockets (a read
    could block forever) and oversized files (a read could exhaust memory) are refused with an
    UnsafeFileError. Opening never blocks (O_NONBLOCK: a pipe with no writer)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise UnsafeFileError(str(path), f"not a regular file ({_kind(info.st_mode)}); refusing "
                              "to read it")
    if max_bytes is not None and info.st_size > max_bytes:
        os.close(fd)
        raise UnsafeFileError(str(path), _over(info.st_size, max_bytes))
    return os.fdopen(fd, "rb")


def _over(size: int, max_bytes: int) -> str:
    return f"{size:,} bytes or more, over the {max_bytes:,}-byte limit for this kind of file; " \
           "refusing to read it"


def read_blocks(path: str | Path, max_bytes: int, block: int = 1 << 20) -> Iterator[bytes]:
    """The content of a regular file of at most ``max_bytes`` (see ``open_regular``), ``block``
    bytes at a time; a file that grows past the limit while read (or a /proc file that claims
    0 bytes) is refused too, after at most ``max_bytes + 1`` bytes."""
    with open_regular(path, max_bytes) as fh:
        total = 0
        while chunk := fh.read(min(block, max_bytes + 1 - total)):
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFileError(str(path), _over(total, max_bytes))
            yield chunk


def read_bytes(path: str | Path, max_bytes: int) -> bytes:
    """The whole content of a regular file of at most ``max_bytes`` (see ``read_blocks``)."""
    return b"".join(read_blocks(path, max_bytes))


def read_text(path: str | Path, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (see ``read_blocks``)."""
    return read_bytes(path, max_bytes).decode("utf-8")
