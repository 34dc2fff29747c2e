"""Backbone + head classifiers from timm or the small baselines."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import timm
import torch
from torch import nn

from medsweep.models.baselines import PixelMLP, SmallCNN
from medsweep.models.heads import build_head
from medsweep.models.weights import resolve_weights


class Classifier(nn.Module):
    """A feature backbone (``num_features`` pooled outputs) followed by a head."""

    def __init__(self, backbone: nn.Module, head: nn.Module, name: str):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def check_timm_name(name: str) -> None:
    """Fail with close matches when ``name`` is not a timm architecture."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
    raise ValueError(
        f"model.name={name!r} is not a timm model; close matches: {close or 'none'}. "
        "See timm.list_models() for all names, or use model=small_cnn / model=mlp"
    )


def timm_classifier(
    name: str,
    num_classes: int,
    in_chans: int = 3,
    pretrained: bool = False,
    weights: str | None = None,
    head: str = "linear",
    head_hidden: Sequence[int] = (512, 256),
    head_dropout: float = 0.0,
    drop_rate: float = 0.0,
    drop_path_rate: float | None = None,
    **timm_kwargs,
) -> Classifier:
    """Any timm backbone (pooled features, ``num_classes=0``) with a linear or MLP head.

    ``pretrained`` loads hub weights, or ``weights`` (a file, or ``packaged``) when given.
    """
    check_timm_name(name)
    kwargs = dict(timm_kwargs)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    file = resolve_weights(name, weights) if pretrained else None
    if file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": file}
    backbone = timm.create_model(
        name, pretrained=pretrained, num_classes=0, in_chans=in_chans, drop_rate=drop_rate, **kwargs
    )
    return Classifier(
        backbone,
        build_head(head, backbone.num_features, num_classes, head_hidden, head_dropout),
        name,
    )


def small_cnn(
    num_classes: int,
    in_chans: int = 1,
    widths: Sequence[int] = (32, 64, 128),
    head: str = "linear",
    head_hidden: Sequence[int] = (512, 256),
    head_dropout: float = 0.0,
) -> Classifier:
    """The 3-block CNN baseline."""
    backbone = SmallCNN(in_chans, widths)
    return Classifier(
        backbone,
        build_head(head, backbone.num_features, num_classes, head_hidden, head_dropout),
        "small_cnn",
    )


def pixel_mlp(
    num_classes: int,
    in_chans: int = 1,
    image_size: int = 32,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.2,
    head: str = "linear",
    head_hidden: Sequence[int] = (512, 256),
    head_dropout: float = 0.0,
) -> Classifier:
    """The MLP baseline on flattened pixels."""
    backbone = PixelMLP(in_chans, image_size, hidden, dropout)
    return Classifier(
        backbone,
        build_head(head, backbone.num_features, num_classes, head_hidden, head_dropout),
        "mlp",
    )
