"""custom_cnn: the project's own compact CNN, trained from scratch.

A strided conv stem, residual conv stages with batch norm (downsampling by max-pooling), global average pooling,
dropout and a linear head. ~1.2 M parameters: small enough to train in minutes on a laptop CPU.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from zoo.models.registry import register_model


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """Two 3x3 conv-bn layers with a residual connection (1x1 projection when widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class CustomCNN(nn.Module):
    """A timm-style classifier: forward_features -> forward_head (global pool, dropout, linear)."""

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256),
                 drop_rate: float = 0.3) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.drop_rate = drop_rate
        # A strided first conv halves the resolution at once: the same 1/2-scale output as two
        # full-resolution convs + max-pool, at a fraction of the CPU time.
        self.stem = nn.Sequential(_conv_bn(3, widths[0] // 2, stride=2),
                                  _conv_bn(widths[0] // 2, widths[0]))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages += [_Block(cin, w)] + ([nn.MaxPool2d(2)] if i < len(widths) - 1 else [])
            cin = w
        self.stages = nn.Sequential(*stages)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.num_features, num_classes)
        self.pretrained_cfg = {"input_size": (3, 128, 128), "mean": (0.485, 0.456, 0.406),
                               "std": (0.229, 0.224, 0.225), "interpolation": "bicubic",
                               "crop_pct": 0.875, "num_classes": num_classes}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups in timm's format (stem, then each stage) for partial fine-tuning."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x).flatten(1)
        return x if pre_logits else self.classifier(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def custom_cnn(num_classes: int = 7, **kwargs) -> CustomCNN:
    return CustomCNN(num_classes=num_classes, **kwargs)
