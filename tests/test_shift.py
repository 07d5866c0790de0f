"""benchmarks/shift.py: the photo changes, and the benchmark end to end on tiny runs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers_eval import build_tiny_zoo, use_zoo
from PIL import Image

from zoo.errors import ZooError

_spec = importlib.util.spec_from_file_location(
    "shift_benchmark", Path(__file__).parents[1] / "benchmarks" / "shift.py")
shift = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shift)

CASES = [(s, k) for s in shift.SHIFTS for k in shift.STRENGTHS]
SAME_SIZE_GRADED = ["jpeg", "downscale", "blur", "darker", "brighter", "warm", "cool"]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 150 x 200 'specimen': smooth colour blobs, sharp edges and fine texture."""
    rng = np.random.default_rng(0)
    blobs = Image.fromarray(rng.integers(40, 220, (4, 5, 3), dtype=np.uint8))
    arr = np.asarray(blobs.resize((200, 150), Image.Resampling.BICUBIC)).astype(int)
    arr[50:100, 70:130] = (200, 170, 50)
    arr += rng.integers(-20, 20, arr.shape)
    return np.clip(arr, 0, 255).astype(np.uint8)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


@pytest.mark.parametrize("name,strength", CASES)
def test_shift_is_a_deterministic_change(photo, name, strength):
    out = shift.apply_shift(photo, name, strength, "abc")
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert min(out.shape[:2]) >= 40
    assert 0.1 < out.shape[0] * out.shape[1] / (150 * 200) < 2.5
    assert np.array_equal(out, shift.apply_shift(photo, name, strength, "abc"))
    assert out.shape != photo.shape or mad(out, photo) > 1.0


@pytest.mark.parametrize("name", SAME_SIZE_GRADED)
def test_strong_changes_more_than_mild(photo, name):
    mild, strong = (shift.apply_shift(photo, name, k, "abc") for k in shift.STRENGTHS)
    assert mild.shape == strong.shape == photo.shape
    assert mad(mild, photo) < mad(strong, photo)


def test_geometric_shifts(photo):
    assert shift.apply_shift(photo, "crop", "mild", "k").shape == (90, 120, 3)
    assert shift.apply_shift(photo, "crop", "strong", "k").shape == (60, 80, 3)
    turns = {shift.apply_shift(photo, "rotate", "mild", str(i)).shape for i in range(12)}
    assert turns == {(150, 200, 3), (200, 150, 3)}  # quarter turns only, seeded per photo
    tilted = shift.apply_shift(photo, "rotate", "strong", "k")
    assert tilted.shape[0] > 150 and tilted.shape[1] > 150  # canvas grown to hold the photo
    assert not np.array_equal(shift.apply_shift(photo, "background", "strong", "k"),
                              shift.apply_shift(photo, "background", "strong", "other"))


def test_benchmark_end_to_end(tmp_path_factory, tmp_path, monkeypatch, capsys):
    zoo = build_tiny_zoo(tmp_path_factory)
    use_zoo(monkeypatch, zoo)
    out = tmp_path / "shift.json"
    examples = tmp_path / "examples"
    assert shift.main(["tiny", "duo", "--photos", "1", "--shifts", "jpeg,rotate,background",
                       "--json", str(out), "--save-examples", str(examples), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "test" and result["photos"] == 3  # one per class
    assert result["shifts"] == ["jpeg", "rotate", "background"]
    for name in ("tiny", "duo"):
        entry = result["entries"][name]
        assert set(entry["clean"]) == set(shift.METRICS) and "stored_accuracy" in entry
        assert set(entry["shifts"]["rotate"]) == {"mild", "strong"}
        assert set(entry["mean"]) == {"mild", "strong", "all"}
        assert 0 <= entry["mean"]["all"]["accuracy"] <= 1
    assert result["entries"]["duo"]["kind"] == "ensemble"
    assert len(list(examples.glob("*.png"))) == 1 + 3 * 2
    assert "mean all" in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path_factory, monkeypatch, capsys):
    use_zoo(monkeypatch, build_tiny_zoo(tmp_path_factory))
    with pytest.raises(SystemExit) as exc:
        shift.main(["tiny", "--shifts", "jpeg,fog"])
    assert exc.value.code == 2 and "unknown shift fog" in capsys.readouterr().err
    with pytest.raises(ZooError, match="not a folder"):
        shift.main(["tiny", "--data", "/nonexistent-photos"])
