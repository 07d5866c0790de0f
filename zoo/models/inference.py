"""Batched inference on decoded photos, shared by training, evaluation, prediction and export."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array, to_tensor


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the classifier (timm's ``forward_head(pre_logits=True)``)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


@torch.inference_mode()
def predict_logits(model: nn.Module, arrays: list[np.ndarray], pre: Preprocessing,
                   batch_size: int = 32, channels_last: bool = True) -> torch.Tensor:
    """Logits for decoded photos, with the eval transform (resize, centre crop)."""
    model.eval()
    out = []
    for start in range(0, len(arrays), batch_size):
        views = [eval_array(a, pre) for a in arrays[start:start + batch_size]]
        out.append(model(to_tensor(views, pre, channels_last)).float())
    return torch.cat(out) if out else torch.empty(0)
