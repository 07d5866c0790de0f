"""Decode photos safely: by content (not extension), EXIF-rotated, RGB, bomb-proof."""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from zoo.errors import UnreadableImageError, UnsafeFileError
from zoo.fileio import open_regular

# Largest photo file we agree to read (bytes): far above any camera's JPEG, far below memory.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Largest image we agree to decode (pixels). The biggest real photo seen is 6016 x 6016 (36 MP);
# anything larger than this is refused as a possible decompression bomb before it is decoded.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow refuses at open above 2x this; we refuse above 1x
# Process-wide (``catch_warnings`` is not thread-safe and scans decode in threads): our own size
# check turns the bomb warning into a refusal, and a corrupt EXIF block only costs the rotation.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any mode (palette, alpha, grayscale, 16-bit, CMYK) to 8-bit RGB; transparency on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _exif_transposed(img: Image.Image) -> Image.Image:
    """A copy with the EXIF orientation applied; a damaged EXIF block leaves the pixels as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001  (EXIF parsers raise many types on malformed tags)
        return img.copy()


def _decode(fp: BinaryIO, min_side: int | None) -> Image.Image:
    with Image.open(fp) as img:
        if img.width * img.height > MAX_PIXELS:
            pixels = img.width * img.height
            raise Image.DecompressionBombError(f"{img.width}x{img.height} = {pixels:,} pixels")
        if min_side and img.format == "JPEG":
            scale = min(img.size) / min_side
            if scale >= 2:
                img.draft("RGB", (int(img.width / scale) + 1, int(img.height / scale) + 1))
        img.load()
        return _to_rgb(_exif_transposed(img))


def load_image(source: str | Path | bytes, min_side: int | None = None) -> Image.Image:
    """Open and fully decode an image as RGB with EXIF orientation applied.

    ``min_side`` lets JPEG decoding skip detail we would throw away (Pillow ``draft``): the
    result's shorter side is still at least ``min_side`` when the photo is that large.
    Raises :class:`UnreadableImageError` with a readable reason for anything not decodable.
    """
    name = "upload" if isinstance(source, bytes) else str(source)
    try:
        with io.BytesIO(source) if isinstance(source, bytes) else open_regular(source, MAX_FILE_BYTES) as fp:
            return _decode(fp, min_side)
    except UnreadableImageError:
        raise
    except UnsafeFileError as exc:  # not a regular file, or too large to read
        raise UnreadableImageError(name, exc.reason) from exc
    except FileNotFoundError as exc:
        raise UnreadableImageError(name, "file not found") from exc
    except (IsADirectoryError, PermissionError) as exc:
        raise UnreadableImageError(name, f"cannot read file ({exc.strerror})") from exc
    except Image.DecompressionBombError as exc:
        raise UnreadableImageError(name, f"refused as a possible decompression bomb ({exc}); "
                                         f"the limit is {MAX_PIXELS:,} pixels") from exc
    except UnidentifiedImageError as exc:
        raise UnreadableImageError(name, "not an image Pillow can read") from exc
    except Exception as exc:  # noqa: BLE001  (decoders raise many types on hostile input)
        raise UnreadableImageError(name, f"damaged or truncated image ({exc})") from exc


def resize_short_side(img: Image.Image, side: int) -> Image.Image:
    """Resize so the shorter side equals ``side`` (aspect kept); never upsample tiny images twice."""
    w, h = img.size
    scale = side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0 if scale < 0.5 else None)


def short_side_array(array: np.ndarray, side: int) -> np.ndarray:
    """A decoded HxWx3 photo with its shorter side resized to ``side`` (itself if it already is)."""
    if min(array.shape[:2]) == side:
        return array
    return np.asarray(resize_short_side(Image.fromarray(array), side))
