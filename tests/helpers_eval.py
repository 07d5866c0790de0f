"""Shared fixtures for the evaluate / predict / export tests: a tiny photo dataset and tiny runs.

The runs are trained once per test session (in a temporary folder) and every test gets its own
copy of the run root, so tests can write evaluations, exports and reports without interfering:

    @pytest.fixture
    def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
        return private_copy(tmp_path_factory, tmp_path, monkeypatch)
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoo.errors import ZooError

COLOURS = {"azurite": (40, 60, 200), "malachite": (40, 190, 70), "cinnabar": (210, 40, 40)}
TINY = ["--set", "data.image_size=32", "--set", "train.epochs=1", "--set", "data.batch_size=8",
        "--set", "model.kwargs.widths=[8,16]", "--quiet"]


@dataclass
class TinyZoo:
    home: Path     # run root holding runs 'tiny', 'tiny2' and ensemble 'duo'
    data: Path     # the training dataset (3 classes x 6 photos)
    splits: Path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """Everything printed, with rich's line wrapping undone."""
        return " ".join((self.stdout + " " + self.stderr).split())


def write_photos(folder: Path, colours: dict[str, tuple[int, int, int]], n: int, seed: int = 0,
                 size: int = 48) -> list[Path]:
    """``n`` noisy PNGs per class, tinted with the class colour (distinct perceptual hashes)."""
    rng = np.random.default_rng(seed)
    paths = []
    for cls, rgb in colours.items():
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            noise = rng.integers(-50, 50, (size, size, 3))
            arr = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            path = folder / cls / f"{cls}_{i}.png"
            Image.fromarray(arr).save(path)
            paths.append(path)
    return paths


def invoke(args: list[str]) -> CliResult:
    """Run the ``zoo`` CLI in-process; a ZooError becomes its exit code, as ``zoo.cli.main`` does."""
    from zoo.cli import app

    result = CliRunner().invoke(app, args)
    code = result.exit_code
    if isinstance(result.exception, ZooError):
        code = result.exception.exit_code
        return CliResult(code, result.stdout, result.stderr + str(result.exception))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(code, result.stdout, result.stderr)


_BUILT: dict[str, TinyZoo] = {}


def build_tiny_zoo(factory: pytest.TempPathFactory) -> TinyZoo:
    """Train two tiny custom_cnn runs and a soft ensemble of them (once per test session)."""
    if "zoo" in _BUILT:
        return _BUILT["zoo"]
    base = factory.mktemp("tinyzoo")
    zoo = TinyZoo(base / "runs", base / "photos", base / "splits")
    write_photos(zoo.data, COLOURS, 6)
    with pytest.MonkeyPatch.context() as mp:
        use_zoo(mp, zoo)
        for name, seed in (("tiny", 0), ("tiny2", 1)):
            res = invoke(["train", "custom_cnn", "--name", name, "--set", f"seed={seed}", *TINY])
            assert res.exit_code == 0, res.said
        res = invoke(["ensemble", "--members", "tiny,tiny2", "--name", "duo"])
        assert res.exit_code == 0, res.said
    _BUILT["zoo"] = zoo
    return zoo


def use_zoo(mp: pytest.MonkeyPatch, zoo: TinyZoo) -> None:
    mp.setenv("ZOO_HOME", str(zoo.home))
    mp.setenv("ZOO_DATA", str(zoo.data))
    mp.setenv("ZOO_SPLITS_DIR", str(zoo.splits))
    mp.setenv("ZOO_CACHE_DIR", str(zoo.home.parent / "cache"))
    mp.delenv("ZOO_WEIGHTS_DIR", raising=False)


def private_copy(factory: pytest.TempPathFactory, tmp_path: Path, mp: pytest.MonkeyPatch) -> TinyZoo:
    """This test's own copy of the tiny run root, with ZOO_HOME and friends pointing at it."""
    zoo = build_tiny_zoo(factory)
    mine = TinyZoo(tmp_path / "runs", zoo.data, zoo.splits)
    shutil.copytree(zoo.home, mine.home, ignore=shutil.ignore_patterns(".cache"))
    use_zoo(mp, mine)
    mp.setenv("ZOO_CACHE_DIR", str(zoo.home.parent / "cache"))  # share decoded photos
    return mine


def is_png(path: Path) -> bool:
    if not path.is_file() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    with Image.open(path) as img:
        img.verify()
    return True
