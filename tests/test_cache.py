"""Decode cache: hits and misses, invalidation, damaged entries, fidelity, location, `zoo cache clear`."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from zoo.data.cache import Cleared, DecodeCache, cache_root, decode_array
from zoo.data.imaging import load_image, resize_short_side

SIDE = 32


def _smooth_photo(w: int, h: int, seed: int) -> Image.Image:
    """Low-frequency colour gradients: JPEG-friendly, like a real photo at this scale."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    chans = [127 + 100 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + c)
             for c in range(3)]
    return Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8))


def _textured_photo(w: int, h: int, seed: int) -> Image.Image:
    """Mid-frequency stripes (periods 3-30 px): detail that a reduced-scale decode could blur."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.full((h, w, 3), 128.0)
    for _ in range(12):
        period, angle, channel = rng.uniform(3, 30), rng.uniform(0, np.pi), rng.integers(0, 3)
        out[..., channel] += 20 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle))
                                         / period + rng.uniform(0, 6))
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))


def _write(path: Path, img: Image.Image, **save) -> tuple[Path, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **save)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def photos(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """JPEGs large enough for Pillow's reduced-scale (draft) decoding, one of them with
    dimensions whose rounding differs after drafting, a PNG, and a rotated JPEG (EXIF 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    return {
        "jpeg": _write(tmp_path / "photos" / "a.jpg", _smooth_photo(320, 240, 0), quality=95),
        "textured": _write(tmp_path / "photos" / "t.jpg", _textured_photo(363, 250, 3), quality=95),
        "png": _write(tmp_path / "photos" / "b.png", _smooth_photo(90, 60, 1)),
        "rotated": _write(tmp_path / "photos" / "c.jpg", _smooth_photo(363, 250, 2), quality=95,
                          exif=exif),
    }


@pytest.fixture
def cache(tmp_path: Path) -> DecodeCache:
    return DecodeCache(tmp_path / "cache")


def test_first_get_misses_then_hits_and_persists(cache: DecodeCache, photos) -> None:
    file, sha = photos["jpeg"]
    first = cache.get(file, sha, SIDE)
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.path(sha, SIDE).is_file()
    second = cache.get(file, sha, SIDE)
    assert (cache.hits, cache.misses) == (1, 1)
    np.testing.assert_array_equal(first, second)

    again = DecodeCache(cache.root)  # a new process on the same cache
    np.testing.assert_array_equal(again.get(file, sha, SIDE), first)
    assert (again.hits, again.misses) == (1, 0)


def test_each_size_is_its_own_entry(cache: DecodeCache, photos) -> None:
    file, sha = photos["png"]
    small, large = cache.get(file, sha, SIDE), cache.get(file, sha, 2 * SIDE)
    assert cache.misses == 2
    assert min(small.shape[:2]) == SIDE and min(large.shape[:2]) == 2 * SIDE


@pytest.mark.parametrize("kind", ["jpeg", "textured", "png", "rotated"])
def test_cached_array_equals_direct_decode(cache: DecodeCache, photos, kind: str) -> None:
    file, sha = photos[kind]
    cache.get(file, sha, SIDE)
    cached = DecodeCache(cache.root).get(file, sha, SIDE)  # read back from disk
    direct = decode_array(file, SIDE)
    assert cached.dtype == np.uint8 and cached.ndim == 3 and cached.shape[2] == 3
    assert cached.flags.c_contiguous
    np.testing.assert_array_equal(cached, direct)


def test_shape_keeps_aspect_and_exif_orientation(cache: DecodeCache, photos) -> None:
    jpeg = cache.get(*photos["jpeg"], SIDE)
    assert jpeg.shape == (SIDE, round(320 * SIDE / 240), 3)  # landscape stays landscape
    rotated = cache.get(*photos["rotated"], SIDE)
    assert rotated.shape == (round(363 * SIDE / 250), SIDE, 3)  # 363x250 stored, shown portrait


@pytest.mark.parametrize("kind, max_mean_diff", [
    ("jpeg", 2.0), ("textured", 2.0), ("rotated", 2.0), ("png", 0.0)])
def test_close_to_full_resolution_decode(cache: DecodeCache, photos, kind: str,
                                         max_mean_diff: float) -> None:
    """JPEG is decoded at reduced scale (draft) before resizing: same shape as a full decode
    (what `zoo predict` sees), pixels within a few grey levels."""
    file, sha = photos[kind]
    cached = cache.get(file, sha, SIDE).astype(np.float64)
    full = np.asarray(resize_short_side(load_image(file), SIDE), dtype=np.float64)
    assert cached.shape == full.shape
    assert np.abs(cached - full).mean() <= max_mean_diff


def test_decode_from_bytes_equals_decode_from_file(photos) -> None:
    file, _ = photos["textured"]
    np.testing.assert_array_equal(decode_array(file.read_bytes(), SIDE), decode_array(file, SIDE))


def test_changed_file_is_a_new_entry(cache: DecodeCache, photos) -> None:
    file, old_sha = photos["png"]
    old = cache.get(file, old_sha, SIDE)
    _smooth_photo(90, 60, 99).save(file)
    new_sha = hashlib.sha256(file.read_bytes()).hexdigest()
    assert new_sha != old_sha
    new = cache.get(file, new_sha, SIDE)
    assert (cache.hits, cache.misses) == (0, 2)
    assert not np.array_equal(old, new)
    np.testing.assert_array_equal(new, decode_array(file, SIDE))


@pytest.mark.parametrize("damage", [
    lambda b: b"",
    lambda b: b[: len(b) // 2],
    lambda b: b"not a numpy file" * 8,
    lambda b: _npy(np.zeros((5, 5, 3), np.uint8)),
    lambda b: _npy(np.zeros((SIDE, 40), np.float32)),
], ids=["empty", "truncated", "foreign", "wrong-size", "wrong-dtype-and-shape"])
def test_damaged_entry_is_decoded_again(cache: DecodeCache, photos, damage) -> None:
    file, sha = photos["jpeg"]
    good = cache.get(file, sha, SIDE)
    entry = cache.path(sha, SIDE)
    entry.write_bytes(damage(entry.read_bytes()))
    fresh = DecodeCache(cache.root)
    np.testing.assert_array_equal(fresh.get(file, sha, SIDE), good)
    assert (fresh.hits, fresh.misses) == (0, 1)
    fresh.get(file, sha, SIDE)  # the entry was repaired
    assert fresh.hits == 1


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_entries_of_another_decoder_version_are_not_used(cache: DecodeCache, photos,
                                                         monkeypatch) -> None:
    import zoo.data.cache

    file, sha = photos["jpeg"]
    cache.get(file, sha, SIDE)
    monkeypatch.setattr(zoo.data.cache, "DECODER_VERSION", zoo.data.cache.DECODER_VERSION + 1)
    newer = DecodeCache(cache.root)
    newer.get(file, sha, SIDE)
    assert (newer.hits, newer.misses) == (0, 1)


def test_get_many_keeps_order_and_counts(cache: DecodeCache, photos) -> None:
    files, shas = zip(*photos.values())
    done = []
    arrays = cache.get_many(list(files), list(shas), SIDE, on_done=lambda: done.append(1))
    assert len(done) == 4 and cache.misses == 4
    for arr, file in zip(arrays, files):
        np.testing.assert_array_equal(arr, decode_array(file, SIDE))
    cache.get_many(list(files) * 4, list(shas) * 4, SIDE, workers=4)
    assert (cache.hits, cache.misses) == (16, 4)


def test_clear_removes_entries_and_reports_bytes(cache: DecodeCache, photos) -> None:
    assert cache.clear() == Cleared()  # nothing cached yet
    for file, sha in photos.values():
        cache.get(file, sha, SIDE)
    on_disk = sum(f.stat().st_size for f in cache.root.rglob("*.npy"))
    assert cache.clear() == Cleared(4, on_disk, []) and on_disk > 0
    assert not cache.root.exists()
    cache.get(*photos["png"], SIDE)
    assert cache.misses == 5


def test_clear_leaves_files_that_are_not_entries(tmp_path: Path, photos, monkeypatch) -> None:
    """A user's files in the cache folder (or a folder named as the cache by mistake) stay."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "cache"))
    cache = DecodeCache()
    cache.get(*photos["jpeg"], SIDE)
    entry = cache.path(photos["jpeg"][1], SIDE)
    leftover = entry.parent / f".{entry.name}.k2j_x9.tmp"  # what an interrupted write leaves
    leftover.write_bytes(b"x" * 1000)
    mine = [cache.root / "notes.txt", entry.parent / "holiday.npy", entry.parents[2] / "README"]
    for path in mine:
        path.write_text("keep me")
    (cache.root / "link.npy").symlink_to(entry)
    from zoo.cli import app

    result = CliRunner().invoke(app, ["cache", "clear"], env={"COLUMNS": "1000"})
    assert result.exit_code == 0, result.output
    assert not entry.exists() and not leftover.exists()
    said = " ".join(result.output.split())
    assert "(2 cache entries)" in said and "freed 0.0 MB" not in said and " kB " in said
    assert "left 4 file(s) there that are not cache entries" in said
    for path in mine:
        assert path.read_text() == "keep me" and f"{path}: not deleted" in said
    assert (cache.root / "link.npy").is_symlink()


def test_default_location_is_under_zoo_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_CACHE_DIR", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache"
    assert DecodeCache().root == tmp_path / "home" / ".cache" / "decoded"
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert DecodeCache().root == tmp_path / "elsewhere" / "decoded"


def test_cli_cache_clear(tmp_path: Path, monkeypatch, photos) -> None:
    from zoo.cli import app

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ZOO_CACHE_DIR", raising=False)
    run_meta = tmp_path / "home" / "custom_cnn-1" / "meta.json"
    run_meta.parent.mkdir(parents=True)
    run_meta.write_text("{}")
    cache = DecodeCache()
    for file, sha in photos.values():
        cache.get(file, sha, SIDE)
    assert len(list(cache.root.rglob("*.npy"))) == 4
    result = CliRunner().invoke(app, ["cache", "clear"])
    assert result.exit_code == 0, result.output
    assert "freed" in result.output
    assert not cache.root.exists()
    assert run_meta.is_file()  # only the cache goes, never the runs
    again = DecodeCache()
    again.get(*photos["png"], SIDE)
    assert (again.hits, again.misses) == (0, 1)


def test_clear_removes_packs_too(cache: DecodeCache, photos) -> None:
    files, shas = zip(*photos.values())
    pack = cache.pack(list(files), list(shas), SIDE)
    assert pack.path.exists()
    cleared = cache.clear()
    assert not pack.path.exists() and not cleared.kept
    assert cleared.entries == len(photos) + 1  # every entry and the pack
