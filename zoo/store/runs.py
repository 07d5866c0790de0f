"""Run folders (``<ZOO_HOME>/<run>/``): names, checkpoints, metadata and stored predictions.

Everything is safetensors, JSON, CSV or ``.npz`` without pickled objects, written atomically.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zoo.errors import ZooError
from zoo.fileio import atomic_path, write_json
from zoo.paths import runs_home

RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_run_name(name: str) -> str:
    """Run names are plain folder names: they can never escape the run root."""
    if not RUN_NAME.fullmatch(name) or ".." in name:
        raise ZooError(f"Invalid run name {name!r}: a run name is a plain folder name inside the "
                       "run root; use letters, digits, '.', '_' and '-' (starting with a letter or "
                       "digit, at most 100 characters, no '..').")
    return name


def run_names(home: Path | None = None) -> list[str]:
    home = home or runs_home()
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if (p / "meta.json").is_file())


def run_dir(name: str, home: Path | None = None, must_exist: bool = True) -> Path:
    home = home or runs_home()
    path = home / check_run_name(name)
    if must_exist and not (path / "meta.json").is_file():
        close = difflib.get_close_matches(name, run_names(home), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ZooError(f"No run named '{name}' in {home}.{hint} `zoo leaderboard` lists the runs.")
    return path


def new_run_name(prefix: str, home: Path | None = None) -> str:
    """``<prefix>-<n>`` with the next free n."""
    home = home or runs_home()
    base = check_run_name(re.sub(r"[^A-Za-z0-9._-]", "_", prefix).strip("._-")[:90] or "run")
    taken = {p.name for p in home.iterdir()} if home.is_dir() else set()
    n = 1
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ZooError(f"Run metadata {path / 'meta.json'} is missing or damaged ({exc}).") from exc
    if not isinstance(meta, dict):
        raise ZooError(f"Run metadata {path / 'meta.json'} is damaged (not a JSON object).")
    return meta


def write_meta(path: Path, meta: dict) -> None:
    write_json(path / "meta.json", meta)


def save_weights(path: Path, model: nn.Module) -> None:
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path, durable=True) as tmp:
        save_file(state, str(tmp))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors. Only safetensors is read: nothing is ever unpickled."""
    try:
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
        with np.load(file, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise ZooError(f"Run '{path.name}' has no usable {split} predictions ({file}: {exc}). "
                       "Was its training finished?") from exc
    return out


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
