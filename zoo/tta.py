"""Test-time augmentation: a few deterministic views of each photo whose probabilities are averaged.

Views are built from the model's own eval preprocessing, so every member of an ensemble gets views
at its own image size. Minerals have no up or down, so flips and a quarter turn are label-safe;
the wide view sees the whole shorter side instead of the central ``crop_pct`` of it.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from zoo.imaging import resize_short_side
from zoo.registry import Preprocessing
from zoo.transforms import center_crop, eval_array

TTA_VIEWS = ("identity", "hflip", "vflip", "rot90", "wide")


def wide_view(array: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """Shorter side resized to ``image_size`` (no margin cropped away), then centre-cropped."""
    small = np.asarray(resize_short_side(Image.fromarray(array), pre.image_size))
    return center_crop(small, pre.image_size)


def tta_views(array: np.ndarray, pre: Preprocessing) -> list[np.ndarray]:
    """The views of one decoded photo, in ``TTA_VIEWS`` order, each ``image_size`` square."""
    base = eval_array(array, pre)
    return [base, base[:, ::-1], base[::-1], np.rot90(base), wide_view(array, pre)]
