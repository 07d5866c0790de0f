"""What a model's weights expect of a photo (size, resize, crop, normalisation); stored in runs."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Preprocessing:
    """Eval resize = image_size / crop_pct (short side), centre crop, normalise."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875

    @property
    def resize_side(self) -> int:
        return int(round(self.image_size / self.crop_pct))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(int(d["image_size"]), tuple(d["mean"]), tuple(d["std"]), d.get("interpolation",
                   "bicubic"), float(d.get("crop_pct", 0.875)))
