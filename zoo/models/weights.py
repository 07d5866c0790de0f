"""Pretrained weights: explicit file -> ZOO_WEIGHTS_DIR -> timm/Hugging Face hub -> clear error.

Never silently falls back to random initialisation.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import timm
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from zoo.errors import WeightsNotFoundError, ZooError
from zoo.models.factory import build_model, check_model_kwargs
from zoo.models.registry import is_zoo_model

HUB_HOST = ("huggingface.co", 443)


def weights_dir() -> Path | None:
    value = os.environ.get("ZOO_WEIGHTS_DIR")
    return Path(value).expanduser() if value else None


def local_weights(name: str, explicit: str | Path | None = None) -> Path | None:
    """The weights file for ``name`` from an explicit path (file or folder) or ZOO_WEIGHTS_DIR."""
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / f"{name}.safetensors"
        if not path.is_file():
            raise ZooError(f"Weights file not found: {path} (from --weights / model.weights). "
                           f"Give a .safetensors file or a folder containing {name}.safetensors.")
        return path
    folder = weights_dir()
    if folder and (folder / f"{name}.safetensors").is_file():
        return folder / f"{name}.safetensors"
    return None


def hub_cached(name: str) -> bool:
    """Whether timm's hub weights for ``name`` are already in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg else None
    if not hub_id:
        return False
    return any(isinstance(try_to_load_from_cache(hub_id, f), str)
               for f in ("model.safetensors", "pytorch_model.bin"))


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def availability(name: str) -> str:
    """How pretrained weights for ``name`` would be found here (for `zoo models`)."""
    if is_zoo_model(name):
        return "trained from scratch"
    if local_weights(name):
        return f"local file ({weights_dir()})"
    if hub_cached(name):
        return "hub cache"
    return "hub (online only)" if timm.get_pretrained_cfg(name) else "none"


def _missing_message(name: str, reason: str) -> str:
    return (f"No pretrained weights for '{name}' ({reason}). Supply them in one of three ways:\n"
            f"  1. --weights PATH (a .safetensors file, or a folder with {name}.safetensors)\n"
            f"  2. ZOO_WEIGHTS_DIR=FOLDER containing {name}.safetensors\n"
            f"  3. go online: timm downloads them from the Hugging Face hub and caches them\n"
            f"Or train from random initialisation on purpose: --set model.pretrained=false")


Shapes = dict[str, tuple[int, ...]]


def state_mismatch(expected: Shapes, found: Shapes, shown: int = 3) -> str | None:
    """How the tensors ``found`` in a file differ from those a model ``expected`` (names and
    shapes), summarised: counts and the first few names; None when they match."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [f"{k} {list(found[k])} instead of {list(expected[k])}"
                for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    parts = [f"{len(names)} {what} (e.g. {', '.join(names[:shown])})" for what, names in (
        ("missing", missing), ("unexpected", unexpected), ("with another shape", reshaped)) if names]
    return "; ".join(parts) or None


def load_state_into(model: nn.Module, path: Path) -> None:
    """Load a safetensors state dict; the classifier may differ (a new head is trained)."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ZooError(f"Cannot read weights {path}: {exc}. Only .safetensors files are "
                       "accepted (never pickled checkpoints).") from exc
    head = _classifier_prefix(model)
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith(head)}
    problem = state_mismatch(own, {k: tuple(v.shape) for k, v in state.items()})
    if problem:
        raise ZooError(f"Weights {path} do not fit model {type(model).__name__}: {problem}. Is it "
                       "the file for another architecture?")
    model.load_state_dict(state, strict=False)


def _classifier_prefix(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return (cfg.get("classifier") or "classifier") + "."


def reset_head(model: nn.Module) -> None:
    """Small-normal init for a new head: some timm inits (EfficientNet's uniform(1/sqrt(classes)))
    are scaled for 1000 classes and give huge first logits with a handful of classes."""
    for m in model.get_classifier().modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def create_pretrained(name: str, num_classes: int, weights: str | Path | None = None,
                      **kwargs) -> tuple[nn.Module, str]:
    """A model with pretrained backbone weights and a fresh ``num_classes`` head, and its source."""
    path = local_weights(name, weights)
    if path is not None:
        model = build_model(name, num_classes, **kwargs)
        load_state_into(model, path)
        reset_head(model)
        return model, str(path)
    if is_zoo_model(name):
        raise WeightsNotFoundError(_missing_message(name, "the zoo's own models have no hub weights"))
    if not timm.get_pretrained_cfg(name):
        raise WeightsNotFoundError(_missing_message(name, "timm knows no pretrained weights for it"))
    check_model_kwargs(kwargs)
    if not hub_cached(name) and not hub_reachable():
        raise WeightsNotFoundError(_missing_message(name, "offline, not in ZOO_WEIGHTS_DIR or the hub cache"))
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as exc:  # hub errors come in many types; all mean "not available"
        raise WeightsNotFoundError(_missing_message(name, f"hub download failed: {exc}")) from exc
    reset_head(model)
    return model, "hub"
