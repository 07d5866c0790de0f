"""Atomic writes: a crash never leaves a half-written checkpoint, JSON or prediction file."""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from zoo.errors import ZooError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise ZooError(f"Cannot write {path}: {exc.strerror}. Check the folder exists and is "
                       "writable (set ZOO_HOME to choose another run folder).") from exc
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise ZooError(f"Writing {path} failed: {exc.strerror} (disk full?). Nothing was "
                       "overwritten.") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: object) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
