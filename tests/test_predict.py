"""`zoo predict`: files and folders, top-k, table / csv / json, unreadable files, exit codes."""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from helpers_eval import invoke, private_copy

from zoo.data.imaging import load_image
from zoo.evaluate.predictor import load_predictor


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


@pytest.fixture
def photos(zoo_copy, tmp_path):
    """Two photos in nested folders, a hidden file, an unreadable file, and a loose photo."""
    folder = tmp_path / "inbox"
    (folder / "trip" / "day2").mkdir(parents=True)
    src = sorted(zoo_copy.data.rglob("*.png"))
    (folder / "trip" / "a.png").write_bytes(src[0].read_bytes())
    (folder / "trip" / "day2" / "b.png").write_bytes(src[7].read_bytes())
    (folder / ".hidden.png").write_bytes(src[1].read_bytes())
    (folder / "trip" / "notes.txt").write_text("not a photo")
    loose = tmp_path / "c.png"
    loose.write_bytes(src[13].read_bytes())
    return folder, loose


def expected(run: str, paths, tta: bool = False) -> np.ndarray:
    return load_predictor(run).predict_proba([load_image(p) for p in paths], tta=tta)


def test_csv_lists_every_readable_photo_with_top_k(photos):
    folder, loose = photos
    res = invoke(["predict", "tiny", str(folder), str(loose), "--format", "csv"])
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "path,top1,prob1,top2,prob2,top3,prob3,status,confidence,ood_score,candidates"
    rows = list(csv.reader(io.StringIO(res.stdout)))[1:]
    want = [folder / "trip" / "a.png", folder / "trip" / "day2" / "b.png", loose]
    assert [r[0] for r in rows] == [str(p) for p in want]
    probs = expected("tiny", want)
    classes = load_predictor("tiny").classes
    for row, p in zip(rows, probs):
        assert row[1] == classes[int(p.argmax())]
        got = {row[i]: float(row[i + 1]) for i in (1, 3, 5)}
        assert got == pytest.approx({c: float(p[j]) for j, c in enumerate(classes)}, abs=1e-6)
        assert float(row[2]) >= float(row[4]) >= float(row[6])
    assert "notes.txt: not an image Pillow can read" in res.stderr
    assert ".hidden" not in res.stdout + res.stderr


def test_json_top_k_and_tta_for_an_ensemble(photos):
    folder, _ = photos
    target = folder / "trip" / "a.png"
    res = invoke(["predict", "duo", str(target), "--format", "json", "--top-k", "2", "--tta"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out) == 1 and out[0]["path"] == str(target)
    preds = out[0]["predictions"]
    assert len(preds) == 2 and preds[0]["probability"] >= preds[1]["probability"]
    p = expected("duo", [target], tta=True)[0]
    assert preds[0]["probability"] == pytest.approx(float(p.max()), abs=1e-6)
    assert preds[0]["class"] == load_predictor("duo").classes[int(p.argmax())]


def test_table_lists_unreadable_files_with_reason(photos, tmp_path):
    folder, _ = photos
    res = invoke(["predict", "tiny", str(folder), str(tmp_path / "gone.jpg")])
    assert res.exit_code == 0, res.stderr
    assert "a.png" in res.stdout and "b.png" in res.stdout
    assert "notes.txt: not an image Pillow can read" in res.stdout
    assert "gone.jpg: file not found" in res.stdout


def test_no_readable_photo_is_an_error(photos, tmp_path):
    folder, _ = photos
    res = invoke(["predict", "tiny", str(folder / "trip" / "notes.txt"), "--format", "csv"])
    assert res.exit_code != 0
    assert res.stdout == ""
    assert "notes.txt: not an image Pillow can read" in res.stderr
    assert "nothing was predicted" in res.said


def test_unknown_format_and_run_are_clear_errors(photos):
    folder, _ = photos
    bad = invoke(["predict", "tiny", str(folder), "--format", "xml"])
    assert bad.exit_code == 2 and "table, csv, json" in bad.said
    missing = invoke(["predict", "tinny", str(folder)])
    assert missing.exit_code == 2 and "Did you mean: tiny" in missing.said
