"""Test-time augmentation views: flips, rescaling and crops of a normalised image batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from medsweep.evaluation.inference import View

FLIPS = {"horizontal": -1, "vertical": -2}


def _flip(dim: int):
    return lambda x: torch.flip(x, dims=[dim])


def _scale(factor: float):
    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    return fn


def _crop(which: int, fraction: float):
    def fn(x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        crop = [max(1, round(s * fraction)) for s in size]
        part = TF.five_crop(x, crop)[which]
        return F.interpolate(part, size=tuple(size), mode="bilinear", align_corners=False)

    return fn


def tta_views(
    flips: Sequence[str] = ("horizontal",),
    scales: Sequence[float] = (),
    crop_fraction: float | None = None,
    identity: bool = True,
) -> list[View]:
    """The identity, then each flip, each scale factor and (with ``crop_fraction``) the five crops
    (corners and centre) resized back to the input size."""
    views: list[View] = [("identity", lambda x: x)] if identity else []
    for flip in flips:
        if flip not in FLIPS:
            raise ValueError(f"eval.tta.flips: {flip!r}; choose from {', '.join(FLIPS)}")
        views.append((f"flip_{flip}", _flip(FLIPS[flip])))
    for factor in scales:
        if factor <= 0:
            raise ValueError(f"eval.tta.scales: {factor}; scale factors are positive")
        if factor != 1:
            views.append((f"scale_{factor:g}", _scale(float(factor))))
    if crop_fraction:
        if not 0 < crop_fraction < 1:
            raise ValueError(f"eval.tta.crop_fraction={crop_fraction}; choose a value in (0, 1)")
        names = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")
        views += [(f"crop_{n}", _crop(i, crop_fraction)) for i, n in enumerate(names)]
    return views
