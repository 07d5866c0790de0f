"""A non-editable install (a built wheel) carries the recipes and the web app's files."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_recipes_where_the_installed_zoo_finds_them(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building a wheel offline needs setuptools in this venv")
    src = tmp_path / "src"  # a clean copy: an old build/ folder in the checkout must not count
    for name in ("zoo", "ensembles", "recipes"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("mineral_zoo-*.whl"))
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "zoo" / "serve" / "static" / "index.html").is_file()
    code = "from zoo.train.recipes import list_recipes; print(' '.join(sorted(list_recipes())))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": ""}, check=True).stdout.split()
    assert {p.stem for p in (ROOT / "recipes").glob("*.yaml")} <= set(out)
