"""Train augmentation (albumentations, from the recipe) and the eval transform (from the
model's preprocessing). Both work on cached uint8 arrays whose shorter side is
``Preprocessing.resize_side``; normalisation happens on whole batches in torch."""
from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check at import

import albumentations as A  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from zoo.data.imaging import short_side_array  # noqa: E402
from zoo.data.preprocessing import Preprocessing  # noqa: E402
from zoo.errors import ZooError, clip, short  # noqa: E402

_SIZED = {"RandomResizedCrop", "RandomCrop", "CenterCrop", "Resize", "RandomSizedCrop"}


def _make(name: str, kwargs: dict, size: int) -> A.BasicTransform:
    cls = getattr(A, name, None)
    if not isinstance(cls, type) or not issubclass(cls, A.BasicTransform):
        raise ZooError(f"augment.train: {short(name)} is not an albumentations transform "
                       "(see https://albumentations.ai/docs/ for names, e.g. HorizontalFlip).")
    kwargs = dict(kwargs or {})
    if name == "RandomResizedCrop":
        kwargs.setdefault("size", (size, size))
    elif name in _SIZED:
        kwargs.setdefault("height", size)
        kwargs.setdefault("width", size)
    for key in ("scale", "ratio", "size"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ZooError(f"augment.train: {name}({short(kwargs)}) is invalid: {clip(str(exc), 300)}") from exc


def build_train_transform(steps: list[dict], size: int, seed: int) -> A.Compose:
    """``steps`` is the recipe's ``augment.train`` list of ``{TransformName: {kwargs}}``."""
    transforms = []
    for step in steps:
        if not isinstance(step, dict) or len(step) != 1:
            raise ZooError(f"augment.train: each step must be one '{{Name: {{args}}}}' mapping, got {short(step)}")
        (name, kwargs), = step.items()
        transforms.append(_make(name, kwargs, size))
    if not any(type(t).__name__ in _SIZED for t in transforms):
        transforms.insert(0, A.RandomCrop(size, size))
    return A.Compose(transforms, seed=seed)


def center_crop(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return arr[top:top + size, left:left + size]


def eval_array(img: Image.Image | np.ndarray, pre: Preprocessing) -> np.ndarray:
    """The deterministic eval view: shorter side to ``resize_side``, centre crop ``image_size``."""
    array = np.asarray(img) if isinstance(img, Image.Image) else img
    return center_crop(short_side_array(array, pre.resize_side), pre.image_size)


def to_tensor(arrays: list[np.ndarray], pre: Preprocessing, channels_last: bool = True) -> torch.Tensor:
    """Stack uint8 HWC arrays into a normalised float NCHW batch."""
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    batch = (batch - mean) / std
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch.contiguous()
