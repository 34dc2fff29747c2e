"""Small baseline backbones: a 3-block CNN and an MLP on flattened pixels."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks, then global average pooling; ``num_features`` outputs."""

    def __init__(self, in_chans: int = 1, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        blocks, width = [], in_chans
        for w in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(width, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            width = w
        self.stages = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.num_features = width

    def forward(self, x):
        return self.pool(self.stages(x))


class PixelMLP(nn.Module):
    """Flattened pixels through Dense + ReLU + Dropout layers; ``num_features`` outputs."""

    def __init__(
        self,
        in_chans: int = 1,
        image_size: int = 32,
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.2,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_chans * image_size * image_size
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        self.stages = nn.Sequential(*layers)
        self.num_features = width

    def forward(self, x):
        return self.stages(x)
