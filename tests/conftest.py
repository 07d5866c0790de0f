"""Shared fixtures: tiny generated datasets, an isolated zoo home, and the real photos."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

COLOURS = {"azurite": (40, 70, 200), "malachite": (30, 160, 60), "pyrite": (200, 170, 50)}


def make_dataset(root: Path, per_class: int = 8, size: int = 48, seed: int = 0) -> Path:
    """Classes that differ in colour, with noise so no two images are near-duplicates."""
    rng = np.random.default_rng(seed)
    for cls, rgb in COLOURS.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3))
            arr = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture
def zoo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private ZOO_HOME / split folder / dataset for one test; returns the home."""
    home = tmp_path / "runs"
    monkeypatch.setenv("ZOO_HOME", str(home))
    monkeypatch.setenv("ZOO_SPLITS_DIR", str(tmp_path / "splits"))
    monkeypatch.setenv("ZOO_DATA", str(make_dataset(tmp_path / "photos")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("ZOO_WEIGHTS_DIR", raising=False)
    return home


def _shared() -> Path | None:
    value = os.environ.get("ZOO_TEST_DATA")
    return Path(value).resolve() if value else None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real mineral photos (ZOO_TEST_DATA); CI sets ZOO_REQUIRE_REAL_DATA=1 so they never skip."""
    path = _shared()
    if path is None or not path.is_dir():
        if os.environ.get("ZOO_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"ZOO_TEST_DATA={path} is not a folder, and ZOO_REQUIRE_REAL_DATA=1")
        pytest.skip("set ZOO_TEST_DATA to the real photos folder to run end-to-end tests")
    return path


@pytest.fixture(scope="session")
def real_weights() -> Path:
    value = os.environ.get("ZOO_TEST_WEIGHTS")
    if not value or not Path(value).is_dir():
        if os.environ.get("ZOO_REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"ZOO_TEST_WEIGHTS={value} is not a folder, and ZOO_REQUIRE_REAL_DATA=1")
        pytest.skip("set ZOO_TEST_WEIGHTS to the offline weights folder")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def real_subset(real_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few real photos per class (symlinks: nothing is copied into the project)."""
    root = tmp_path_factory.mktemp("real_subset")
    for cls_dir in sorted(p for p in real_data.iterdir() if p.is_dir()):
        (root / cls_dir.name).mkdir()
        for f in sorted(p for p in cls_dir.iterdir() if p.is_file())[:10]:
            (root / cls_dir.name / f.name).symlink_to(f)
    return root
