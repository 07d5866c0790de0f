"""Random in-memory photo splits for the ``Trainer`` unit tests."""
from __future__ import annotations

import numpy as np

from zoo.train.batches import SplitArrays


def random_split(n: int, side: int, seed: int, classes: int = 3) -> SplitArrays:
    """``n`` random uint8 photos (``side`` x ``side + 5``), labels cycling through ``classes``."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (side, side + 5, 3), dtype=np.uint8) for _ in range(n)]
    return SplitArrays([f"img{i}.png" for i in range(n)], arrays, np.arange(n) % classes)
