"""Decode photos safely: by content (not extension), EXIF-rotated, RGB, bomb-proof."""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import UnreadableImageError, UnsafeFileError, ZooError
from zoo.fileio import open_regular, read_bytes

# Largest photo file we agree to read (bytes): far above any camera's JPEG, far below memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Largest image we agree to decode (pixels). The biggest real photo seen is 6016 x 6016 (36 MP);
# anything larger than this is refused as a possible decompression bomb before it is decoded.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow refuses at open above 2x this; we refuse above 1x
# Longest side / shortest side we agree to decode. Resizing the shorter side to the model's size
# multiplies the longer one: a 475-byte 1 x 100,000 PNG would become 146 x 14.6 million pixels.
# The real photos go up to 4.8:1; panoramas stay well under this.
MAX_ASPECT = 20
# Process-wide (``catch_warnings`` is not thread-safe and scans decode in threads): our own size
# check turns the bomb warning into a refusal, and a corrupt EXIF block only costs the rotation.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


class _Refused(Exception):
    """A photo refused from its header, before its pixels are decoded; the message says why."""


def size_problem(width: int, height: int) -> str | None:
    """Why a ``width x height`` image is refused (too many pixels, or too long and thin), or None."""
    if width * height > MAX_PIXELS:
        return (f"refused as a possible decompression bomb ({width}x{height} = "
                f"{width * height:,} pixels); the limit is {MAX_PIXELS:,} pixels")
    if max(width, height) > MAX_ASPECT * min(width, height):
        return (f"refused: {width}x{height} is longer than {MAX_ASPECT}:1, and resizing it to "
                "the model's size would take too much memory; crop it first")
    return None


def _grey8(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit "L", in its own number type (a float64
    copy of a 64-megapixel image would take 512 MB): 16-bit ranges keep their top 8 bits."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or arr.max() > 255:
        arr = arr >> 8 if arr.dtype.kind in "iu" else arr / 256
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (palette, alpha, grayscale, 16-bit, CMYK) to 8-bit RGB; transparency on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _grey8(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):  # pasted through its alpha: no RGBA copies to blend
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        img = Image.new("RGB", rgba.size, (255, 255, 255))
        img.paste(rgba, mask=rgba.getchannel("A"))
    return img.convert("RGB") if img.mode != "RGB" else img


def _exif_transposed(img: Image.Image) -> Image.Image:
    """A copy with the EXIF orientation applied; a damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001  (EXIF parsers raise many types on malformed tags)
        return img.copy()


def _decode(fp: BinaryIO, min_side: int | None) -> Image.Image:
    with Image.open(fp) as img:
        if problem := size_problem(img.width, img.height):
            raise _Refused(problem)
        if min_side and img.format == "JPEG":
            scale = min(img.size) / min_side
            if scale >= 2:
                img.draft("RGB", (int(img.width / scale) + 1, int(img.height / scale) + 1))
        img.load()
        return _to_rgb(_exif_transposed(img))


@contextmanager
def _file_errors(path: str | Path) -> Iterator[None]:
    """Errors opening or reading the photo ``path`` become UnreadableImageError with the reason."""
    try:
        yield
    except UnsafeFileError as exc:  # not a regular file, or too large to read
        raise UnreadableImageError(str(path), exc.reason) from exc
    except FileNotFoundError as exc:
        raise UnreadableImageError(str(path), "file not found") from exc
    except OSError as exc:
        raise UnreadableImageError(str(path), f"cannot read file ({exc.strerror or exc})") from exc


def read_photo(path: str | Path) -> bytes:
    """The bytes of the photo file ``path``: a regular file of 1 to ``MAX_FILE_BYTES`` bytes,
    read without blocking (see ``fileio.read_blocks``); else UnreadableImageError."""
    with _file_errors(path):
        data = read_bytes(path, MAX_FILE_BYTES)
    if not data:
        raise UnreadableImageError(str(path), "empty file (0 bytes)")
    return data


def load_image(source: str | Path | bytes, min_side: int | None = None) -> Image.Image:
    """Open and fully decode an image as RGB with EXIF orientation applied.

    ``min_side`` lets JPEG decoding skip detail we would throw away (Pillow ``draft``): the
    result's shorter side is still at least ``min_side`` when the photo is that large.
    Raises :class:`UnreadableImageError` with a readable reason for anything not decodable,
    including images over ``MAX_PIXELS`` or longer than ``MAX_ASPECT``:1 (refused from the
    header, before decoding).
    """
    if isinstance(source, bytes):
        name, fp = "upload", io.BytesIO(source)
    else:
        with _file_errors(source):
            name, fp = str(source), open_regular(source, MAX_FILE_BYTES)
    try:
        with fp:
            return _decode(fp, min_side)
    except _Refused as exc:
        raise UnreadableImageError(name, str(exc)) from exc
    except Image.DecompressionBombError as exc:  # Pillow's own check, at 2x MAX_PIXELS
        raise UnreadableImageError(name, f"refused as a possible decompression bomb ({exc}); "
                                         f"the limit is {MAX_PIXELS:,} pixels") from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(name, "not an image Pillow can read") from exc
    except Exception as exc:  # noqa: BLE001  (decoders raise many types on hostile input)
        raise UnreadableImageError(name, f"damaged or truncated image ({exc})") from exc


def short_side_size(size: tuple[int, int], side: int) -> tuple[int, int]:
    """``size`` scaled so its shorter side is ``side``; refused (ZooError) when the result is over
    the pixel limit, which only an image longer than ``MAX_ASPECT``:1 or a huge ``side`` gives."""
    w, h = size
    scale = side / min(w, h)
    out = (max(1, round(w * scale)), max(1, round(h * scale)))
    if out[0] * out[1] > MAX_PIXELS:
        raise ZooError(f"Resizing a {w}x{h} image to a shorter side of {side} would give "
                       f"{out[0]}x{out[1]} pixels, over the {MAX_PIXELS:,}-pixel limit.")
    return out


def resize_short_side(img: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side equals ``side`` (aspect kept); never upsample tiny images twice."""
    size = short_side_size(img.size, side)
    scale = side / min(img.size)
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)


def short_side_array(array: np.ndarray, side: int) -> np.ndarray:
    """A decoded HxWx3 photo with its shorter side resized to ``side`` (itself if it already is)."""
    if min(array.shape[:2]) == side:
        return array
    return np.asarray(resize_short_side(Image.fromarray(array), side))
