"""Test-time augmentation: a few deterministic views of each photo whose probabilities are averaged.

Views are built from the model's own eval preprocessing, so every member of an ensemble gets views
at its own image size. Minerals have no up or down, so flips and a quarter turn are label-safe;
the wide view sees the whole shorter side instead of the central ``crop_pct`` of it.
"""
from __future__ import annotations

import numpy as np

from zoo.data.imaging import short_side_array
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import center_crop

TTA_VIEWS = ("identity", "hflip", "vflip", "rot90", "wide")


def tta_views(array: np.ndarray, pre: Preprocessing) -> list[np.ndarray]:
    """The views of one decoded photo, in ``TTA_VIEWS`` order, each ``image_size`` square.

    Every view starts from the photo at ``resize_side`` (as the eval view does), so a full-size
    photo and one already decoded at that side give the same views.
    """
    resized = short_side_array(array, pre.resize_side)
    base = center_crop(resized, pre.image_size)
    wide = center_crop(short_side_array(resized, pre.image_size), pre.image_size)
    return [base, base[:, ::-1], base[::-1], np.rot90(base), wide]
