"""The ``zoo`` command in-process, and a private zoo of tiny runs for a test module."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from typer.testing import CliRunner

from tests.conftest import make_dataset
from zoo.cli import app


def zoo(*args: str) -> tuple[int, str]:
    """Exit code and whitespace-normalised output of ``zoo ARGS``; never a traceback."""
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "1000"})
    output = " ".join(result.output.split())
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, output


@contextmanager
def private_zoo(root: Path, train: list[str], runs: dict[str, int]) -> Iterator[Path]:
    """Inside, ZOO_HOME, splits and a 3-class dataset (10 photos a class) live under ``root``,
    offline, with custom_cnn runs ``{name: seed}`` trained with the ``zoo train`` arguments
    ``train``; yields the run root."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "runs"))
        mp.setenv("ZOO_SPLITS_DIR", str(root / "splits"))
        mp.setenv("ZOO_DATA", str(make_dataset(root / "photos", per_class=10)))
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.delenv("ZOO_WEIGHTS_DIR", raising=False)
        for name, seed in runs.items():
            code, said = zoo("train", "custom_cnn", *train, "--set", f"seed={seed}", "--name", name)
            assert code == 0, said
        yield root / "runs"
