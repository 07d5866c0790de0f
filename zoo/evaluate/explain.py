"""Grad-CAM heat maps: where in a photo the evidence for a class lies (Selvaraju et al., 2017).

The map is taken on the last convolutional feature map, the output of ``forward_features``
(timm models and custom_cnn alike). The features are computed without autograd and only the
head (global pooling, linear layer) runs with gradients, down to the features: a map costs
about one forward pass, needs no hooks and writes no parameter gradients. For the zoo's heads
(global average pooling, then a linear layer) Grad-CAM equals CAM (Zhou et al., 2016).

Maps come in the frame of the decoded photo (shorter side ``decode_side``), scaled to [0, 1],
with NaN where the model did not look: outside the centre crop of its eval view.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.data.imaging import short_side_size
from zoo.data.preprocessing import Preprocessing
from zoo.data.transforms import eval_array, to_tensor
from zoo.errors import ZooError
from zoo.models.runtime import Runtime

CPU = Runtime()


@torch.inference_mode(False)
def grad_cam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
             runtime: Runtime = CPU) -> torch.Tensor:
    """Grad-CAM of class ``targets[i]`` for each input ``x[i]``: (N, h, w) on the CPU at the
    feature map's resolution, each map scaled to a maximum of 1 (all zeros when nothing speaks
    for the class). The model stays in eval mode and its parameters get no gradients."""
    model.eval()
    with torch.no_grad(), runtime.autocast():
        features = model.forward_features(runtime.move(x))
    if features.ndim != 4 or features.shape[1] != getattr(model, "num_features", features.shape[1]):
        raise ZooError(f"Cannot explain {type(model).__name__}: Grad-CAM needs a convolutional "
                       f"feature map (N, C, H, W) from forward_features, got {tuple(features.shape)}. "
                       "Explanations work for CNNs (custom_cnn, EfficientNet, MobileNet, ResNet...).")
    features = features.float().requires_grad_()
    with torch.enable_grad(), runtime.autocast():
        scores = model.forward_head(features).float()
    chosen = scores.gather(1, runtime.move(targets.long().clone()).view(-1, 1)).sum()  # a normal tensor
    grads, = torch.autograd.grad(chosen, features)
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * features).sum(1)).detach()
    return (cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)).cpu()


def crop_box(shape: tuple[int, int], pre: Preprocessing) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) in a photo of ``shape`` (H, W) of the centre crop that the
    eval view (``eval_array``) shows the model."""
    h, w = shape
    w_r, h_r = short_side_size((w, h), pre.resize_side)
    top, left = (h_r - pre.image_size) // 2, (w_r - pre.image_size) // 2
    sy, sx = h / h_r, w / w_r
    return (round(top * sy), round(left * sx), round((top + pre.image_size) * sy),
            round((left + pre.image_size) * sx))


def model_heatmaps(model: nn.Module, pre: Preprocessing, arrays: list[np.ndarray], targets: list[int],
                   runtime: Runtime = CPU) -> list[np.ndarray]:
    """Grad-CAM of class ``targets[i]`` on decoded photo ``arrays[i]`` (uint8 HxWx3), each an
    HxW float32 map in [0, 1], NaN outside the model's centre crop."""
    if not arrays:
        return []
    x = to_tensor([eval_array(a, pre) for a in arrays], pre)
    cams = grad_cam(model, x, torch.tensor(targets), runtime)
    maps = []
    for array, cam in zip(arrays, cams):
        top, left, bottom, right = crop_box(array.shape[:2], pre)
        heat = np.full(array.shape[:2], np.nan, np.float32)
        heat[top:bottom, left:right] = F.interpolate(cam[None, None], size=(bottom - top, right - left),
                                                     mode="bilinear", align_corners=False)[0, 0].numpy()
        maps.append(heat)
    return maps


def weighted_heatmaps(members: list[list[np.ndarray]], weights: np.ndarray) -> list[np.ndarray]:
    """Per photo, the ``weights``-weighted mean of the members' maps (``members[m][i]``: member
    m's map of photo i) over the members that looked at each pixel; NaN where none did."""
    combined = []
    for maps in zip(*members):
        stack = np.stack(maps)
        w = np.asarray(weights, np.float32)[:, None, None] * ~np.isnan(stack)
        total = w.sum(0)
        mean = (np.nan_to_num(stack) * w).sum(0) / np.where(total > 0, total, 1)
        combined.append(np.where(total > 0, mean, np.nan).astype(np.float32))
    return combined
