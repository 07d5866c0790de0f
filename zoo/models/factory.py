"""One factory for every model: the zoo's registered architectures and any timm name, each with
timm's head API (``forward_features``, ``forward_head(pre_logits=...)``, ``get_classifier``,
``reset_classifier``) and its preprocessing (``pretrained_cfg``), so transforms travel with the
weights. Pretrained weights are loaded by ``zoo.models.weights``.
"""
from __future__ import annotations

import difflib

import timm
import torch.nn as nn

from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError
from zoo.models.registry import is_zoo_model, model_fn, zoo_model_names


def check_model_name(name: str) -> None:
    """Unknown names fail with the closest known names."""
    if is_zoo_model(name) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, zoo_model_names() + timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"Unknown model '{name}'.{hint} `zoo models` lists the zoo's models; any "
                   "timm model name works too (`zoo models --all`).")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A randomly initialised model."""
    check_model_name(name)
    try:
        if is_zoo_model(name):
            return model_fn(name)(num_classes=num_classes, **kwargs)
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
