"""Heat-map overlays: a Grad-CAM map (``zoo.evaluate.explain``) drawn over the photo it explains,
and the PNGs that ``zoo predict --explain`` writes.

The map is coloured with matplotlib's ``turbo`` colour map (blue: no evidence, red: the most)
and blended half-and-half with the photo; the parts the model never saw (outside the centre
crop of its eval view) are darkened instead.
"""
from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

from zoo.data.cache import decode_array
from zoo.data.imaging import load_image, read_photo
from zoo.errors import ZooError
from zoo.evaluate.predictor import ModelPredictor
from zoo.fileio import atomic_path

ALPHA = 0.5        # weight of the colours over the photo
UNSEEN = 0.35      # brightness left to the parts of the photo the model did not see
# zlib level 1 with run-length matching: about half the time of plain level 1 for these overlays,
# at a similar size (Pillow's default, level 6, is 3x slower still).
COMPRESS_LEVEL = 1


@cache
def _palette() -> list[int]:
    rgb = colormaps["turbo"](np.linspace(0, 1, 256))[:, :3]
    return (rgb * 255).round().astype(np.uint8).ravel().tolist()


def overlay(photo: Image.Image, heat: np.ndarray, alpha: float = ALPHA) -> Image.Image:
    """``photo`` (RGB) with the map ``heat`` (any HxW frame of the same photo, values in [0, 1],
    NaN where the model did not look) stretched over it in colour, at the photo's size."""
    seen = ~np.isnan(heat)
    level = Image.fromarray(np.where(seen, heat, 0).astype(np.float32))
    level = level.resize(photo.size, Image.Resampling.BILINEAR)
    colours = Image.fromarray(np.clip(np.asarray(level) * 255 + 0.5, 0, 255).astype(np.uint8))
    colours.putpalette(_palette())
    blended = Image.blend(photo, colours.convert("RGB"), alpha)
    if seen.all():
        return blended
    mask = Image.fromarray(seen.astype(np.uint8) * 255).resize(photo.size, Image.Resampling.NEAREST)
    return Image.composite(blended, photo.point(lambda v: int(v * UNSEEN)), mask)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=COMPRESS_LEVEL, compress_type=zlib.Z_RLE)
    return buf.getvalue()


def data_url(image: Image.Image) -> str:
    """``image`` as a ``data:image/png;base64,...`` URL (what the serve API returns)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def explained_photo(predictor: ModelPredictor, source: str | Path | bytes, target: int,
                    photo: Image.Image | None = None) -> Image.Image:
    """Class ``target``'s map of the photo ``source``, over ``photo`` (a resized copy of it;
    default: the photo itself at its own size, EXIF-oriented)."""
    heat = predictor.heatmaps([decode_array(source, predictor.decode_side)], [target])[0]
    return overlay(load_image(source) if photo is None else photo, heat)


def heatmap_path(folder: Path, photo: Path, sha256: str) -> Path:
    """Where the heat map of ``photo`` goes: ``<folder>/<photo stem>-<first 8 hex of its sha256>.png``
    (photos of the same name in different folders get different files)."""
    return folder / f"{photo.stem}-{sha256[:8]}.png"


def write_heatmaps(predictor: ModelPredictor, files: list[Path], sha256: list[str], targets: list[int],
                   folder: Path, progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write the overlay of class ``targets[i]`` on ``files[i]`` at the photo's size into
    ``folder`` (see ``heatmap_path``); never over one of ``files``. Returns the paths."""
    photos = {f.resolve() for f in files}
    written = []
    for i, (photo, sha, target) in enumerate(zip(files, sha256, targets)):
        path = heatmap_path(folder, photo, sha)
        if path.resolve() in photos:
            raise ZooError(f"The heat map of {photo} would overwrite the photo {path}: choose another "
                           "folder with --explain-dir.")
        image = explained_photo(predictor, read_photo(photo), target)
        with atomic_path(path) as tmp:
            tmp.write_bytes(png_bytes(image))
        written.append(path)
        if progress:
            progress(i + 1, len(files))
    return written
