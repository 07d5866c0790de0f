"""One factory for every model: the zoo's registered architectures and any timm name, each with
timm's head API (``forward_features``, ``forward_head(pre_logits=...)``, ``get_classifier``,
``reset_classifier``) and its preprocessing (``pretrained_cfg``), so transforms travel with the
weights. Pretrained weights are loaded by ``zoo.models.weights``.
"""
from __future__ import annotations

import difflib

import timm
import torch
import torch.nn as nn

from zoo.data.preprocessing import Preprocessing
from zoo.errors import ZooError, clip, short
from zoo.models.registry import is_zoo_model, model_fn, zoo_model_names

# model.kwargs that the zoo sets itself, or that would load files or change what a model is: a
# recipe or a meta.json can never pass them (``checkpoint_path`` would reach torch.load).
FORBIDDEN_KWARGS = {
    "num_classes": "the number of classes comes from the dataset",
    "pretrained": "use model.pretrained",
    "checkpoint_path": "use model.weights or --weights (safetensors only)",
    "pretrained_cfg": "the pretrained configuration comes with the model name",
    "pretrained_cfg_overlay": "the pretrained configuration comes with the model name",
    "pretrained_strict": "weights are checked by the zoo", "cache_dir": "weights come from ZOO_WEIGHTS_DIR or --weights",
    "features_only": "the zoo trains classifiers", "out_indices": "the zoo trains classifiers",
    "feature_cfg": "the zoo trains classifiers", "feature_cls": "the zoo trains classifiers",
    "in_chans": "photos are always RGB", "scriptable": "set by zoo export", "exportable": "set by zoo export",
}
MAX_KWARG_ITEMS = 64
Scalar = (bool, int, float, str, type(None))


def check_model_name(name: str) -> None:
    """Unknown names fail with the closest known names."""
    if is_zoo_model(name) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, zoo_model_names() + timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ZooError(f"Unknown model '{name}'.{hint} `zoo models` lists the zoo's models; any "
                   "timm model name works too (`zoo models --all`).")


def check_model_kwargs(kwargs: dict) -> None:
    """Refuse model.kwargs the zoo sets itself or that load files, and values that are not plain
    numbers, strings, booleans or short lists of them."""
    for key, value in kwargs.items():
        if key in FORBIDDEN_KWARGS:
            raise ZooError(f"model.kwargs may not set '{key}': {FORBIDDEN_KWARGS[key]}.")
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) > MAX_KWARG_ITEMS or not all(isinstance(v, Scalar) for v in items) or any(
                isinstance(v, str) and len(v) > 200 for v in items):
            raise ZooError(f"model.kwargs.{clip(str(key))} = {short(value)}: a model argument must be a "
                           f"number, a string, true/false or a list of at most {MAX_KWARG_ITEMS} of them.")


def build_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """A randomly initialised model."""
    check_model_name(name)
    check_model_kwargs(kwargs)
    try:
        if is_zoo_model(name):
            return model_fn(name)(num_classes=num_classes, **kwargs)
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError, MemoryError) as exc:
        raise ZooError(f"Model '{name}' cannot be built with model.kwargs {short(kwargs)}: "
                       f"{type(exc).__name__}: {str(exc)[:300]}") from exc


def state_shapes(name: str, num_classes: int, **kwargs) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a model's state dict, from a model built on the meta device: no
    memory is allocated, so an absurd architecture costs nothing to inspect."""
    with torch.device("meta"):
        model = build_model(name, num_classes, **kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def preprocessing_of(model: nn.Module, image_size: int | None = None) -> Preprocessing:
    cfg = timm.data.resolve_data_config({}, model=model)
    return Preprocessing(image_size or int(cfg["input_size"][-1]), tuple(cfg["mean"]),
                         tuple(cfg["std"]), cfg.get("interpolation", "bicubic"),
                         float(cfg.get("crop_pct", 0.875)))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
