"""Per-image transforms: resize, albumentations and MONAI augmentation, normalization."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from monai.utils import convert_to_tensor

NORMALIZATIONS = ("imagenet", "dataset", "half")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return ``image`` as (H, W, channels) uint8: gray replicated to RGB, RGB averaged to gray."""
    if image.ndim == 2:
        image = image[:, :, None]
    have = image.shape[2]
    if have == channels:
        return image
    if channels == 3 and have == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 1 and have >= 3:
        gray = image[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)[:, :, None]
    if channels == 3 and have == 4:
        return image[:, :, :3]
    raise ValueError(f"cannot turn an image with {have} channels into data.channels={channels}")


def normalization_stats(
    kind: str, channels: int, images: np.ndarray | None = None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units for ``data.normalization``."""
    if kind == "imagenet":
        if channels == 3:
            return IMAGENET_MEAN, IMAGENET_STD
        return (float(np.mean(IMAGENET_MEAN)),) * channels, (
            float(np.mean(IMAGENET_STD)),
        ) * channels
    if kind == "half":
        return (0.5,) * channels, (0.5,) * channels
    if kind == "dataset":
        if images is None:
            raise ValueError("data.normalization=dataset needs the training images")
        pixels = images.reshape(-1, channels).astype(np.float64) / 255.0
        std = np.maximum(pixels.std(0), 1e-6)
        return tuple(pixels.mean(0).tolist()), tuple(std.tolist())
    raise ValueError(
        f"data.normalization={kind!r} is not valid; choose one of {list(NORMALIZATIONS)}"
    )


class ImageTransform:
    """uint8 (H, W, C) image -> normalized float tensor (C, size, size).

    Order: resize, albumentations ops (on uint8 HWC), scale to [0, 1] CHW, MONAI ops, normalize.
    """

    def __init__(
        self,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        albumentations: Sequence = (),
        monai: Sequence = (),
        seed: int | None = None,
    ):
        self.spatial = A.Compose([A.Resize(image_size, image_size), *albumentations], seed=seed)
        self.monai = list(monai)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.reseed(seed)

    @property
    def is_identity_augmentation(self) -> bool:
        """True when only resizing and normalization are applied."""
        return len(self.spatial.transforms) == 1 and not self.monai

    def reseed(self, seed: int | None) -> None:
        """Seed every random op (called once per worker and run, for reproducibility)."""
        if seed is None:
            return
        self.spatial.set_random_seed(seed)
        for i, op in enumerate(self.monai):
            if hasattr(op, "set_random_state"):
                op.set_random_state(seed=(seed + i) % 2**32)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        out = self.spatial(image=image)["image"]
        if out.ndim == 2:
            out = out[:, :, None]
        x = torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).float().div_(255.0)
        for op in self.monai:
            x = op(x)
        if (
            self.monai
        ):  # MONAI returns MetaTensors; plain tensors collate and train without overhead
            x = convert_to_tensor(x, dtype=torch.float32, track_meta=False)
        return (x - self.mean) / self.std
