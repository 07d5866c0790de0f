"""Run folders (``<ZOO_HOME>/<run>/``): names, checkpoints, metadata and stored predictions.

Everything is safetensors, JSON, CSV or ``.npz`` without pickled objects, written atomically.
"""
from __future__ import annotations

import csv
import difflib
import io
import math
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo.errors import ZooError, short
from zoo.fileio import atomic_path, open_regular, write_json
from zoo.paths import runs_home
from zoo.store.schema import RUN_NAME, RunMeta, read_checked

# Names of the run root's own files and folders (the leaderboard and its SQLite side files, a
# tuning study, the decode cache): a run folder may never take them.
RESERVED = re.compile(r"^(zoo|tune)\.db([-.].*)?$|^cache$", re.IGNORECASE)
CONFIG_MAX_BYTES = 2**20  # config.yaml: the run's recipe
PREDICTIONS_MAX_BYTES = 2**30
WEIGHTS_MAX_BYTES = 2**34


def check_run_name(name: str) -> str:
    """Run names are plain folder names: they can never escape the run root or take the name of
    a file the store keeps there."""
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise ZooError(f"Invalid run name {short(name)}: a run name is a plain folder name inside "
                       "the run root; use letters, digits, '.', '_' and '-' (starting with a letter "
                       "or digit, at most 100 characters, no '..').")
    if RESERVED.match(name):
        raise ZooError(f"Invalid run name {name!r}: the run root keeps its own files under that "
                       "name (the leaderboard zoo.db and its side files, tune.db, the cache); "
                       "choose another name.")
    return name


def run_names(home: Path | None = None) -> list[str]:
    home = home or runs_home()
    if not home.is_dir():
        return []
    # hidden entries are never runs (run names start with a letter or digit): a run being
    # written in a temporary folder (zoo.fileio.atomic_folder) is not listed before it is whole
    return sorted(p.name for p in home.iterdir()
                  if not p.name.startswith(".") and (p / "meta.json").exists())


def run_dir(name: str, home: Path | None = None, must_exist: bool = True) -> Path:
    home = home or runs_home()
    path = home / check_run_name(name)
    if must_exist and not (path / "meta.json").exists():
        close = difflib.get_close_matches(name, run_names(home), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ZooError(f"No run named '{name}' in {home}.{hint} `zoo leaderboard` lists the runs.")
    return path


def new_run_name(prefix: str, home: Path | None = None) -> str:
    """``<prefix>-<n>`` with the next free n (``new_run`` claims it atomically)."""
    home = home or runs_home()
    base = re.sub(r"[^A-Za-z0-9._-]", "_", prefix).strip("._-")[:90] or "run"
    base = base if not RESERVED.match(base) else f"run-{base}"
    taken = {p.name for p in home.iterdir()} if home.is_dir() else set()
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return check_run_name(f"{base}-{n}")


def _claim(home: Path, name: str) -> bool:
    """Create the folder ``home/name``; False when it exists (another run took the name first)."""
    try:
        os.mkdir(home / name)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        raise ZooError(f"Cannot create the run folder {home / name}: {exc.strerror}. ZOO_HOME must "
                       "be a writable folder.") from exc


def _taken(name: str, home: Path) -> ZooError:
    return ZooError(f"A run named '{name}' already exists in {home}; choose another --name.")


def check_name_free(name: str, home: Path) -> None:
    """Refuse early (before any work) a run name that is invalid or taken; ``new_run`` still
    claims it atomically."""
    if (home / check_run_name(name)).exists():
        raise _taken(name, home)


@contextmanager
def new_run(home: Path, name: str | None, prefix: str) -> Iterator[Path]:
    """A new run folder, created atomically (two trainings started at once never share one): named
    ``name``, or ``<prefix>-<n>`` with the next free n. If the body fails, the folder is removed."""
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ZooError(f"Cannot create the run root {home}: {exc.strerror}. ZOO_HOME must be a "
                       "writable folder.") from exc
    if name is None:
        name = new_run_name(prefix, home)
        while not _claim(home, name):
            name = new_run_name(prefix, home)
    elif not _claim(home, check_run_name(name)):
        raise _taken(name, home)
    try:
        yield home / name
    except BaseException:
        shutil.rmtree(home / name, ignore_errors=True)
        raise


def read_meta(path: Path) -> dict:
    """A run's ``meta.json``, size-capped and checked against ``RunMeta``."""
    return read_checked(path / "meta.json", RunMeta)


def write_meta(path: Path, meta: dict) -> None:
    write_json(path / "meta.json", meta)


def save_weights(path: Path, model: nn.Module) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, durable=True) as tmp:
        save_file(state, str(tmp))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors. Only safetensors is read: nothing is ever unpickled."""
    try:
        open_regular(path, WEIGHTS_MAX_BYTES).close()  # no pipe (a read would hang), no giant
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"Checkpoint {path} is not a readable safetensors file ({exc}). mineral-zoo "
                       "never loads pickled checkpoints; retrain the run or restore the file.") from exc


def write_probabilities(file: Path, ids: list[str], labels: np.ndarray, probs: np.ndarray,
                        **extra: np.ndarray) -> None:
    """Image ids, integer labels and float32 probabilities (plus ``extra`` arrays) as ``.npz``."""
    buf = io.BytesIO()
    np.savez_compressed(buf, ids=np.asarray(ids, dtype=str), labels=np.asarray(labels, dtype=np.int64),
                        probs=np.asarray(probs, dtype=np.float32), **extra)
    with atomic_path(file, durable=True) as tmp:
        tmp.write_bytes(buf.getvalue())


def save_predictions(path: Path, split: str, ids: list[str], labels: np.ndarray,
                     probs: np.ndarray, **extra: np.ndarray) -> None:
    write_probabilities(path / "predictions" / f"{split}.npz", ids, labels, probs, **extra)


def load_predictions(path: Path, split: str) -> dict[str, np.ndarray]:
    file = path / "predictions" / f"{split}.npz"
    try:
        with open_regular(file, PREDICTIONS_MAX_BYTES) as fh, np.load(fh, allow_pickle=False) as data:
            _check_sizes(data)
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, ZooError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)[:300]
        raise ZooError(f"Run '{path.name}' has no usable {split} predictions ({file}: {reason}). "
                       "Was its training finished?") from exc


_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _check_sizes(data: np.lib.npyio.NpzFile) -> None:
    """Refuse arrays that would decompress to more than ``PREDICTIONS_MAX_BYTES`` (a zip bomb),
    from their headers, before anything is decompressed."""
    total = 0
    for member in data.zip.namelist():
        with data.zip.open(member) as fh:
            read_header = _NPY_HEADERS.get(np.lib.format.read_magic(fh))
            if read_header is None:
                raise ZooError(f"{member} is not a plain .npy array")
            shape, _, dtype = read_header(fh)
        total += math.prod(shape) * dtype.itemsize
    if total > PREDICTIONS_MAX_BYTES:
        raise ZooError(f"its arrays would take {total:,} bytes in memory, over the "
                       f"{PREDICTIONS_MAX_BYTES:,}-byte limit")


def write_history(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path / "history.csv", durable=True) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
