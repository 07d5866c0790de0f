"""One registry, one factory: the zoo's own models plus every timm model, with one head API.

Like timm's ``@register_model`` / ``create_model``: a new architecture is one decorated function
(see ``zoo/models/custom_cnn.py``). Every model exposes ``forward_features``,
``forward_head(x, pre_logits=...)``, ``get_classifier`` and ``reset_classifier``, and carries
its preprocessing (``pretrained_cfg``), so transforms travel with the weights.
"""
from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from typing import Callable

import timm
import torch.nn as nn

from zoo.errors import ZooError

_ZOO_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make ``fn(num_classes=..., **kwargs)`` buildable by name."""
    _ZOO_MODELS[fn.__name__] = fn
    return fn


@dataclass(frozen=True)
class Preprocessing:
    """What the weights expect: eval resize = image_size / crop_pct, centre crop, normalise."""

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


def zoo_model_names() -> list[str]:
    _load_builtin_models()
    return sorted(_ZOO_MODELS)


def is_zoo_model(name: str) -> bool:
    return name in zoo_model_names()


def check_model_name(name: str) -> None:
    """Unknown names fail with the closest known names."""
    if is_zoo_model(name) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, zoo_model_names() + timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"Unknown model '{name}'.{hint} `zoo models` lists the zoo's models; any "
                   "timm model name works too (`zoo models --all`).")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A randomly initialised model (pretrained weights are loaded by ``zoo.weights``)."""
    check_model_name(name)
    try:
        if is_zoo_model(name):
            return _ZOO_MODELS[name](num_classes=num_classes, **kwargs)
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise ZooError(f"Model '{name}' does not accept these model.kwargs: {kwargs} ({exc})") from exc


def preprocessing_of(model: nn.Module, image_size: int | None = None) -> Preprocessing:
    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocessing(image_size or int(cfg["input_size"][-1]), tuple(cfg["mean"]),
                         tuple(cfg["std"]), cfg.get("interpolation", "bicubic"),
                         float(cfg.get("crop_pct", 0.875)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _load_builtin_models() -> None:
    import zoo.models  # noqa: F401  (fills the registry)
