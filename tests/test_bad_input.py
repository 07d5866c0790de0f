"""Every awkward file a photo folder can hold: what scan_dataset, load_image and `zoo data check`
make of it (decoded with the right pixels and orientation, or skipped with a reason)."""
from __future__ import annotations

import io
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers_badfiles import Case, bomb_png, encode, textured, write_bad_dataset
from zoo.cli import app
from zoo.data.dataset import DatasetIndex, scan_dataset
from zoo.data.imaging import MAX_PIXELS, load_image
from zoo.data.splits import MIN_PER_CLASS, make_split
from zoo.errors import UnreadableImageError, ZooError


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case], DatasetIndex]:
    root = tmp_path_factory.mktemp("bad") / "photos"
    root.mkdir()
    cases = write_bad_dataset(root)
    return root, cases, scan_dataset(root)


def _ids(outcome: str) -> list[str]:
    """Case paths of one outcome, from a throwaway copy (parametrize needs them at collection)."""
    with tempfile.TemporaryDirectory() as tmp:
        return [c.path for c in write_bad_dataset(Path(tmp)) if c.outcome == outcome]


def _case(cases: list[Case], path: str) -> Case:
    return next(c for c in cases if c.path == path)


@pytest.mark.parametrize("path", _ids("read"))
def test_readable_file_is_indexed_with_right_content(bad, path):
    root, cases, index = bad
    case = _case(cases, path)
    item = next((it for it in index.items if it.path == path), None)
    assert item is not None, f"{path} should be readable; skipped as {dict(index.skipped).get(path)}"
    assert item.label == path.split("/")[0]
    for source in (root / path, (root / path).read_bytes()):
        img = load_image(source)
        assert img.mode == "RGB"
        assert case.check(np.asarray(img)), f"{path}: wrong pixels or orientation"


@pytest.mark.parametrize("path", _ids("skip"))
def test_unreadable_file_is_skipped_with_reason(bad, path):
    _, cases, index = bad
    reasons = dict(index.skipped)
    assert path in reasons, f"{path} should be listed as skipped"
    assert _case(cases, path).reason in reasons[path]
    assert path not in {it.path for it in index.items}


@pytest.mark.parametrize("path", _ids("hidden"))
def test_hidden_files_are_ignored(bad, path):
    _, _, index = bad
    assert path not in dict(index.skipped)
    assert path not in {it.path for it in index.items}


def test_classes_are_folders_with_readable_images(bad):
    _, _, index = bad
    assert index.classes == ["pyrite", "quartz", "rose quartz", "single"]
    assert index.counts()["single"] == 1


@pytest.mark.parametrize("name", ["zero_bytes.jpg", "truncated.jpg", "notes.jpg", "bomb.png", "pipe.jpg",
                                  "broken link.jpg"])
def test_load_image_raises_unreadable_with_reason(bad, name):
    root, cases, _ = bad
    with pytest.raises(UnreadableImageError) as info:
        load_image(root / "quartz" / name)
    assert str(root / "quartz" / name) in str(info.value)


def test_exif_orientation_6_turns_landscape_into_portrait():
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)  # red on the stored left = the top once rotated 90 deg clockwise
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    shown = np.asarray(load_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif)))
    assert shown.shape == (40, 20, 3)
    assert shown[5, 10, 0] > 200 and shown[5, 10, 2] < 60
    assert shown[35, 10, 2] > 200 and shown[35, 10, 0] < 60


def test_decompression_bomb_is_refused_before_decoding():
    data = bomb_png(30_000, 30_000)  # 2.7 GB of pixels declared in ~100 bytes
    assert len(data) < 200 and Image.MAX_IMAGE_PIXELS == MAX_PIXELS
    with pytest.raises(Image.DecompressionBombError):  # Pillow's own limit holds
        Image.open(io.BytesIO(data))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(UnreadableImageError, match="decompression bomb"):
        load_image(data)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 200_000  # KiB


def test_class_with_too_few_photos_names_class_and_minimum(bad):
    _, _, index = bad
    with pytest.raises(ZooError) as info:
        make_split(index)
    message = str(info.value)
    assert "single (1)" in message and f"at least {MIN_PER_CLASS}" in message
    assert "quartz" not in message


def test_near_duplicate_copies_count_once(tmp_path):
    for cls in ("a", "b"):
        for i in range(3):
            (tmp_path / cls).mkdir(exist_ok=True)
            textured((90, 90, 90), seed=100 * ord(cls) + i).save(tmp_path / cls / f"{i}.png")
    for i in range(3):  # class c: three copies of one photo
        shutil.copy(tmp_path / "a" / "0.png", tmp_path / "a" / f"copy{i}.png")
        (tmp_path / "c").mkdir(exist_ok=True)
        textured((10, 200, 10), seed=77).save(tmp_path / "c" / f"{i}.png")
    with pytest.raises(ZooError, match=r"class c \(3, only 1 distinct\)"):
        make_split(scan_dataset(tmp_path))


def test_one_readable_class_is_refused(tmp_path):
    (tmp_path / "quartz").mkdir()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("not a photo")
    for i in range(4):
        textured((200, 40, 40), seed=i).save(tmp_path / "quartz" / f"{i}.png")
    with pytest.raises(ZooError, match="at least 2"):
        make_split(scan_dataset(tmp_path))


def test_no_class_folders_is_refused(tmp_path):
    textured((200, 40, 40), seed=1).save(tmp_path / "loose.png")
    with pytest.raises(ZooError, match="No class folders"):
        scan_dataset(tmp_path)


def _data_check(root: Path, tmp_path: Path) -> tuple[int, str]:
    env = {"ZOO_HOME": str(tmp_path / "runs"), "ZOO_SPLITS_DIR": str(tmp_path / "splits"), "COLUMNS": "1000"}
    result = CliRunner().invoke(app, ["data", "check", "--data", str(root)], env=env)
    return result.exit_code, " ".join(result.output.split())


def test_data_check_reports_skipped_files_and_split(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    cases = write_bad_dataset(root, single_class=False)
    code, output = _data_check(root, tmp_path)
    assert code == 0, output
    assert "split " in output and "Traceback" not in output
    skipped = [c for c in cases if c.outcome == "skip"]
    assert f"{len(skipped)} file(s) skipped" in output
    for case in skipped:
        assert f"{case.path}: " in output and case.reason in output
    for case in cases:
        if case.outcome == "hidden":
            assert case.path not in output


def test_data_check_too_few_photos_is_a_clear_error(bad, tmp_path):
    root, _, _ = bad
    code, output = _data_check(root, tmp_path)
    assert code == 2
    assert "single (1)" in output and f"at least {MIN_PER_CLASS}" in output
    assert "quartz/notes.jpg: not an image" in output  # the report still comes first
    assert "Traceback" not in output
    assert not (tmp_path / "splits").exists()


def test_data_check_keeps_brackets_in_names(tmp_path):
    for i in range(3):
        for cls in ("quartz [var. smoky]", "pyrite"):
            (tmp_path / "photos" / cls).mkdir(parents=True, exist_ok=True)
            textured((90, 90, 90), seed=i + 10 * len(cls)).save(tmp_path / "photos" / cls / f"[{i}].png")
    (tmp_path / "photos" / "pyrite" / "[bad].jpg").write_text("text")
    code, output = _data_check(tmp_path / "photos", tmp_path)
    assert code == 0 and "quartz [var. smoky]" in output and "pyrite/[bad].jpg: not an image" in output


def test_error_message_keeps_brackets_in_class_names(tmp_path):
    for cls, n in (("beryl [var. emerald]", 1), ("pyrite", 3), ("quartz", 3)):
        (tmp_path / "photos" / cls).mkdir(parents=True)
        for i in range(n):
            textured((90, 90, 90), seed=i + 10 * len(cls)).save(tmp_path / "photos" / cls / f"{i}.png")
    code, output = _data_check(tmp_path / "photos", tmp_path)
    assert code == 2 and "beryl [var. emerald] (1)" in output
