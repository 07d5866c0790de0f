"""Every awkward file a photo folder can hold: what scan_dataset, load_image and `zoo data check`
make of it (decoded with the right pixels and orientation, or skipped with a reason)."""
from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers_badfiles import (
    RED,
    Case,
    bomb_png,
    encode,
    png_chunks,
    textured,
    write_bad_dataset,
)
from zoo.cli import app
from zoo.data.cache import decode_array
from zoo.data.dataset import DatasetIndex, scan_dataset
from zoo.data.imaging import (
    MAX_ASPECT,
    MAX_FILE_BYTES,
    MAX_PIXELS,
    load_image,
    read_photo,
    short_side_size,
)
from zoo.data.splits import MIN_PER_CLASS, make_split
from zoo.errors import UnreadableImageError, UnsafeFileError, ZooError
from zoo.fileio import read_bytes


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


# ---- photos that explode once decoded or resized ------------------------------------------
def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


@pytest.mark.parametrize("width, height", [(100_000, 1), (1, 100_000), (2_100, 100)])
def test_extreme_aspect_ratio_is_refused_before_decoding(width, height):
    """475 bytes of 1 x 100,000 PNG would be 146 x 14.6 million pixels at the model's size."""
    data = png_chunks(width, height, 8, 0, (b"\x00" + b"\x80" * width) * height)
    peak, start = _peak_kib(), time.perf_counter()
    for decode in (lambda: load_image(data), lambda: decode_array(data, 146)):
        with pytest.raises(UnreadableImageError, match=f"longer than {MAX_ASPECT}:1"):
            decode()
    assert time.perf_counter() - start < 1.0
    assert _peak_kib() - peak < 50_000


def test_aspect_ratio_at_the_limit_is_read():
    img = load_image(encode(Image.new("RGB", (20 * 8, 8), RED), "PNG"))
    assert img.size == (160, 8)
    assert decode_array(encode(img, "PNG"), 32).shape == (32, 640, 3)


def test_resize_beyond_the_pixel_budget_is_refused():
    with pytest.raises(ZooError, match="over the 64,000,000-pixel limit"):
        short_side_size((MAX_ASPECT, 1), 2_000)
    assert short_side_size((MAX_ASPECT, 1), 146) == (MAX_ASPECT * 146, 146)


_PEAK_SCRIPT = """
import resource, sys
from tests.helpers_badfiles import png_chunks
from zoo.data.imaging import load_image
side, depth, colour_type, pixel = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
data = png_chunks(side, side, depth, colour_type, (b"\\x00" + bytes.fromhex(pixel) * side) * side)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = load_image(data)
print(img.getpixel((1, 1)), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("depth, colour_type, pixel, rgb", [
    (16, 0, "c000", (192, 192, 192)),           # 16-bit grey: keeps its top 8 bits
    (8, 6, "ff000080", (255, 127, 127)),        # half-transparent red, on white
], ids=["16-bit grey", "RGBA"])
def test_large_photo_is_converted_without_big_copies(depth, colour_type, pixel, rgb):
    """Such PNGs compress to almost nothing: converting 16-bit through float64 took 30 bytes a
    pixel (+1.6 GB for 64 megapixels), blending transparency through RGBA copies 15; both now
    stay under 12, measured in a fresh process."""
    side = 4_000
    args = [str(side), str(depth), str(colour_type), pixel]
    run = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, *args], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parent.parent)
    assert run.returncode == 0, run.stderr
    shown, grown_kib = run.stdout.rsplit(" ", 1)
    assert shown == str(rgb)
    assert int(grown_kib) * 1024 / side**2 < 12


def test_large_jpeg_is_decoded_at_reduced_scale():
    data = encode(textured(RED, 5, (4_000, 3_000)), "JPEG", quality=50)
    assert load_image(data, min_side=146).size == (500, 375)  # 1/8 scale, still >= 146
    assert load_image(data, min_side=600).size == (1_000, 750)


# ---- files that must not be read whole, or at all ------------------------------------------
def _sparse(path: Path, size: int = 20 * 2**30) -> Path:
    """A ``size``-byte file that takes no disk space (skips the test where that is impossible)."""
    path.write_bytes(b"\xff\xd8\xff\xe0")  # a JPEG's first bytes
    try:
        os.truncate(path, size)
    except OSError as exc:
        pytest.skip(f"no sparse files here: {exc}")
    return path


def test_huge_sparse_file_is_refused_without_reading(tmp_path):
    path = _sparse(tmp_path / "huge.jpg")
    start = time.perf_counter()
    for read in (read_photo, load_image):
        with pytest.raises(UnreadableImageError, match="over the 268,435,456-byte limit"):
            read(path)
    with pytest.raises(UnsafeFileError):
        read_bytes(path, MAX_FILE_BYTES)
    assert time.perf_counter() - start < 1.0


def test_a_file_growing_past_the_limit_while_read_is_refused(tmp_path):
    """/proc files say 0 bytes and can give any amount: reading stops one byte past the limit."""
    with pytest.raises(UnsafeFileError, match="over the 10-byte limit"):
        read_bytes("/proc/self/status", 10)


def _specials(folder: Path) -> dict[str, str]:
    """A FIFO and a symlink to /dev/zero named like photos, and a sparse 20 GB '.jpg'."""
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    _sparse(folder / "huge.jpg")
    return {"fifo.jpg": "not a regular file (a pipe)", "zero.jpg": "not a regular file (a device)",
            "huge.jpg": "over the 268,435,456-byte limit"}


def test_scan_skips_pipes_devices_and_huge_files_without_blocking(tmp_path):
    for cls in ("quartz", "pyrite"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            textured(RED, i + len(cls)).save(tmp_path / cls / f"{i}.png")
    expected = _specials(tmp_path / "quartz")
    with ThreadPoolExecutor(1) as pool:  # a blocking open would hang: fail instead
        index = pool.submit(scan_dataset, tmp_path).result(timeout=60)
    skipped = dict(index.skipped)
    for name, reason in expected.items():
        assert reason in skipped[f"quartz/{name}"]
    assert len(index.items) == 6
