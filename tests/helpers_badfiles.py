"""Write a dataset folder holding every awkward input a real photo collection can contain.

``write_bad_dataset(root)`` returns one :class:`Case` per file (or folder) it wrote, with what
scanning it must give: ``read`` (decoded, with a check of its RGB content), ``skip`` (listed as
unreadable with a reason containing ``reason``) or ``hidden`` (ignored: neither used nor listed).
Readable photos carry a random block texture so that no two are near-duplicates.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

SIZE = 48
RED, GREEN, BLUE, GREY = (200, 40, 40), (40, 180, 60), (40, 60, 200), (128, 128, 128)


@dataclass(frozen=True)
class Case:
    """One file of the bad dataset and what scanning it must give."""

    path: str                     # relative to the dataset root; folders end in "/"
    outcome: str                  # "read" | "skip" | "hidden"
    reason: str = ""              # for "skip": a fragment of the reason
    check: Callable[[np.ndarray], bool] | None = None  # for "read": test of the decoded RGB array


def textured(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (SIZE, SIZE)) -> Image.Image:
    """``colour`` plus +-25 random 8x8 blocks: mean stays ~colour, every seed looks different."""
    rng = np.random.default_rng(seed)
    w, h = size
    blocks = rng.integers(-25, 26, size=((h + 7) // 8, (w + 7) // 8, 1))
    noise = np.kron(blocks, np.ones((8, 8, 1), dtype=np.int64))[:h, :w]
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8), "RGB")


def mean_close(colour: tuple[int, int, int], tol: float = 14) -> Callable[[np.ndarray], bool]:
    return lambda a: bool(np.all(np.abs(a.reshape(-1, 3).mean(0) - colour) <= tol))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_chunks(width: int, height: int, depth: int, colour_type: int, raw: bytes) -> bytes:
    """A PNG written by hand: IHDR with any declared size, one IDAT holding ``raw`` (filtered rows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """~100 bytes whose header declares ``width x height`` RGB pixels (2.7 GB once decoded)."""
    return png_chunks(width, height, 8, 2, b"\x00" * 16)


def rgb16_png(colour: tuple[int, int, int], size: int = SIZE) -> bytes:
    """16 bits per channel RGB (Pillow cannot write these): every pixel ``colour`` * 257."""
    row = b"\x00" + struct.pack(">HHH", *(c * 257 for c in colour)) * size
    return png_chunks(size, size, 16, 2, row * size)


def grey16_bands() -> Image.Image:
    """16-bit greyscale, three vertical bands: 65535 | 32768 | 0."""
    a = np.zeros((SIZE, SIZE), dtype=np.uint16)
    a[:, : SIZE // 3], a[:, SIZE // 3: 2 * SIZE // 3] = 65535, 32768
    return Image.fromarray(a)


def halves(left: tuple[int, int, int], right: tuple[int, int, int], w: int = 40, h: int = 20) -> Image.Image:
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:, : w // 2], a[:, w // 2:] = left, right
    return Image.fromarray(a, "RGB")


def rgba_half_transparent() -> Image.Image:
    """Left half opaque red; right half green but fully transparent (must come out white)."""
    a = np.zeros((SIZE, SIZE, 4), dtype=np.uint8)
    a[:, : SIZE // 2] = (*RED, 255)
    a[:, SIZE // 2:] = (*GREEN, 0)
    return Image.fromarray(a, "RGBA")


def with_exif_orientation(img: Image.Image, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif)


def _top_red_bottom_blue(a: np.ndarray) -> bool:
    """Orientation 6 turns a 40x20 red|blue photo into 20x40 with red on top, blue below."""
    h, w, _ = a.shape
    top, bottom = a[: h // 2 - 2].reshape(-1, 3).mean(0), a[h // 2 + 2:].reshape(-1, 3).mean(0)
    return (w, h) == (20, 40) and top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def _right_red_left_blue(a: np.ndarray) -> bool:
    """Orientation 3 (180 degrees) swaps the halves of a red|blue photo and keeps its size."""
    h, w, _ = a.shape
    left, right = a[:, : w // 2 - 2].reshape(-1, 3).mean(0), a[:, w // 2 + 2:].reshape(-1, 3).mean(0)
    return (w, h) == (40, 20) and left[2] > 150 > left[0] and right[0] > 150 > right[2]


def _grey_bands(a: np.ndarray) -> bool:
    third = SIZE // 3
    means = [a[:, i * third + 2:(i + 1) * third - 2].mean() for i in range(3)]
    same = bool(np.all(a[..., 0] == a[..., 1]) and np.all(a[..., 1] == a[..., 2]))
    return same and means[0] > 250 and 120 <= means[1] <= 135 and means[2] < 5


def _red_then_white(a: np.ndarray) -> bool:
    left, right = a[:, : SIZE // 2 - 1].reshape(-1, 3).mean(0), a[:, SIZE // 2 + 1:].reshape(-1, 3).mean(0)
    return bool(np.allclose(left, RED, atol=2) and np.all(right > 250))


def _grey_only(a: np.ndarray) -> bool:
    return bool(np.all(a[..., 0] == a[..., 1]) and np.all(a[..., 1] == a[..., 2])) and mean_close(GREY)(a)


def _animated_gif() -> bytes:
    frames = [textured(BLUE, 30), textured(RED, 31)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


Entry = tuple[bytes, Case]  # what to write, and where (case.path) with what outcome


def read(path: str, data: bytes, check: Callable[[np.ndarray], bool]) -> Entry:
    return data, Case(path, "read", check=check)


def skip(path: str, data: bytes, reason: str) -> Entry:
    return data, Case(path, "skip", reason)


def hidden(path: str, data: bytes) -> Entry:
    return data, Case(path, "hidden")


BAD_EXIF = b"Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x00" * 8  # IFD offset far past the end


def _readable(seed: int) -> list[Entry]:
    tex = textured
    return [
        read("quartz/plain.jpg", encode(tex(RED, seed + 1), "JPEG", quality=95), mean_close(RED)),
        read("quartz/jpeg named.png", encode(tex(GREEN, seed + 2), "JPEG", quality=95), mean_close(GREEN)),
        read("quartz/webp_named.jpg", encode(tex(BLUE, seed + 3), "WEBP", lossless=True), mean_close(BLUE)),
        read("quartz/no_extension", encode(tex(RED, seed + 4), "PNG"), mean_close(RED)),
        read("quartz/animated.gif", _animated_gif(), mean_close(BLUE)),
        read("quartz/lossy.webp", encode(tex(GREEN, seed + 5), "WEBP", quality=90), mean_close(GREEN)),
        read("quartz/bitmap.bmp", encode(tex(BLUE, seed + 6), "BMP"), mean_close(BLUE)),
        read("quartz/scan.tiff", encode(tex(RED, seed + 7), "TIFF", compression="tiff_lzw"), mean_close(RED)),
        read("quartz/cmyk.jpg", encode(tex(RED, seed + 8).convert("CMYK"), "JPEG", quality=95),
             mean_close(RED)),
        read("quartz/grey16.png", encode(grey16_bands(), "PNG"), _grey_bands),
        read("quartz/rgb16.png", rgb16_png(GREEN), mean_close(GREEN, 1)),
        read("quartz/greyscale.png", encode(tex(GREY, seed + 9).convert("L"), "PNG"), _grey_only),
        read("quartz/palette.png", encode(tex(BLUE, seed + 10).convert("P", palette=Image.Palette.ADAPTIVE),
                                          "PNG"), mean_close(BLUE)),
        read("quartz/rgba.png", encode(rgba_half_transparent(), "PNG"), _red_then_white),
        read("quartz/exif_rot6.jpg", with_exif_orientation(halves(RED, BLUE), "JPEG", 6),
             _top_red_bottom_blue),
        read("quartz/exif_rot3.png", with_exif_orientation(halves(RED, BLUE), "PNG", 3),
             _right_red_left_blue),
        read("quartz/corrupt_exif.jpg", encode(tex(GREEN, seed + 11), "JPEG", exif=BAD_EXIF),
             mean_close(GREEN)),
        read("quartz/tiny_1x1.png", encode(Image.new("RGB", (1, 1), RED), "PNG"),
             lambda a: a.shape == (1, 1, 3) and tuple(a[0, 0]) == RED),
        read("quartz/2023/field trip/nested.png", encode(tex(GREY, seed + 12), "PNG"), mean_close(GREY)),
    ]


def _unreadable(seed: int) -> list[Entry]:
    jpeg = encode(textured(RED, seed + 20, (64, 64)), "JPEG", quality=95)
    png = encode(textured(RED, seed + 21, (64, 64)), "PNG")
    return [
        skip("quartz/zero_bytes.jpg", b"", "empty file"),
        skip("quartz/truncated.jpg", jpeg[: len(jpeg) // 2], "truncated"),
        skip("quartz/truncated.png", png[: len(png) // 2], "truncated"),
        skip("quartz/notes.jpg", b"field notes: found near the river\n" * 20, "not an image"),
        skip("quartz/Thumbs.db", os.urandom(512), "not an image"),
        skip("quartz/bomb.png", bomb_png(), "decompression bomb"),
        skip("quartz/bomb_mild.png", bomb_png(9_000, 9_000), "decompression bomb"),
        skip("README.txt", b"photos of minerals\n", "not inside a class folder"),
    ]


def _hidden() -> list[Entry]:
    return [
        hidden("quartz/.DS_Store", b"\x00\x00\x00\x01Bud1" + os.urandom(64)),
        hidden("quartz/._plain.jpg", os.urandom(128)),
        hidden(".DS_Store", os.urandom(32)),
        hidden("quartz/.thumbnails/t.png", encode(textured(RED, 99), "PNG")),
    ]


def _other_classes(seed: int) -> list[Entry]:
    out = [read(f"pyrite/p{i}.png", encode(textured(colour, seed + 40 + i), "PNG"), mean_close(colour))
           for i, colour in enumerate((GREEN, BLUE, RED))]
    for i, fname in enumerate(("ünï cödé 石英.png", "with space.jpg", "émoji ✨.png")):
        fmt = "JPEG" if fname.endswith(".jpg") else "PNG"
        out.append(read(f"rose quartz/{fname}", encode(textured(RED, seed + 50 + i), fmt, quality=95),
                        mean_close(RED)))
    return out


def write_bad_dataset(root: Path, single_class: bool = True, seed: int = 0) -> list[Case]:
    """Write every case under ``root`` (classes quartz, pyrite, "rose quartz", empty[, single])."""
    entries = _readable(seed) + _unreadable(seed) + _hidden() + _other_classes(seed)
    if single_class:
        entries.append(read("single/only.png", encode(textured(GREEN, seed + 60), "PNG"), mean_close(GREEN)))
    for data, case in entries:
        (root / case.path).parent.mkdir(parents=True, exist_ok=True)
        (root / case.path).write_bytes(data)
    (root / "empty").mkdir()
    (root / "only junk").mkdir()
    (root / "only junk" / "junk.jpg").write_bytes(b"not a photo")
    os.symlink(root / "quartz" / "gone.jpg", root / "quartz" / "broken link.jpg")
    os.mkfifo(root / "quartz" / "pipe.jpg")  # opening it for reading would block forever
    raw_name = os.fsencode(root / "quartz") + b"/caf\xe9 latin1.png"  # not valid UTF-8
    with open(raw_name, "wb") as fh:
        fh.write(encode(textured(BLUE, seed + 70), "PNG"))
    return [case for _, case in entries] + [
        Case("empty/", "skip", "no readable images"),
        Case("only junk/junk.jpg", "skip", "not an image"),
        Case("only junk/", "skip", "no readable images"),
        Case("quartz/caf\ufffd latin1.png", "skip", "not valid UTF-8"),
        Case("quartz/broken link.jpg", "skip", "No such file"),
        Case("quartz/pipe.jpg", "skip", "not a regular file"),
    ]
