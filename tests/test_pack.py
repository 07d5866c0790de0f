"""Memory-mapped packs of decoded photos: fidelity, reuse, damaged files, concurrent builders."""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import pickle
from pathlib import Path

import numpy as np
import pytest

import zoo.data.cache
from tests.helpers_badfiles import textured
from zoo.data.cache import DecodeCache, decode_array
from zoo.data.pack import PackedPhotos, PackError, write_pack

SIDE = 32


@pytest.fixture
def photos(tmp_path: Path) -> tuple[list[Path], list[str]]:
    """JPEGs big enough for reduced-scale decoding (landscape, portrait), a PNG, and a copy of
    the first JPEG under another name (same content: one entry)."""
    root = tmp_path / "photos"
    root.mkdir()
    specs = [("a.jpg", (320, 240), "JPEG"), ("b.jpg", (250, 363), "JPEG"), ("c.png", (90, 60), "PNG")]
    for i, (name, size, fmt) in enumerate(specs):
        textured((90 + 40 * i, 120, 160), i, size).save(root / name, fmt, quality=92)
    (root / "copy.jpg").write_bytes((root / "a.jpg").read_bytes())
    files = sorted(root.iterdir())
    return files, [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def _arrays(pack: PackedPhotos) -> list[np.ndarray]:
    return [np.array(a) for a in pack]


def test_pack_equals_direct_decode_and_is_read_only(tmp_path: Path, photos) -> None:
    files, shas = photos
    cache = DecodeCache(tmp_path / "cache")
    pack = cache.pack(files, shas, SIDE)
    assert len(pack) == 3 and pack.shas == sorted(set(shas))
    view = pack.subset(shas)
    assert len(view) == len(files)
    for file, arr in zip(files, view):
        assert arr.dtype == np.uint8 and arr.shape[2] == 3 and not arr.flags.writeable
        np.testing.assert_array_equal(arr, decode_array(file, SIDE))  # bit-identical
    assert (cache.hits, cache.misses) == (0, 3)


def test_pack_is_a_sequence_and_pickles_by_path(tmp_path: Path, photos) -> None:
    files, shas = photos
    view = DecodeCache(tmp_path / "cache").pack(files, shas, SIDE).subset(shas[::-1])
    np.testing.assert_array_equal(view[-1], view[len(view) - 1])
    assert isinstance(view[1:3], list) and len(view[1:3]) == 2
    np.testing.assert_array_equal(view[1:3][1], view[2])
    with pytest.raises(IndexError):
        view[len(view)]
    again = pickle.loads(pickle.dumps(view))
    assert len(pickle.dumps(view)) < 1000  # the path and rows, not the pixels
    for a, b in zip(again, view):
        np.testing.assert_array_equal(a, b)


def test_pack_is_reused_without_decoding(tmp_path: Path, photos) -> None:
    files, shas = photos
    first = _arrays(DecodeCache(tmp_path / "cache").pack(files, shas, SIDE))
    for entry in (tmp_path / "cache").rglob("*.npy"):
        entry.unlink()  # the pack alone serves a later run
    for file in files:
        file.unlink()
    again = DecodeCache(tmp_path / "cache")
    pack = again.pack(files[::-1], shas[::-1], SIDE)  # any order: the same set of photos
    assert (again.hits, again.misses, again.notes) == (3, 0, [])
    for a, b in zip(_arrays(pack), first):
        np.testing.assert_array_equal(a, b)


def test_other_photos_or_size_get_their_own_pack(tmp_path: Path, photos) -> None:
    files, shas = photos
    cache = DecodeCache(tmp_path / "cache")
    paths = {cache.pack_path(shas, SIDE), cache.pack_path(shas[:2], SIDE), cache.pack_path(shas, 2 * SIDE)}
    assert len(paths) == 3
    cache.pack(files, shas, SIDE)
    small = cache.pack(files[:2], shas[:2], SIDE)  # entries are reused: nothing decoded again
    assert (cache.hits, cache.misses) == (len(set(shas[:2])), 3)
    assert min(cache.pack(files, shas, 2 * SIDE)[0].shape[:2]) == 2 * SIDE
    np.testing.assert_array_equal(small.subset(shas[:1])[0], decode_array(files[0], SIDE))


def _damage(path: Path, kind: str) -> None:
    data = path.read_bytes()
    fakes = {"truncated": data[:-7], "header only": data[:100], "empty": b"",
             "foreign": b"PK\x03\x04 not a pack" * 20}
    if kind in fakes:
        path.write_bytes(fakes[kind])
    elif kind == "other photos":
        write_pack(path, ["ab" * 32], [np.zeros((SIDE, SIDE, 3), np.uint8)], SIDE,
                   zoo.data.cache.DECODER_VERSION)
    else:  # another decoder version under this name
        write_pack(path, [], [], SIDE, zoo.data.cache.DECODER_VERSION + 1)


@pytest.mark.parametrize("kind, says", [
    ("truncated", "truncated"), ("header only", "truncated"), ("empty", "empty"),
    ("foreign", "not a pack file"), ("other photos", "other photos"), ("decoder", "decoder")])
def test_damaged_or_foreign_pack_is_refused_and_rebuilt(tmp_path: Path, photos, kind: str,
                                                        says: str) -> None:
    files, shas = photos
    good = _arrays(DecodeCache(tmp_path / "cache").pack(files, shas, SIDE))
    path = DecodeCache(tmp_path / "cache").pack_path(shas, SIDE)
    _damage(path, kind)
    cache = DecodeCache(tmp_path / "cache")
    rebuilt = cache.pack(files, shas, SIDE)
    assert len(cache.notes) == 1 and says in cache.notes[0] and "rebuilt" in cache.notes[0]
    assert str(path) in cache.notes[0]
    assert cache.hits == 3  # rebuilt from the per-photo entries, no decoding
    for a, b in zip(_arrays(rebuilt), good):
        np.testing.assert_array_equal(a, b)
    PackedPhotos(path, SIDE, zoo.data.cache.DECODER_VERSION)  # whole again


def test_damaged_file_message_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "x.pack"
    write_pack(path, ["cd" * 32], [np.ones((SIDE, SIDE + 3, 3), np.uint8)], SIDE, 7)
    assert PackedPhotos(path, SIDE, 7)[0].shape == (SIDE, SIDE + 3, 3)
    with pytest.raises(PackError, match="side 32, not 1, 7, 64"):
        PackedPhotos(path, 2 * SIDE, 7)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(PackError, match=r"truncated or damaged \(3,435 bytes, the header describes 3,436\)"):
        PackedPhotos(path, SIDE, 7)


def test_hashes_with_zero_bytes_round_trip(tmp_path: Path) -> None:
    shas = ["00" * 32, "ab" * 31 + "00", "00" + "cd" * 31]
    write_pack(tmp_path / "z.pack", shas, [np.zeros((SIDE, SIDE, 3), np.uint8)] * 3, SIDE, 1)
    assert PackedPhotos(tmp_path / "z.pack", SIDE, 1).shas == shas


def _fill(root: Path, files: list[Path], shas: list[str], start, out) -> None:
    start.wait()
    pack = DecodeCache(root).pack(files, shas, SIDE)
    out.put(hashlib.sha256(b"".join(a.tobytes() for a in pack)).hexdigest())


def test_two_processes_filling_one_pack_at_once(tmp_path: Path, photos) -> None:
    files, shas = photos
    ctx = mp.get_context("fork")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(tmp_path / "cache", files, shas, start, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    digests = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    direct = b"".join(decode_array(f, SIDE).tobytes() for _, f in sorted(zip(shas[1:], files[1:])))
    assert digests == [hashlib.sha256(direct).hexdigest()] * 2
    cache = DecodeCache(tmp_path / "cache")
    cache.pack(files, shas, SIDE)
    assert (cache.misses, cache.notes) == (0, [])
    assert not list(cache.root.rglob("*.tmp"))  # no temporary file left behind
