"""Batched inference on decoded photos, shared by training, evaluation, prediction and export.

Every function takes the ``Runtime`` to run on (its device and autocast); the model must
already be on that device. Results come back as float32 (logits on the CPU)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array, to_tensor
from zoo.models.runtime import Runtime

CPU = Runtime()


def pooled_features(model: nn.Module, x: torch.Tensor, runtime: Runtime = CPU) -> torch.Tensor:
    """The input of the classifier (timm's ``forward_head(pre_logits=True)``), on the device."""
    with runtime.autocast():
        return model.forward_head(model.forward_features(runtime.move(x)), pre_logits=True).float()


def view_logits(model: nn.Module, views: list[np.ndarray], pre: Preprocessing, runtime: Runtime = CPU,
                channels_last: bool = True) -> torch.Tensor:
    """Logits (on the CPU) of views already cropped to the model's input size."""
    with runtime.autocast():
        return model(runtime.move(to_tensor(views, pre, channels_last))).float().cpu()


def view_outputs(model: nn.Module, views: list[np.ndarray], pre: Preprocessing, runtime: Runtime = CPU,
                 channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and pooled features (both on the CPU) of views already cropped to the model's input
    size, from one pass: the logits are those of ``model(x)`` (timm's forward = forward_head of
    forward_features), the features the classifier's input."""
    with runtime.autocast():
        fmap = model.forward_features(runtime.move(to_tensor(views, pre, channels_last)))
        logits = model.forward_head(fmap)
        feats = model.forward_head(fmap, pre_logits=True)
    return logits.float().cpu(), feats.float().flatten(1).cpu()


@torch.inference_mode()
def predict_outputs(model: nn.Module, arrays: list[np.ndarray], pre: Preprocessing,
                    batch_size: int = 32, channels_last: bool = True,
                    runtime: Runtime = CPU) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and pooled features (N, D) of decoded photos, with the eval transform."""
    model.eval()
    out = [view_outputs(model, [eval_array(a, pre) for a in arrays[start:start + batch_size]], pre,
                        runtime, channels_last)
           for start in range(0, len(arrays), batch_size)]
    if not out:
        return torch.empty(0), torch.empty(0)
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


@torch.inference_mode()
def predict_logits(model: nn.Module, arrays: list[np.ndarray], pre: Preprocessing,
                   batch_size: int = 32, channels_last: bool = True,
                   runtime: Runtime = CPU) -> torch.Tensor:
    """Logits for decoded photos, with the eval transform (resize, centre crop)."""
    model.eval()
    out = [view_logits(model, [eval_array(a, pre) for a in arrays[start:start + batch_size]], pre,
                       runtime, channels_last)
           for start in range(0, len(arrays), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
