"""A list of every exported file (name, size, sha256) kept in each export folder, and its check.

``zoo export`` records each file it writes in ``files.json`` of the folder it writes to
(``runs/<run>/export/`` for onnx, torchscript and the other single-file formats; the web app's
folder lists all of its own files). ``zoo export RUN --check`` compares every listed file with
the disk: a missing, changed or unlisted file is a problem, named with what to do.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from zoo.errors import UnsafeFileError, ZooError
from zoo.fileio import read_text, write_json

MANIFEST = "files.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 4 << 20


def file_entry(path: Path) -> dict:
    """Size and sha256 of the file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fp:
        while chunk := fp.read(_CHUNK):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _listed_files(folder: Path) -> list[str]:
    """Files under ``folder`` (relative, '/'-separated) that its manifest covers: everything but
    the manifest itself, temporary files and folders with a manifest of their own."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name == MANIFEST or (path.name.startswith(".") and path.name.endswith(".tmp")):
            continue
        if path.is_dir():
            if not (path / MANIFEST).exists():
                found += [f"{path.name}/{name}" for name in _listed_files(path)]
        else:
            found.append(path.name)
    return found


def _read(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.exists():
        return {"version": MANIFEST_VERSION, "files": {}}
    try:
        data = json.loads(read_text(path, MAX_MANIFEST_BYTES))
    except (UnsafeFileError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ZooError(f"{path} cannot be read ({exc}); export again.") from exc
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
        raise ZooError(f"{path} is not a list of exported files (no 'files' mapping); export again.")
    return data


def write_manifest(folder: Path, names: list[str] | None = None) -> Path:
    """Record ``names`` (relative to ``folder``; default every file there) in ``folder``'s
    manifest, keeping the entries of the other files already recorded."""
    data = _read(folder)
    for name in names if names is not None else _listed_files(folder):
        data["files"][name] = file_entry(folder / name)
    data["files"] = dict(sorted(data["files"].items()))
    data["version"] = MANIFEST_VERSION
    write_json(folder / MANIFEST, data)
    return folder / MANIFEST


@dataclass
class FolderCheck:
    folder: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)


def check_folder(folder: Path) -> FolderCheck:
    """Compare ``folder`` with its manifest: each listed file present with its size and sha256,
    nothing else there."""
    result = FolderCheck(folder)
    if not (folder / MANIFEST).is_file():
        result.problems.append(f"{MANIFEST} is missing: nothing says what this folder should hold")
        return result
    try:
        listed = _read(folder)["files"]
    except ZooError as exc:
        result.problems.append(str(exc))
        return result
    for name, expected in listed.items():
        path = folder / name
        if not path.is_file():
            result.problems.append(f"{name}: missing")
            continue
        found = file_entry(path)
        if found["bytes"] != expected.get("bytes"):
            result.problems.append(f"{name}: {found['bytes']:,} bytes, expected {expected.get('bytes'):,}")
        elif found["sha256"] != expected.get("sha256"):
            result.problems.append(f"{name}: content changed (sha256 differs)")
        result.checked += 1
    result.problems += [f"{name}: not part of the export" for name in _listed_files(folder)
                        if name not in listed]
    return result


def check_exports(export_dir: Path) -> list[FolderCheck]:
    """Check ``export_dir`` and every folder below it that has a manifest of its own."""
    if not export_dir.is_dir():
        raise ZooError(f"Nothing exported yet: {export_dir} does not exist. Export the run first "
                       f"(`zoo export {export_dir.parent.name} --format onnx`).")
    folders = [export_dir] + sorted(p.parent for p in export_dir.rglob(MANIFEST) if p.parent != export_dir)
    checks = [check_folder(f) for f in folders if f != export_dir or (f / MANIFEST).exists()
              or _listed_files(f)]
    if not checks:
        raise ZooError(f"Nothing exported yet: {export_dir} is empty. Export the run first "
                       f"(`zoo export {export_dir.parent.name} --format onnx`).")
    return checks
