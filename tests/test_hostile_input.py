"""What an attacker or a careless user sends the CLI: photos that explode once resized, files
that must not be read (pipes, devices, sparse giants), names that look like markup or carry
terminal escapes, and a whole filesystem given as a dataset. Each ends in a clear message and
the right exit code, never a hang, a traceback or a half-made run."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_eval import COLOURS, TINY, invoke, private_copy, write_photos

from tests.helpers_badfiles import png_chunks

ESC_NAME = "\x1b[31mred\x07.png"  # an ANSI colour sequence and a bell in a file name


@pytest.fixture
def zoo_copy(tmp_path_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no table cell folded across lines
    return private_copy(tmp_path_factory, tmp_path, monkeypatch)


def _thin_png() -> bytes:
    """475 bytes that become 14.6 million pixels a row once resized for the model."""
    return png_chunks(100_000, 1, 8, 0, b"\x00" + b"\x80" * 100_000)


def _specials(folder: Path) -> dict[str, str]:
    """Files named like photos that must be refused unread, each with its reason."""
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "huge.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    try:
        os.truncate(folder / "huge.jpg", 20 * 2**30)
    except OSError as exc:
        pytest.skip(f"no sparse files here: {exc}")
    (folder / "thin.png").write_bytes(_thin_png())
    return {"fifo.jpg": "not a regular file (a pipe)", "zero.jpg": "not a regular file (a device)",
            "huge.jpg": "over the 268,435,456-byte limit", "thin.png": "longer than 20:1"}


def test_predict_lists_hostile_files_and_predicts_the_rest(zoo_copy, tmp_path):
    """In a separate process with a timeout: opening the FIFO or reading /dev/zero would hang."""
    reasons = _specials(tmp_path / "inbox")
    good = sorted(zoo_copy.data.rglob("*.png"))[0]
    args = [str(tmp_path / "inbox" / name) for name in reasons] + [str(good)]
    start = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "zoo", "predict", "tiny", *args, "--format", "csv"],
                         capture_output=True, text=True, timeout=120, env=os.environ,
                         cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - start < 60
    assert "Traceback" not in run.stderr and f"{len(reasons)} file(s) not predicted" in run.stderr
    for name, reason in reasons.items():
        assert f"{name}: " in run.stderr and reason in " ".join(run.stderr.split())
    rows = list(csv.reader(io.StringIO(run.stdout)))
    assert [r[0] for r in rows[1:]] == [str(good)]


def test_evaluate_lists_hostile_files(zoo_copy, tmp_path):
    folder = tmp_path / "museum"
    write_photos(folder, COLOURS, 2, seed=7)
    reasons = _specials(folder / "azurite")
    res = invoke(["evaluate", "tiny", "--data", str(folder), "--format", "json"])
    assert res.exit_code == 0, res.said
    unreadable = dict(json.loads(res.stdout)["unreadable"])
    for name, reason in reasons.items():
        assert reason in unreadable[f"azurite/{name}"]


def _markup_names(folder: Path, src: list[Path]) -> None:
    """Names that rich would read as markup, and one with terminal escapes."""
    (folder / "p[").mkdir(parents=True)
    (folder / "p[" / "]a.jpg").write_bytes(src[0].read_bytes())
    (folder / "p[" / ESC_NAME).write_bytes(src[1].read_bytes())
    (folder / "p[" / "[bold]notes.jpg").write_text("not a photo")


def _assert_shown_safely(output: str) -> None:
    assert "\x1b[31m" not in output and "\x07" not in output
    assert "\\x1b[31mred\\x07.png" in output
    assert "Traceback" not in output and "MarkupError" not in output


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_predict_shows_names_as_they_are(zoo_copy, tmp_path, fmt):
    _markup_names(tmp_path / "inbox", sorted(zoo_copy.data.rglob("*.png")))
    res = invoke(["predict", "tiny", str(tmp_path / "inbox" / "p["), "--format", fmt])
    assert res.exit_code == 0, res.said
    said = res.stdout + res.stderr
    assert "p[/[bold]notes.jpg: not an image" in " ".join(said.split())
    if fmt == "json":  # JSON escapes control characters itself, and keeps the real name
        assert "\x1b" not in said and "\\u001b[31mred\\u0007.png" in said and "p[/]a.jpg" in said
    else:
        _assert_shown_safely(said)
        assert "p[/]a.jpg" in said


def test_training_on_markup_and_escape_names(zoo_copy, tmp_path, monkeypatch):
    data = tmp_path / "marked"
    write_photos(data, {**COLOURS, "cls[": (120, 120, 120)}, 4, seed=3)
    for i, png in enumerate(sorted((data / "cls[").iterdir())):
        png.rename(data / "cls[" / f"]x{i}.jpg")
    (data / "cls[" / "]bad.jpg").write_text("not a photo")
    (data / "azurite" / ESC_NAME).write_text("not a photo either")
    monkeypatch.setenv("ZOO_DATA", str(data))
    monkeypatch.setenv("ZOO_SPLITS_DIR", str(tmp_path / "splits"))
    res = invoke(["train", "custom_cnn", "--name", "marked", *[a for a in TINY if a != "--quiet"]])
    assert res.exit_code == 0, res.said
    _assert_shown_safely(res.stdout + res.stderr)
    assert "cls[/]bad.jpg: not an image" in res.said
    check = invoke(["data", "check"])
    assert check.exit_code == 0 and "cls[" in check.stdout
    _assert_shown_safely(check.stdout)
    runs = sorted(p.name for p in zoo_copy.home.iterdir() if p.is_dir())
    assert runs == ["duo", "marked", "tiny", "tiny2"]  # no orphan run folder


def test_error_messages_show_names_as_they_are(zoo_copy, tmp_path):
    res = invoke(["evaluate", "tiny", "--data", str(tmp_path / "[red]gone\x1b[2J")])
    assert res.exit_code == 2
    assert "[red]gone\\x1b[2J" in res.said and "\x1b" not in res.said


def test_evaluate_on_the_whole_filesystem_is_refused_at_once(zoo_copy):
    start = time.monotonic()
    res = invoke(["evaluate", "tiny", "--data", "/"])
    assert res.exit_code == 2 and "is a class of this model" in res.said
    assert time.monotonic() - start < 5


def test_a_folder_too_deep_or_too_big_is_refused_before_scanning(zoo_copy, tmp_path, monkeypatch):
    import zoo.data.dataset as dataset

    deep = tmp_path / "deep"
    write_photos(deep, COLOURS, 3)
    nested = deep / "azurite" / Path(*"abcdefghij")
    nested.mkdir(parents=True)
    (nested / "x.png").write_bytes(_thin_png())
    res = invoke(["data", "check", "--data", str(deep)])
    assert res.exit_code == 2 and "more than 8 folders deep" in res.said
    museum = tmp_path / "museum"
    write_photos(museum, COLOURS, 2)
    monkeypatch.setattr(dataset, "MAX_FILES", 5)
    for args in (["data", "check", "--data", str(museum)], ["predict", "tiny", str(museum)],
                 ["evaluate", "tiny", "--data", str(museum)]):
        res = invoke(args)
        assert res.exit_code == 2 and "More than 5 files in" in res.said, args
